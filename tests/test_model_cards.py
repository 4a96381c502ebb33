"""Every shipped model's card facts are data (registry.json "card_data", ``medsr.models.ModelCard``), and the
data, the Markdown card and the training logs say the same: steps, seconds, hardware, command, warm start,
logs folder and the validation figures, so none of them can drift from the others."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medsr.models import REGISTRY, ModelCard, ModelRef, find_by_sha256

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(REGISTRY)


def card_text(entry) -> str:
    """The Markdown card as plain words: no emphasis or code marks, whitespace collapsed."""
    text = entry.path.with_name(entry.card).read_text()
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", ""))


def states(text: str, number: float, kind: str) -> bool:
    """Whether the card prints ``number`` as it formats that kind: dB with 2 decimals (gains signed), SSIM as
    written (trailing zeros allowed)."""
    shown = {"db": f"{number:.2f}", "gain": f"{number:+.2f}", "ssim": repr(number)}[kind]
    return re.search(r"(?<![\d.])" + re.escape(shown) + (r"0*" if kind == "ssim" else "") + r"(?!\d)", text) is not None


KINDS = {"psnr_fg": "db", "bicubic_psnr_fg": "db", "gain_psnr_fg": "gain", "ssim": "ssim", "bicubic_ssim": "ssim"}


def card_data(name: str) -> ModelCard:
    card = REGISTRY[name].card_data
    assert isinstance(card, ModelCard), f"{name}: its registry.json entry has no card_data (CONTRIBUTING.md)"
    return card


def phase(entry) -> str:
    return "srgan" if entry.kind == "perceptual" else "srresnet"  # pipelines/train.py's phase names


@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_model_names_its_card_facts_as_data(name):
    card = card_data(name)
    assert card.summary.strip() and "\n" not in card.summary
    assert card.training_data and all(s.strip() for s in card.training_data)
    assert card.command.strip() and card.validation and card.training
    for run in card.training:
        assert isinstance(run.steps, int) and run.steps > 0, f"{name}: every card states its steps"
        assert run.hardware.strip()
        assert run.log is None or (ROOT / run.log).is_file(), run.log
    assert card.steps == sum(r.steps for r in card.training)
    if card.logs is not None:
        assert card.logs.startswith("docs/training") and (ROOT / card.logs).is_dir(), card.logs
    headline = card.validation[0]
    assert headline.psnr_fg is not None or headline.gain_psnr_fg is not None


@pytest.mark.parametrize("name", MODELS)
def test_the_markdown_card_states_what_its_data_says(name):
    entry = REGISTRY[name]
    card, text = card_data(name), card_text(entry)
    for source in card.training_data:
        assert source in text, f"{name}: training source {source!r} not named in the card"
    for run in card.training:
        assert f"{run.steps:,} steps in {run.seconds:,g} s" in text, f"{name}: {run.steps:,} steps in {run.seconds:,g} s"
        assert run.hardware in text, f"{name}: hardware {run.hardware!r}"
    assert card.command in text, f"{name}: command {card.command!r}"
    if card.warm_start is not None:
        assert card.warm_start.name in text
    if card.logs is not None:
        assert card.logs in text, f"{name}: logs folder {card.logs!r} not named in the card"
    for m in card.validation:
        if m.source == "card":
            for field, kind in KINDS.items():
                value = getattr(m, field)
                assert value is None or states(text, value, kind), f"{name}: {field} {value} not in the card ({m.data})"
    headline = card.validation[0]  # whatever its source, the card prints its headline figure
    assert any(states(text, getattr(headline, f), KINDS[f]) for f in ("gain_psnr_fg", "psnr_fg")
               if getattr(headline, f) is not None), f"{name}: headline figure not in the card"


@pytest.mark.parametrize("name", MODELS)
def test_the_data_agrees_with_the_training_logs(name):
    """Each run's eval.json (written by pipelines/train.py) records the same steps and seconds; the last run's
    records the shipped weights' sha256; figures taken from a log are that log's, rounded as stored."""
    entry, card = REGISTRY[name], card_data(name)
    for run in card.training:
        if run.log is None:
            continue
        logged = json.loads((ROOT / run.log).read_text())["training"]["phases"][phase(entry)]
        assert logged["steps"] == run.steps
        assert run.seconds is None or abs(logged["seconds"] - run.seconds) < 1
    last = card.training[-1].log
    if last is not None:
        assert json.loads((ROOT / last).read_text())["weights_sha256"][phase(entry) + ".safetensors"] == entry.sha256
    for m in card.validation:
        if m.source == "card":
            continue
        assert card.logs and m.source.startswith(card.logs + "/"), m.source
        logged = json.loads((ROOT / m.source).read_text())["methods"]
        ours, bicubic = logged[m.method], logged["bicubic"]
        expect = {"psnr_fg": (ours["psnr_fg"], 2), "bicubic_psnr_fg": (bicubic["psnr_fg"], 2),
                  "gain_psnr_fg": (ours["gain_psnr_fg_vs_bicubic"], 2), "ssim": (ours["ssim"], 4),
                  "bicubic_ssim": (bicubic["ssim"], 4)}
        for field, (value, digits) in expect.items():
            stored = getattr(m, field)
            assert stored is None or stored == round(value, digits), f"{name}: {field} {stored} vs log {value}"


@pytest.mark.parametrize("name", MODELS)
def test_a_warm_start_names_shipped_weights_by_name_and_sha256(name):
    warm = card_data(name).warm_start
    if warm is None:  # trained from scratch (its first run's log records no init weights)
        log = card_data(name).training[0].log
        assert log is None or json.loads((ROOT / log).read_text())["config"]["init_weights"] is None
        return
    start = find_by_sha256(warm.sha256)
    assert start is not None and start.name == warm.name and start.name != name


def test_models_json_and_the_audit_report_show_the_card_data(capsys):
    from medsr.cli import main as cli_main
    from medsr.flow.report import _model_card_summary

    assert cli_main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert set(rows) == set(REGISTRY)
    for name, entry in REGISTRY.items():
        assert rows[name]["card_data"] == (entry.card_data.to_dict() if entry.card_data else None)
        assert rows[name]["card_data"] is None or ModelCard.from_dict(rows[name]["card_data"]) == entry.card_data
    v1 = REGISTRY["medsr-srresnet-x4-v1"]
    # an archive written with v1's weights under the default's old name gets v1's card, found by sha256
    assert _model_card_summary(ModelRef("medsr-srresnet-x4", v1.sha256)) == \
        f"medsr-srresnet-x4-v1 (fidelity): {v1.card_data.summary}"
    assert _model_card_summary(ModelRef("weights.safetensors", "0" * 64)) == ""
    assert _model_card_summary(None) == ""


def test_models_plain_text_shows_each_card_summary_and_headline_figures(capsys):
    """``medsr models`` (no --json) says what each model is for and how it measured: its card's one-line summary
    and its headline validation figures (``PretrainedModel.metrics``, the card's first measurement) under it;
    ``--json`` carries the same figures as ``metrics``."""
    import json

    from medsr.cli import main as cli_main

    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    assert cli_main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    for name, entry in REGISTRY.items():
        assert name in out
        if entry.card_data is not None:
            assert entry.card_data.summary in out
            first = entry.card_data.validation[0]
            assert entry.metrics == rows[name]["metrics"] == first.to_dict()
            shown = f"{first.psnr_fg:.2f} dB" if first.psnr_fg is not None else f"{first.gain_psnr_fg:+.2f} dB"
            assert f"validation: fg PSNR {shown}" in out or f"validation: {shown}" in out


@pytest.mark.parametrize("change, problem", [
    ({"summary": ""}, "summary"),
    ({"training": [{"steps": 0, "seconds": 1, "hardware": "cpu"}]}, "steps"),
    ({"training": [{"steps": 1.5, "seconds": 1, "hardware": "cpu"}]}, "steps"),
    ({"validation": [{"data": "x", "source": "card", "ssim": 0.9}]}, "psnr_fg or gain_psnr_fg"),
    ({"validation": [{"data": "x", "source": "docs/training/eval.json", "psnr_fg": 30.0}]}, "method"),
    ({"training_data": []}, "training_data"),
])
def test_malformed_card_data_is_a_clear_model_error(change, problem):
    import medsr

    data = {**REGISTRY["medsr-srresnet-x4"].card_data.to_dict(), **change}
    with pytest.raises(medsr.ModelError, match=problem):
        ModelCard.from_dict(data)
