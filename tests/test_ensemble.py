"""Geometric self-ensemble: exact symmetries, recorded in the archive, the restore matches the audit."""
from __future__ import annotations

import json
import shutil

import pydicom
import pytest
import torch

import medsr
from archive_edit import edit_meta
from medsr.cli import ENSEMBLE_SIZES, main as cli_main
from medsr.errors import MedsrError
from medsr.models import DEFAULT_MODEL, REGISTRY, SRResNet, SRResNetConfig, create_model
from medsr.models.ensemble import MEMBERS, SIZES, SelfEnsemble, _forward, _inverse, check_ensemble, with_ensemble


def test_every_member_is_exactly_undone_on_a_non_square_batch():
    x = torch.arange(2 * 1 * 3 * 5, dtype=torch.float32).reshape(2, 1, 3, 5)
    for n, members in MEMBERS.items():
        assert len(members) == n and len(set(members)) == n
        for k, flip in members:
            torch.testing.assert_close(_inverse(_forward(x, k, flip), k, flip), x, rtol=0, atol=0)


def test_ensemble_of_an_equivariant_net_is_the_net_and_of_a_real_net_is_the_mean_of_its_passes():
    ident = torch.nn.Identity()
    x = torch.rand(3, 1, 6, 10)
    for n in MEMBERS:
        torch.testing.assert_close(with_ensemble(ident, n)(x), x)
    torch.manual_seed(0)
    net = SRResNet(SRResNetConfig(blocks=2, channels=8)).eval()
    with torch.no_grad():
        y = SelfEnsemble(net, 2)(x)
        by_hand = (net(x) + torch.flip(net(torch.flip(x, (3,))), (3,))) / 2
        assert y.shape == (3, 1, 24, 40)
        torch.testing.assert_close(y, by_hand)
    assert with_ensemble(net, 1) is net
    with pytest.raises(MedsrError, match="1, 2, 4, 8"):
        check_ensemble(3)


def test_the_registry_says_how_each_shipped_model_restores_by_default():
    for entry in REGISTRY.values():
        assert entry.ensemble in MEMBERS
        loaded = create_model(entry.name)
        assert loaded.ensemble == entry.ensemble
        assert isinstance(loaded.module, SelfEnsemble) == (entry.ensemble > 1)
    assert create_model(DEFAULT_MODEL, ensemble=1).ensemble == 1


def test_archive_records_the_ensemble_and_restore_reproduces_the_audit(fixture_path, tmp_path):
    src = fixture_path("basic")
    arc = tmp_path / "e.medsr.h5"
    res = medsr.archive_series(src, arc, medsr.ArchiveOptions(method="model", ensemble=2, baselines=False))
    assert res.info.model_ensemble == 2 and medsr.open_archive(arc).model_ensemble == 2
    assert res.audit["provenance"]["ensemble"] == 2
    out = medsr.restore_archive(arc, tmp_path / "r", reference=src)
    assert out.ensemble == 2 and not out.warnings
    # the restore written to disk is the one the archive audited
    assert out.audit["methods"]["restored"]["psnr"] == pytest.approx(res.audit["methods"]["restored"]["psnr"], abs=1e-9)
    files = sorted((tmp_path / "r").glob("*.dcm"))
    assert "mirrored/rotated passes" in pydicom.dcmread(files[0]).DerivationDescription
    # another size is allowed, but the user is told the stored audit no longer applies
    other = medsr.restore_archive(arc, tmp_path / "r1", medsr.RestoreOptions(ensemble=1))
    assert other.ensemble == 1 and any("self-ensemble" in w for w in other.warnings)


def test_archives_written_before_the_attribute_restore_with_one_pass(fixture_path, tmp_path):
    src = fixture_path("basic")
    arc = tmp_path / "old.medsr.h5"
    medsr.archive_series(src, arc, medsr.ArchiveOptions(method="model", ensemble=1, baselines=False))
    legacy = tmp_path / "legacy.medsr.h5"
    shutil.copy(arc, legacy)
    edit_meta(legacy, lambda m: m["attrs"]["model"].pop("ensemble"))  # as written before the attribute existed
    assert medsr.open_archive(legacy).model_ensemble == 1
    assert medsr.restore_archive(legacy, tmp_path / "r").ensemble == 1


def test_cli_ensemble_flag_and_models_listing(fixture_path, tmp_path, capsys):
    arc = tmp_path / "c.medsr.h5"
    assert cli_main(["archive", str(fixture_path("basic")), "-o", str(arc), "--ensemble", "4", "--no-j2k",
                     "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["ensemble"] == 4
    assert cli_main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert {r["name"]: r["ensemble"] for r in rows} == {e.name: e.ensemble for e in REGISTRY.values()}
    assert ENSEMBLE_SIZES == SIZES  # the CLI's torch-free copy of the sizes
    with pytest.raises(SystemExit):  # argparse: only 1, 2, 4, 8
        cli_main(["restore", str(arc), "--ensemble", "3"])


def test_eval_and_rd_measure_the_sizes_they_are_given(fixture_path):
    from medsr.flow.evaluate import evaluate
    from medsr.flow.rd import rate_distortion

    res = evaluate([fixture_path("basic")], [DEFAULT_MODEL], j2k=False, device="cpu", ensembles=[1, 2])
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["bicubic", DEFAULT_MODEL, f"{DEFAULT_MODEL} (self-ensemble x2)"]
    one, two = res["rows"][1], res["rows"][2]
    assert one["psnr"] != two["psnr"]  # two different restores were measured
    for n in (1, 2):
        rd = rate_distortion(fixture_path("basic"), nears=(), lossy=(), lossy_fractions=(), floors=(),
                             with_j2k=False, ensemble=n)
        assert [r["ensemble"] for r in rd["modes"]] == [n]
