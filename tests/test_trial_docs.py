"""The trial tables under docs/training/ print what their runs' eval.json files say (no figure typed by hand)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training"
ROW = re.compile(r"^\| [^|]*\(`(?P<run>[\w./-]+)`\) \| [^|]* \| (?P<mean>[\d.]+) \((?P<gain>[+-][\d.]+)\) \| "
                 r"(?P<ssim>[\d.]+) \|(?P<rest>.*)$")


def rows(readme: Path):
    for line in readme.read_text().splitlines():
        m = ROW.match(line)
        if m:
            yield m


@pytest.mark.parametrize("trials", ["recipe-trials", "arch-trials"])
def test_a_trial_table_prints_its_runs_eval_json(trials):
    readme = DOCS / trials / "README.md"
    found = list(rows(readme))
    assert len(found) >= 4, f"{readme}: expected a row per run"
    for m in found:
        run = m["run"]
        # a run's folder beside the README (`mse/`), or a repository path to an eval.json
        path = DOCS.parent.parent / run if run.endswith("eval.json") else DOCS / trials / run / "eval.json"
        ev = json.loads(path.read_text())
        method = ev["methods"]["srresnet+dc"]
        places = len(m["mean"].split(".")[1])
        assert float(m["mean"]) == round(method["psnr_fg"], places), run
        assert float(m["gain"]) == round(method["gain_psnr_fg_vs_bicubic"], places), run
        assert float(m["ssim"]) == round(method["ssim"], 4), run
        per_source = [round(v["srresnet+dc"]["psnr_fg"], 2) for v in ev["per_source"].values()]
        per_source += [round(v["srresnet+dc"]["psnr_fg"], 2) for v in ev.get("extra_sources_not_anatomy", {}).values()]
        printed = [float(x) for x in m["rest"].strip(" |").split(" | ")]
        assert printed == per_source, run


def test_the_slice_level_jpeg2000_table_prints_its_eval_json():
    """docs/training/x2-j2k-slice/: every row (per source and the mean) is what the two eval.json files say."""
    folder = DOCS / "x2-j2k-slice"
    base = json.loads((folder / "baseline-x2-v2-eval.json").read_text())
    tuned = json.loads((folder / "eval.json").read_text())
    row = re.compile(r"^\| .*\(`(?P<key>[\w-]+)`\) \| (?P<b>[\d.]+) \| (?P<v2>[\d.]+) \| (?P<ft>[\d.]+) \| "
                     r"(?P<s2>[\d.]+) \| (?P<sft>[\d.]+) \|$")
    found = [m for m in map(row.match, (folder / "README.md").read_text().splitlines()) if m]
    assert [m["key"] for m in found] == [*base["per_source"], "all"]
    for m in found:
        a, t = ((base["per_source"][m["key"]], tuned["per_source"][m["key"]]) if m["key"] != "all"
                else (base["methods"], tuned["methods"]))
        assert (float(m["b"]), float(m["v2"]), float(m["ft"])) == (
            round(a["bicubic"]["psnr_fg"], 2), round(a["srresnet"]["psnr_fg"], 2), round(t["srresnet"]["psnr_fg"], 2))
        assert (float(m["s2"]), float(m["sft"])) == (round(a["srresnet"]["ssim"], 4), round(t["srresnet"]["ssim"], 4))


def test_the_mixed_base_tables_print_their_eval_json():
    """docs/training/x2-mixed/: the JPEG 2000 table then the JPEG-LS table, every row (per source and the mean)
    what the eval.json files say: the shipped v2's (measured before, the same protocol), the mixed fine-tune's and
    the JPEG 2000-only ablation's, each on that base."""
    folder = DOCS / "x2-mixed"
    files = {"j2k": ("../x2-j2k-slice/baseline-x2-v2-eval.json", "eval.json", "j2k512/eval.json"),
             "jpegls": ("../x2-lossy-v2/eval.json", "eval-jpegls.json", "j2k512/eval-jpegls.json")}
    row = re.compile(r"^\| .*\(`(?P<key>[\w-]+)`\) \| (?P<b>[\d.]+) \| (?P<v2>[\d.]+) \| (?P<mx>[\d.]+) \| "
                     r"(?P<ab>[\d.]+) \| (?P<s2>[\d.]+) \| (?P<smx>[\d.]+) \| (?P<sab>[\d.]+) \|$")
    found = [m for m in map(row.match, (folder / "README.md").read_text().splitlines()) if m]
    evals = {base: [json.loads((folder / f).read_text()) for f in names] for base, names in files.items()}
    keys = [*evals["j2k"][0]["per_source"], "all"]
    assert [m["key"] for m in found] == keys * 2
    for base, rows in zip(files, (found[:len(keys)], found[len(keys):])):
        for m in rows:
            v2, mx, ab = (e["per_source"][m["key"]] if m["key"] != "all" else e["methods"] for e in evals[base])
            assert float(m["b"]) == round(v2["bicubic"]["psnr_fg"], 2), (base, m["key"])
            assert [float(m[k]) for k in ("v2", "mx", "ab")] == [round(e["srresnet"]["psnr_fg"], 2) for e in (v2, mx, ab)]
            assert [float(m[k]) for k in ("s2", "smx", "sab")] == [round(e["srresnet"]["ssim"], 4) for e in (v2, mx, ab)]
