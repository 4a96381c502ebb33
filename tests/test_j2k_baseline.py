"""JPEG 2000 at the same number of bytes, found with about one encode per slice (and the bytes say how close)."""
import numpy as np
import pytest

import medsr
from medsr.audit import jpeg2000_at_ratio, jpeg2000_baseline


def _with_empty_slices(stored: np.ndarray) -> np.ndarray:
    """Half the slices blank (background-only slices at the ends of a head series): they code far under budget."""
    out = stored.copy()
    out[: len(out) // 2] = 0
    return out


@pytest.mark.parametrize("target", [20.0, 60.0, 150.0])
def test_bytes_meet_the_target_in_few_encodes(fixture_path, target):
    s = medsr.read_series(fixture_path("large_256"))
    for stack in (s.pixels, _with_empty_slices(s.pixels)):
        b = jpeg2000_baseline(stack, s.bits_stored, target)
        assert abs(b.nbytes / b.target_bytes - 1) <= 0.02, (target, b.provenance())
        assert b.slice_encodes <= 2 * stack.shape[0], b.provenance()  # not 8 full passes
        assert b.decoded.shape == stack.shape and b.decoded.dtype == stack.dtype
        p = b.provenance()
        assert p["jpeg2000_bytes"] == b.nbytes and p["jpeg2000_slices"] == stack.shape[0]
        dec, nbytes = jpeg2000_at_ratio(stack, s.bits_stored, target)  # the tuple form: the same codestreams
        assert nbytes == b.nbytes and np.array_equal(dec, b.decoded)


def test_archive_audit_records_jpeg2000_bytes_beside_the_target(fixture_path, tmp_path):
    res = medsr.archive_series(fixture_path("basic"), tmp_path / "a.medsr.h5", medsr.ArchiveOptions(method="bicubic"))
    prov = res.audit["provenance"]
    assert prov["jpeg2000_bytes"] > 0 and prov["jpeg2000_target_bytes"] > 0
    assert abs(prov["jpeg2000_bytes_vs_target"] - 1) <= 0.02
    assert res.audit["ratios"]["jpeg2000_pixel"] == pytest.approx(res.info.original_pixel_bytes / prov["jpeg2000_bytes"])
