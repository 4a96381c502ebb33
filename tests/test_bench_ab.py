"""``pipelines.bench_ab``: two checkouts' bicubic archive ratios, interleaved round by round (README "Speed")."""
import pytest

from pipelines import bench_ab


def test_each_checkout_is_timed_every_round_and_summarised_by_its_median(fixture_path, tmp_path):
    res = bench_ab.ab(bench_ab.REPO, fixture_path("basic"), tmp_path / "runs", rounds=2)
    assert set(res) == {"other", "this"}
    for v in res.values():
        assert len(v["ratios"]) == 2 and all(r > 0 for r in v["ratios"])
        assert min(v["ratios"]) <= v["median"] <= max(v["ratios"])
    # every round archived with each checkout, after its own re-encode
    for r in range(2):
        for name in ("other", "this"):
            assert (tmp_path / "runs" / f"r{r}-{name}" / "a.medsr.h5").is_file()
            assert any((tmp_path / "runs" / f"r{r}-{name}" / "j2k").iterdir())


def test_a_folder_that_is_not_a_medsr_checkout_is_refused(fixture_path, tmp_path):
    with pytest.raises(SystemExit, match="not a medsr checkout"):
        bench_ab.ab(tmp_path, fixture_path("basic"), tmp_path / "runs", rounds=1)
