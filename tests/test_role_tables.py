"""The per-series table pipelines (``python -m pipelines.bench_ratio``, ``pipelines.lossy_crossover``) take
``ROLE=SERIES`` arguments, so no row can be printed without saying what that series was to the models, and
write OUT.json, OUT.md and OUT.png together."""
from __future__ import annotations

import json

import pytest

from pipelines.role_tables import parse_roles


def test_every_series_carries_its_role_and_a_short_name():
    got = parse_roles(["evaluation=/d/pd-brain/", "validation=/d/sub-05_MTS.nii.gz"])
    assert [(r.role, r.name) for r in got] == [("evaluation", "pd-brain"), ("validation", "sub-05_MTS")]
    for bad in ("/d/series", "training=/d/x", "evaluation="):
        with pytest.raises(SystemExit, match="evaluation=PATH or validation=PATH"):
            parse_roles([bad])


def test_the_ratio_table_of_a_fixture_series(fixture_path, tmp_path):
    from pipelines.bench_ratio import main

    out = tmp_path / "t" / "ratio"
    assert main(["--ratios", "100", "--out", str(out), f"validation={fixture_path('basic')}"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    (row,) = data["rows"]
    assert row["role"] == "validation" and row["series"] == "basic" and row["target_ratio"] == 100
    assert row["pixel_ratio"] >= 100 * 0.999  # never over the budget
    assert row["margin_psnr_fg_vs_j2k"] >= -0.005  # never worse than JPEG 2000 (a candidate itself)
    md = out.with_suffix(".md").read_text()
    assert "| basic | validation | 100 |" in md and data["meta"]["command"].startswith("python -m pipelines.bench_ratio")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
