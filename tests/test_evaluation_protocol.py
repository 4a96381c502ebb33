"""docs/evaluation.md in practice: a validation series (watched during training, used to choose)
is never called unseen in the README, the model cards or the docs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "CONTRIBUTING.md", "docs/base-codec.md", "docs/floor.md", "docs/training/eval-unseen.md",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "medsr/models/weights").glob("*.md"))]
#: words that name a validation series of the shipped models (docs/evaluation.md)
VALIDATION_WORDS = ("abdomen", "shoulder", "phantom", "pydicom-data", "MR2_UNCR", "WithOverlays")
#: "unseen" as a name, not as a claim: file names, targets, the fetch module
NAMES = re.compile(r"eval-unseen|test_unseen|fixtures[./]unseen|\.cache/unseen|MEDSR_UNSEEN_DATA|unseen-data")


def _blocks(text: str) -> list[str]:
    """Paragraphs and table rows: the unit a claim lives in."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        rows = [l for l in para.splitlines() if l.startswith("|")]
        out += rows if rows else [para]
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_no_validation_series_is_called_unseen(doc):
    bad = []
    for block in _blocks((REPO / doc).read_text()):
        claim = NAMES.sub("", block)
        if re.search(r"\bunseen\b|never saw", claim, re.I) and any(w.lower() in claim.lower() for w in VALIDATION_WORDS):
            if "validation" not in claim.lower():
                bad.append(block.strip()[:200])
    assert not bad, f"{doc}: a validation series called unseen (docs/evaluation.md):\n" + "\n---\n".join(bad)


def test_the_protocol_names_every_set_of_the_shipped_models():
    from dicom_fixtures.unseen import EVALUATION_SETS, VALIDATION_SETS

    text = (REPO / "docs/evaluation.md").read_text()
    for name in EVALUATION_SETS + VALIDATION_SETS:
        assert name.split("-")[0] in text.lower() or name in text, name
    for source in ("sag-anon", "Colin27", "philips-3t-t1-mprage", "SCD0000501", "unf05", "ProstateX-0218"):
        assert source in text, source
