"""Values in an original header that break their VR's length limit (PS3.5 6.2), found without noise.

Scanners write such values (e.g. a 65-character LO). pydicom reports each one while
decoding, as a Python warning *and* a log line quoting only the length ("The value length
(65) exceeds the maximum length of 64 allowed for VR LO"), which names neither the file
nor the element. medsr keeps every original value exactly as it was (the archive stores
the original header bytes; a restore copies them into the derived instance), so the
reader decodes with pydicom's value validation off (``quiet_values``) and reports each
element once per series, by tag, never by value (``overlong_elements``, ``summarise``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

#: VRs whose length limit counts characters per value; PN has per-component limits (not checked here)
_SKIP_VRS = frozenset({"PN", "SQ"})


@contextlib.contextmanager
def quiet_values() -> Iterator[None]:
    """Decode with pydicom's value validation off (reading and writing); restored afterwards."""
    from pydicom import config

    with config.disable_value_validation():
        yield


def overlong_elements(ds) -> list[tuple[int, str, int, int]]:
    """(tag, VR, longest value length, VR maximum) of every decoded string element (nested too)
    whose value is longer than its VR allows."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import MAX_VALUE_LEN

    found: dict[int, tuple[int, str, int, int]] = {}

    def visit(_ds, elem) -> None:
        vr = str(elem.VR)
        limit = MAX_VALUE_LEN.get(vr, 0)
        if limit <= 0 or vr in _SKIP_VRS or elem.value is None:
            return
        values = elem.value if isinstance(elem.value, (list, tuple, MultiValue)) else [elem.value]
        longest = max((len(v) for v in values if isinstance(v, (str, bytes))), default=0)
        if longest > limit:
            tag = int(elem.tag)
            prev = found.get(tag)
            if prev is None or longest > prev[2]:
                found[tag] = (tag, vr, longest, limit)

    ds.walk(visit)
    return sorted(found.values())


def summarise(per_file: Mapping[Path, Sequence[tuple[int, str, int, int]]]) -> list[str]:
    """One line per over-long element of a series: tag, VR, length, how many files, the first file."""
    from pydicom.datadict import keyword_for_tag

    by_tag: dict[int, list] = {}
    for f, items in per_file.items():
        for tag, vr, n, limit in items:
            entry = by_tag.setdefault(tag, [vr, n, limit, 0, f])
            entry[1] = max(entry[1], n)
            entry[3] += 1
    lines = []
    for tag, (vr, n, limit, count, first) in sorted(by_tag.items()):
        name = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) '{keyword_for_tag(tag) or 'private'}'"
        more = f" (and {count - 1} more file{'s' if count > 2 else ''})" if count > 1 else ""
        lines.append(f"{first}{more}: {name} holds a value of {n} characters, longer than VR {vr} allows ({limit}); "
                     "kept unchanged, as in the original")
    return lines
