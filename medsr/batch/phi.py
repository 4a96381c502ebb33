"""Archive names that never hold a patient's name or ID: a sanitised folder path, or the UID hash alone
when the path contains a name/ID token read from the headers."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def safe_stem(rel: str, max_len: int = 80) -> str:
    """A file-name-safe stem from a relative path: [A-Za-z0-9.-] runs joined by single '_'."""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    s = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts))
    s = re.sub(r"\.{2,}", ".", s).strip("._-")[:max_len].strip("._-")
    return s or "root"


def looks_like_phi(rel: str, tokens: Iterable[str]) -> bool:
    low = rel.lower()
    return any(t and t in low for t in tokens)


def phi_tokens(ds) -> set[str]:
    out: set[str] = set()
    for v in (ds.get("PatientName", ""), ds.get("PatientID", "")):
        for t in re.split(r"[^0-9A-Za-z]+", str(v or "")):
            if len(t) >= 3:
                out.add(t.lower())
    return out
