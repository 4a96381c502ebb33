"""The low-res base codecs: one object per archive ``base`` value, asked by everything that depends on the base."""
import numpy as np
import pydicom
import pytest

import medsr
from medsr.archive import read_archive, write_archive
from medsr.archive.format import KNOWN_BASES as READER_BASES
from medsr.codec import downsample, intensity_window, pad_to_multiple
from medsr.codec.base import (BASE_CODECS, BASES, CODED_BASES, KNOWN_BASES, BaseCodecError, BaseMeta,
                              consistency_tolerance, get_base, prepare_base)
from medsr.codec.rate import j2k_base_to_budget
from medsr.flow.audit import build_audit


def test_every_base_an_archive_may_hold_has_one_codec_object():
    assert set(KNOWN_BASES) == set(BASE_CODECS) == {"lossless", "near-lossless", "lossy", "lossy-j2k"}
    assert READER_BASES == KNOWN_BASES  # the reader accepts exactly the bases medsr can decode
    assert BASES == ("lossless", "near-lossless", "lossy")  # --base offers these; lossy-j2k is --ratio's choice
    assert set(CODED_BASES) == {b for b in KNOWN_BASES if get_base(b).coded} == set(KNOWN_BASES) - {"lossless"}
    for b in KNOWN_BASES:
        c = get_base(b)
        assert c.id == b and (c.tolerance(7) == 7.5) == c.lossy and consistency_tolerance(b, 7) == c.tolerance(7)
        meta = BaseMeta(b, 7)
        assert meta.describe() == c.describe(7) and meta.to_dict().get("base_codec", "") == c.codec_id
        assert ("LOSSY" in c.derivation(7)) == c.lossy and (c.derivation(7) == "") == (not c.coded)
    with pytest.raises(BaseCodecError, match="unknown base 'webp'"):
        get_base("webp")


def test_a_jpeg_ls_base_decodes_through_its_codec_object(sag_anon):
    series = medsr.read_series(sag_anon)
    lowres = downsample(pad_to_multiple(series.pixels[:4], 4)[0], "area4-v1")
    p = prepare_base(lowres, "lossy", 9)
    streams = [p.data[p.offsets[i]:p.offsets[i + 1]].tobytes() for i in range(len(lowres))]
    one = get_base("lossy").decode_slice(streams[1], lowres.shape[1:]) + p.meta.vmin
    assert np.array_equal(np.clip(one, p.meta.vmin, p.meta.vmax), p.decoded[1])
    assert np.abs(p.decoded.astype(np.int64) - lowres).max() <= 9
    with pytest.raises(BaseCodecError):
        get_base("lossless").decode_slice(streams[1], lowres.shape[1:])


def test_a_jpeg2000_base_archive_says_lossy_in_its_dicom_and_its_report(fixture_path, tmp_path):
    """Found on the way to the codec objects: the report warned of a lossy base for ``lossy`` only."""
    series = medsr.read_series(fixture_path("basic"))
    padded, pad = pad_to_multiple(series.pixels, 2)
    lowres = downsample(padded, "area2-v1")
    bb = j2k_base_to_budget(lowres, series.original_pixel_bytes / 60)
    from medsr.flow.audit import bicubic_restore

    rows, cols = series.shape
    bic = bicubic_restore(bb.base.decoded, rows, cols, series.pixels.dtype, series.value_range)
    audit = build_audit(series, lowres=bb.base.decoded, restored=bic, scale=2, operator="area2-v1",
                        stored_pixel_bytes=bb.nbytes, method="bicubic", model_id="bicubic", with_j2k=False,
                        consistency=False, device="cpu", base=bb.base.provenance())
    arc = tmp_path / "j.medsr.h5"
    write_archive(arc, series=series, lowres=bb.base.decoded, window=intensity_window(lowres), operator="area2-v1",
                  scale=2, pad=pad, method="bicubic", model=None, audit=audit, base=bb.base)
    assert read_archive(arc).info.base == "lossy-j2k"
    out = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    ds = pydicom.dcmread(out.files[0], stop_before_pixels=True)
    assert f"LOSSY low-res base (JPEG 2000 of each low-res slice: every low-res value within " \
           f"+-{bb.base.meta.near}" in str(ds.DerivationDescription)
    _, html = medsr.report_for_archive(arc, tmp_path / "report")
    assert "LOSSY BASE, PREVIEW QUALITY" in html.read_text()
