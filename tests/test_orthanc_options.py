"""`medsr orthanc` options without a running Orthanc: `env`, `--aet`, `--wait-timeout` (the
launcher's dry run writes the config Orthanc and the plugin read)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from medsr.errors import InputError
from medsr.cli.orthanc import main as orthanc_main
from medsr.pacs import launcher
from medsr.pacs.service import ServiceConfig


def _fakes(tmp_path, version=sys.version_info[:2]):
    plugin = tmp_path / "libOrthancPython.so"
    plugin.write_bytes(b"\x7fELF fake\x00" + f"libpython{version[0]}.{version[1]}.so.1.0".encode() + b"\x00")
    orthanc = tmp_path / "Orthanc"
    orthanc.write_text("#!/bin/sh\nexit 0\n")
    orthanc.chmod(0o755)
    return plugin, orthanc


def test_env_prints_what_an_existing_orthanc_needs(tmp_path, capsys):
    plugin, _ = _fakes(tmp_path)
    assert orthanc_main(["env", "--plugin", str(plugin), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["PythonScript"] == str(launcher.plugin_script()) and launcher.plugin_script().is_file()
    assert d["Plugins"] == [str(plugin)] and d["python_match"] is True
    assert d["embedded_python"] == "{}.{}".format(*sys.version_info[:2])
    import medsr

    assert str(os.path.dirname(os.path.dirname(medsr.__file__))) in d["PYTHONPATH"].split(os.pathsep)


def test_env_exits_3_when_the_plugin_embeds_another_python(tmp_path, capsys):
    plugin, _ = _fakes(tmp_path, (sys.version_info[0], sys.version_info[1] - 1))
    assert orthanc_main(["env", "--plugin", str(plugin), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["python_match"] is False


def test_aet_and_wait_timeout_reach_orthanc_and_the_plugin(tmp_path, capsys):
    plugin, orthanc = _fakes(tmp_path)
    root = tmp_path / "root"
    assert orthanc_main(["serve", "--root", str(root), "--aet", "PACS_MEDSR1", "--wait-timeout", "7.5",
                          "--orthanc", str(orthanc), "--plugin", str(plugin), "--dry-run", "--json"]) == 0
    cfg = json.loads((root / "orthanc.json").read_text())
    assert cfg["DicomAet"] == "PACS_MEDSR1"
    assert cfg["Medsr"]["WaitTimeout"] == 7.5
    # the plugin's service reads the same section: a POST waits 7.5 s before answering 202
    assert ServiceConfig.from_orthanc(cfg, cwd=root).wait_timeout == 7.5


@pytest.mark.parametrize("aet", ["", "A" * 17, "BAD\\AET", "tab\there"])
def test_an_invalid_aet_is_refused_before_anything_is_written(tmp_path, aet):
    plugin, orthanc = _fakes(tmp_path)
    with pytest.raises(InputError, match="AE title"):
        launcher.build_config(tmp_path / "root", aet=aet, plugin=plugin)
    assert not (tmp_path / "root" / "orthanc.json").exists()
