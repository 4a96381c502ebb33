"""The package's shape as a user meets it: one installable package, its public API, objects checked once.

The import layers and cycles are checked by ``lint-imports`` and function sizes by ``ruff`` in ``make test``
(docs/architecture.md); these tests check what those tools cannot.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pydicom
import pytest

import medsr
from medsr.errors import MedsrError, ModelError

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "data" / "previous-format"


def _readme_api() -> set[str]:
    text = (REPO / "README.md").read_text()
    m = re.search(r"The whole API, `medsr.__all__`.*?:(.*?)\.\n", text, re.S)
    assert m, "README.md lists the API after 'The whole API, `medsr.__all__`'"
    return set(re.findall(r"`([A-Za-z_]+)`", m.group(1)))


def test_star_import_gives_exactly_the_api_the_readme_lists():
    code = "from medsr import *\nimport medsr\nprint(sorted(n for n in medsr.__all__ if n not in globals()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # every name in __all__ exists
    assert set(medsr.__all__) == _readme_api()


def test_the_api_loads_each_name_from_the_module_that_lint_imports_sees_it_imported_from():
    """medsr.api imports its names lazily (``_EXPORTS``); the ``TYPE_CHECKING`` imports are what lint-imports
    reads. Both must name the same object for every public name."""
    import ast
    import importlib

    import medsr.api as api

    tree = ast.parse((REPO / "medsr" / "api" / "__init__.py").read_text())
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"]
    declared = {a.asname or a.name: ("." * imp.level + imp.module, a.name)
                for imp in block.body if isinstance(imp, ast.ImportFrom) for a in imp.names}
    assert declared == api._EXPORTS
    assert set(api.__all__) == set(api._EXPORTS) >= set(medsr.__all__) - {"__version__"} - set(dir(medsr.errors))
    for name, (module, attr) in api._EXPORTS.items():
        assert getattr(api, name) is getattr(importlib.import_module(module, "medsr.api"), attr), name


def test_the_cli_parser_builds_without_torch():
    """``medsr --help`` (every subcommand's parser, including rd's and jobs' defaults taken from medsr.api)."""
    code = ("import sys\nfrom medsr.cli.main import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'pydicom', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_medsr_installs_alone_and_its_commands_run_from_the_install(tmp_path, fixture_path):
    """``pip install .`` (a wheel, not editable) into a fresh venv: only ``medsr`` at top level, and
    ``medsr --help``, ``archive``, ``restore`` and ``eval`` run from it, outside the repository. The fresh venv
    borrows this venv's third-party packages through PYTHONPATH (no download, no second torch)."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("medsr-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    top = {p.name for p in site.iterdir() if p.name != "__pycache__"}
    assert {n for n in top if not n.endswith(".dist-info")} == {"medsr"}
    assert {n for n in top if n.endswith(".dist-info")} == {wheel.name.split("-py")[0] + ".dist-info"}

    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}  # numpy, torch, pydicom... of this venv
    env.pop("PYTHONHOME", None)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args, timeout=600):
        return subprocess.run([str(venv / "bin" / "medsr"), *args], capture_output=True, text=True, env=env,
                              cwd=work, timeout=timeout)

    where = subprocess.run([str(py), "-c", "import medsr, importlib.util as u; print(medsr.__file__); "
                            "print(u.find_spec('pipelines'), u.find_spec('dicom_fixtures'))"],
                           capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [str(site / "medsr" / "__init__.py"), "None None"]
    h = run("--help")
    assert h.returncode == 0 and "archive" in h.stdout and "eval" in h.stdout, h.stderr
    arc = work / "a.medsr.h5"
    a = run("archive", str(fixture_path("basic")), "-o", str(arc), "--method", "bicubic", "--no-j2k", "--quiet")
    assert a.returncode == 0 and arc.is_file(), a.stderr
    r = run("restore", str(arc), "-o", str(work / "r"), "--quiet")
    assert r.returncode == 0 and len(list((work / "r").glob("*.dcm"))) == 12, r.stderr
    e = run("eval", str(fixture_path("basic")), "-o", str(work / "ev"), "--models", "medsr-srresnet-x4",
            "--ensemble", "1", "--no-j2k", "--device", "cpu")
    assert e.returncode == 0 and (work / "ev" / "eval.json").is_file(), e.stderr[-2000:]


@pytest.mark.parametrize("kw, what", [
    ({"operator": "area3-v9"}, "unknown operator"), ({"method": "magic"}, "unknown method"),
    ({"ensemble": 3}, "self-ensemble size"), ({"base": "webp"}, "unknown base"),
    ({"base": "near-lossless", "base_near": 300}, "NEAR must be"), ({"floor_fallback": "lossless"}, "needs a floor"),
    ({"floor_psnr_fg": -1.0}, "floor-psnr-fg"), ({"device": "tpu"}, "unknown device"),
])
def test_archive_options_check_themselves_when_made(kw, what):
    with pytest.raises(MedsrError, match=what):
        medsr.ArchiveOptions(**kw)


@pytest.mark.parametrize("kw, what", [
    ({"format": "tiff"}, "unknown output format"), ({"precision": "int8"}, "unknown precision"),
    ({"method": "magic"}, "unknown method"), ({"ensemble": 5}, "self-ensemble size"), ({"tile": -1}, "tile"),
])
def test_restore_options_check_themselves_when_made(kw, what):
    with pytest.raises(MedsrError, match=what):
        medsr.RestoreOptions(**kw)


def test_the_orthanc_plugin_answers_400_with_the_options_own_checks(tmp_path):
    from medsr.pacs.errors import BadRequest
    from medsr.pacs.service import MedsrService, ServiceConfig

    svc = MedsrService(access=None, config=ServiceConfig(archive_store=tmp_path / "store"))
    with pytest.raises(BadRequest, match="self-ensemble size"):  # the message of ArchiveOptions(ensemble=3)
        svc._check_storage_options({"ensemble": 3})
    with pytest.raises(BadRequest, match="needs a floor"):
        svc._check_storage_options({"floor_fallback": "lossless"})
    with pytest.raises(BadRequest, match="unknown base"):
        svc._check_storage_options({"base": "jpeg"})
    svc._check_storage_options({"base": "lossy", "floor_psnr_fg": 40.0, "ensemble": 2.0})  # valid: no error


def test_model_ref_is_the_one_model_identity():
    from medsr.models import ModelRef

    ref = ModelRef.from_record("medsr-srresnet-x4@987c76525c06", "987c76525c06" + "0" * 52, 2)
    assert (ref.name, ref.ensemble, ref.id) == ("medsr-srresnet-x4", 2, "medsr-srresnet-x4@987c76525c06")
    info = medsr.open_archive(OLD / "basic-model.medsr.h5")
    assert info.model.name == "medsr-srresnet-x4" and info.model.id == info.model_id
    assert info.model.sha256 == info.model_sha256 and info.model.ensemble == info.model_ensemble == 2
    assert medsr.open_archive(OLD / "basic-bicubic.medsr.h5").model is None


def test_an_archive_records_its_operator_and_its_model_as_one_group_each(fixture_path, tmp_path):
    """Format 3: ``operator`` {id, scale} and ``model`` {name, sha256, ensemble} (null without a model); the
    reader gives the same ``ArchiveInfo`` as for the flat attributes of formats 1 and 2; a malformed group is
    one error."""
    import h5py

    from archive_edit import edit_meta
    from medsr.errors import ArchiveError

    res = medsr.archive_series(fixture_path("basic"), tmp_path / "m.medsr.h5",
                               medsr.ArchiveOptions(method="model", ensemble=2, baselines=False, device="cpu"))
    bic = medsr.archive_series(fixture_path("basic"), tmp_path / "b.medsr.h5",
                               medsr.ArchiveOptions(method="bicubic", baselines=False))
    with h5py.File(res.archive) as f:
        attrs = json.loads(zlib.decompress(f["meta"][()].tobytes()))["attrs"]
        assert int(f.attrs["format_version"]) == 3
    model = medsr.open_archive(res.archive).model
    assert attrs["operator"] == {"id": "area4-v1", "scale": 4} and attrs["method"] == "model"
    assert attrs["model"] == {"name": model.name, "sha256": model.sha256, "ensemble": 2} and len(model.sha256) == 64
    assert not {"scale", "model_id", "model_sha256", "model_ensemble"} & set(attrs)
    info = medsr.open_archive(res.archive)
    assert (info.operator, info.scale, info.model_id, info.model_ensemble) == ("area4-v1", 4, model.id, 2)
    with h5py.File(bic.archive) as f:
        assert json.loads(zlib.decompress(f["meta"][()].tobytes()))["attrs"]["model"] is None
    b = medsr.open_archive(bic.archive)
    assert (b.method, b.model_id, b.model_sha256, b.model) == ("bicubic", "bicubic", "", None)
    edit_meta(bic.archive, lambda m: m["attrs"].update(operator="area4-v1"))  # a flat value where a group belongs
    with pytest.raises(ArchiveError, match="attribute group 'operator' is malformed"):
        medsr.open_archive(bic.archive)


def test_a_model_trained_for_another_operator_is_a_clear_error(fixture_path, tmp_path):
    from medsr.models import SRResNet, SRResNetConfig, save_weights

    tiny = SRResNet(SRResNetConfig(blocks=1, channels=8))
    weights = tmp_path / "gauss.safetensors"
    save_weights(tiny, weights, architecture="srresnet", config=tiny.config.to_dict(), operator="gauss4-v1")
    out = tmp_path / "x.medsr.h5"
    with pytest.raises(ModelError, match="trained for operator gauss4-v1.*area4-v1"):
        medsr.archive_series(fixture_path("basic"), out, medsr.ArchiveOptions(method="model", model=str(weights)))
    assert not out.exists()
    with pytest.raises(ModelError, match="trained for operator gauss4-v1"):  # restoring an area4-v1 archive with it
        medsr.restore_archive(OLD / "basic-bicubic.medsr.h5", tmp_path / "r",
                              medsr.RestoreOptions(method="model", model=str(weights)))
    assert not (tmp_path / "r").exists()


def test_restore_reference_reports_what_ran_not_what_the_archive_recorded(fixture_path, tmp_path):
    res = medsr.restore_archive(OLD / "basic-model.medsr.h5", tmp_path / "r",
                                medsr.RestoreOptions(method="bicubic", device="cpu"),
                                reference=fixture_path("basic"))
    prov = res.audit.provenance
    assert (prov["method"], prov["model_id"], prov["ensemble"]) == ("bicubic", "bicubic", 1)
    assert res.audit.flat()["psnr"] == pytest.approx(res.audit.methods["restored"].psnr, abs=1e-4)
    same = medsr.restore_archive(OLD / "basic-model.medsr.h5", tmp_path / "s", medsr.RestoreOptions(device="cpu"),
                                 reference=fixture_path("basic"))
    assert (same.audit.provenance["method"], same.audit.provenance["model_id"]) == ("model", same.model_id)


def test_the_audit_is_a_typed_read_only_value(tmp_path, fixture_path):
    from medsr.audit import Audit

    res = medsr.archive_series(fixture_path("basic"), tmp_path / "a.medsr.h5",
                               medsr.ArchiveOptions(method="bicubic", baselines=False, floor_psnr_fg=30.0))
    audit = res.audit
    assert isinstance(audit, Audit) and isinstance(medsr.open_archive(res.archive).audit, Audit)
    assert audit.methods["restored"].psnr == audit["methods"]["restored"]["psnr"]
    assert set(audit.flat()) == {"psnr", "psnr_fg", "ssim", "ssim_fg", "psnr_bicubic", "psnr_fg_bicubic",
                                 "ssim_bicubic", "ssim_fg_bicubic"}
    assert audit.floor["floor_psnr_fg"] == 30.0 and medsr.open_archive(res.archive).audit.floor == audit.floor
    with pytest.raises(TypeError):
        audit["methods"] = {}
    audit["methods"]["restored"]["psnr"] = -1.0  # a copy: the audit itself does not change
    assert audit.methods["restored"].psnr > 0


def test_contributing_equipment_names_the_model_and_its_weights(tmp_path):
    info = medsr.open_archive(OLD / "basic-model.medsr.h5")
    medsr.restore_archive(OLD / "basic-model.medsr.h5", tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    ds = pydicom.dcmread(next((tmp_path / "r").glob("*.dcm")))
    eq = ds.ContributingEquipmentSequence[-1]
    # the archive was written with the default of its day, whose weights now ship as medsr-srresnet-x4-v2:
    # the restore names the weights that actually ran (found by the archive's sha256)
    assert eq.Manufacturer == "medsr" and eq.ManufacturerModelName == "medsr-srresnet-x4-v2"
    assert info.model_sha256 in eq.ContributionDescription
