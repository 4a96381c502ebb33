"""``python -m pipelines.lossy_crossover``: the lossy-base tier's margin over JPEG 2000 at equal bytes, per
series, and the ratio from which it stays ahead (issue #14's evidence table)."""
from __future__ import annotations

import json
import math

import pytest

import medsr
from pipelines.lossy_crossover import OPERATING_POINT, crossover, main


def test_the_crossing_is_interpolated_in_log_ratio_between_the_last_loss_and_the_next_point():
    c = crossover([(200.0, 1.0), (100.0, -1.0), (50.0, -3.0)])
    assert c["kind"] == "between" and c["ratio"] == pytest.approx(math.sqrt(100 * 200))
    # a win below a later loss does not count: the restore must stay ahead from the crossing up
    c = crossover([(40, 0.2), (80, -0.1), (160, 0.3)])
    assert c["kind"] == "between" and 80 < c["ratio"] < 160
    c = crossover([(80, -0.4), (100, 0.0)])
    assert c["kind"] == "between" and c["ratio"] == pytest.approx(100.0)  # a tie counts as ahead


def test_ahead_everywhere_or_nowhere_says_so_rather_than_inventing_a_ratio():
    assert crossover([(60, 0.5), (120, 1.0)]) == {"ratio": 60.0, "kind": "below"}
    assert crossover([(60, -2.0), (120, 0.5), (240, -0.1)]) == {"ratio": 240.0, "kind": "above"}
    assert crossover([]) == {}
    assert crossover([(100, float("nan"))]) == {}


def test_a_real_series_gives_one_row_per_near_each_equal_to_medsr_rd(fixture_path, tmp_path, capsys):
    src = fixture_path("large_256")
    out = tmp_path / "x" / "crossover"
    assert main([f"validation={src}", "--out", str(out), "--near-fractions", "0.01,0.05", "--method", "bicubic"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    (s,) = data["series"]
    assert s["role"] == "validation" and s["series"] == src.name
    assert {p["mode"] for p in s["points"]} == {"lossy-1%", "lossy-3%", "lossy-5%"}  # the operating point always
    assert s["operating_point"]["mode"] == f"lossy-{OPERATING_POINT * 100:g}%"
    for p in s["points"]:
        assert p["margin_psnr_fg"] == pytest.approx(p["psnr_fg"] - p["j2k_psnr_fg"])
        assert p["j2k_equal_bytes"] and p["j2k_ratio"] == pytest.approx(p["ratio"], rel=0.05)  # at the same bytes
    ratios = sorted(p["ratio"] for p in s["points"])
    assert ratios[0] < ratios[-1]  # a larger NEAR, a higher ratio
    assert s["crossover"] == crossover([(p["ratio"], p["margin_psnr_fg"]) for p in s["points"]])
    # the figures are medsr rd's own (the same code, the same restore)
    rd = medsr.api.rate_distortion(src, method="bicubic", nears=(), lossy=(), floors=(),
                                   lossy_fractions=(0.01, 0.03, 0.05))
    by_mode = {m["mode"]: m for m in rd["modes"]}
    for p in s["points"]:
        assert p["psnr_fg"] == pytest.approx(by_mode[p["mode"]]["psnr_fg"], abs=1e-9)
    md = out.with_suffix(".md").read_text()
    assert src.name in md and "validation" in md and f"{s['operating_point']['margin_psnr_fg']:+.2f}" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_point_jpeg2000_could_not_reach_is_marked_as_such():
    from pipelines.lossy_crossover import markdown, series_rows

    def mode(ratio, j2k_ratio):
        return {"mode": f"lossy-{ratio}", "base": "lossy", "parameter": 9, "model_id": "m", "ensemble": 2,
                "ratio": ratio, "psnr_fg": 30.0, "ssim": 0.9,
                "jpeg2000": {"ratio": j2k_ratio, "psnr_fg": 25.0, "ssim": 0.8}}

    rows = series_rows({"modes": [mode(150, 151), mode(300, 183)]})
    assert [r["j2k_equal_bytes"] for r in rows] == [True, False]
    md = markdown([{"series": "s", "role": "validation", "points": rows, "operating_point": None, "crossover": {}}],
                  {"machine": "m", "seconds": 1, "command": "c"})
    assert "300:1 +5.00 (JPEG 2000 at 183:1)" in md and "150:1 +5.00," in md and "in JPEG 2000's favour" in md


def test_a_series_without_a_role_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="evaluation=PATH or validation=PATH"):
        main(["some/series", "--out", str(tmp_path / "o")])
