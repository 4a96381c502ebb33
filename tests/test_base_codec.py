"""The low-res base: lossless vs near-lossless (JPEG-LS NEAR=k), in the archive and on restore."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

import medsr
from archive_edit import byte_offset, edit_meta
from medsr.codec.base import (
    BASE_LOSSLESS, BASE_NEAR_LOSSLESS, DEFAULT_BASE, DEFAULT_NEAR, BaseCodecError, decode_base, encode_base,
    pack_codestreams, prepare_base, unpack_codestreams,
)
from medsr.archive import read_archive
from medsr.archive.format import open_logical
from medsr.codec import downsample
from medsr.errors import ArchiveError, MedsrError
from medsr.io import read_series


def _phantom(dtype, lo, hi, seed=0, shape=(4, 64, 64)):
    """Smooth structure + noise + hard edges + both extremes of the range."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(x / 5.0) + np.cos(y / 7.0)) * (hi - lo) / 6 + (hi + lo) / 2
    stack = np.stack([base + rng.normal(0, (hi - lo) / 40, (h, w)) + (i * 37 % 11) for i in range(n)])
    stack[:, 10:20, 10:20] = hi
    stack[:, 40:44, 30:60] = lo
    return np.clip(np.rint(stack), lo, hi).astype(dtype)


@pytest.mark.parametrize("near", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype,lo,hi", [("uint16", 0, 4095), ("int16", -2048, 2047), ("uint8", 0, 255)])
def test_jpegls_near_bound_holds_for_every_pixel(near, dtype, lo, hi):
    a = _phantom(dtype, lo, hi, seed=near)
    streams, meta = encode_base(a, BASE_NEAR_LOSSLESS, near)
    assert len(streams) == a.shape[0] and meta.near == near
    d = decode_base(streams, meta)
    assert d.dtype == a.dtype and d.shape == a.shape
    err = np.abs(d.astype(np.int64) - a.astype(np.int64))
    assert err.max() <= near
    assert err.max() > 0  # really lossy (else the test would not test the bound)
    assert d.min() >= a.min() and d.max() <= a.max()  # clipped back into the true range
    # and it is smaller than lossless JPEG-LS of the same data
    lossless = sum(len(s) for s in encode_base(a, BASE_NEAR_LOSSLESS, 1)[0]) if near > 1 else None
    if lossless is not None:
        assert sum(len(s) for s in streams) < lossless


def test_pack_roundtrip_and_constant_and_tiny_slices():
    a = np.zeros((3, 16, 16), np.uint16)
    a[1] = 7
    a[2, ::2] = 1
    p = prepare_base(a, BASE_NEAR_LOSSLESS, 3)
    assert np.abs(p.decoded.astype(int) - a).max() <= 3
    data, off = pack_codestreams(unpack_codestreams(p.data, p.offsets))
    assert np.array_equal(data, p.data) and np.array_equal(off, p.offsets)
    assert np.array_equal(decode_base((p.data, p.offsets), p.meta), p.decoded)
    with pytest.raises(BaseCodecError):
        unpack_codestreams(p.data[:-1], p.offsets)


def test_base_requests_are_validated():
    a = _phantom("uint16", 0, 4095)
    with pytest.raises(BaseCodecError, match="unknown base"):
        prepare_base(a, "jpeg-xl")
    with pytest.raises(BaseCodecError, match="NEAR"):
        prepare_base(a, BASE_NEAR_LOSSLESS, 0)
    f = a.astype(np.float32) / 7
    with pytest.raises(BaseCodecError, match="integer"):
        prepare_base(f, BASE_NEAR_LOSSLESS, 2)
    p = prepare_base(f)  # the default falls back to lossless for data JPEG-LS cannot code, and says why
    assert p.meta.base == BASE_LOSSLESS and p.decoded is f and (DEFAULT_BASE == BASE_LOSSLESS or p.note)
    assert prepare_base(a, BASE_LOSSLESS).decoded is a


@pytest.fixture(scope="module")
def near_archive(fixture_path, tmp_path_factory):
    """large_256 archived with the default model on a near-lossless base (and a lossless twin, bicubic)."""
    d = tmp_path_factory.mktemp("base")
    res = medsr.archive_series(fixture_path("large_256"), d / "near.medsr.h5",
                               medsr.ArchiveOptions(base=BASE_NEAR_LOSSLESS, base_near=DEFAULT_NEAR, device="cpu"))
    return res


def test_near_lossless_archive_restores_as_its_audit_says(near_archive, fixture_path, tmp_path):
    res = near_archive
    s = res.summary()
    assert s["base"] == BASE_NEAR_LOSSLESS and s["base_near"] == DEFAULT_NEAR
    prov = res.audit["provenance"]
    assert prov["base"] == BASE_NEAR_LOSSLESS and prov["base_near"] == DEFAULT_NEAR
    assert f"JPEG-LS NEAR={DEFAULT_NEAR}" in prov["base_description"]
    f = open_logical(res.archive)  # version 1's names, whatever the format version
    try:
        assert "lowres" not in f and "lowres_coded" in f and "lowres_coded_offsets" in f
        assert f.attrs["base"] == BASE_NEAR_LOSSLESS and int(f.attrs["base_near"]) == DEFAULT_NEAR
        coded = int(f["lowres_coded"].size)
    finally:
        f.close()
    assert res.info.stored_pixel_bytes == coded
    assert res.audit["ratios"]["pixel"] == pytest.approx(res.info.original_pixel_bytes / coded)
    assert medsr.verify_archive(res.archive).ok
    out = medsr.restore_archive(res.archive, tmp_path / "restored", medsr.RestoreOptions(device="cpu"),
                                reference=fixture_path("large_256"))
    a = out.summary()["audit"]
    for key in ("psnr", "psnr_fg", "psnr_bicubic"):
        assert a[key] == pytest.approx(s[key], abs=0.05), key
    assert a["ssim"] == pytest.approx(s["ssim"], abs=1e-3)
    assert out.audit["provenance"]["base"] == BASE_NEAR_LOSSLESS
    import pydicom

    ds = pydicom.dcmread(out.files[0], stop_before_pixels=True)
    assert f"JPEG-LS NEAR={DEFAULT_NEAR}" in str(ds.DerivationDescription)
    # the restore is consistent with the decoded base, not the exact low-res data
    data = read_archive(res.archive)
    restored = np.stack([pydicom.dcmread(p).pixel_array for p in out.files])
    ref = read_series(fixture_path("large_256"))
    exact = downsample(ref.pixels, "area4-v1")
    assert np.abs(data.lowres.astype(int) - exact.astype(int)).max() <= DEFAULT_NEAR
    back = downsample(restored, "area4-v1")
    # projected onto the decoded base: off only by rounding (and clipping at the range ends)
    assert (np.abs(back.astype(int) - data.lowres.astype(int)) <= 1).mean() > 0.99


def _flip(path, dst, name, at=7):
    raw = bytearray(path.read_bytes())
    off = byte_offset(path, name)
    raw[off + at] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def test_verify_catches_a_flipped_byte_in_the_coded_base(near_archive, tmp_path):
    bad = _flip(near_archive.archive, tmp_path / "bad.medsr.h5", "lowres_coded")
    v = medsr.verify_archive(bad)
    assert not v.ok and "lowres_coded" in v.problems[0]
    with pytest.raises(ArchiveError, match="lowres_coded"):
        medsr.restore_archive(bad, tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    assert not (tmp_path / "r").exists()
    bad2 = _flip(near_archive.archive, tmp_path / "bad2.medsr.h5", "lowres_coded_offsets", at=9)
    assert not medsr.verify_archive(bad2).ok


def test_unknown_base_is_a_clear_error(near_archive, tmp_path):
    p = tmp_path / "future.medsr.h5"
    shutil.copy(near_archive.archive, p)
    edit_meta(p, lambda m: m["attrs"].update(base="jpeg-xl-v9"))  # a newer writer's base
    with pytest.raises(ArchiveError, match="base 'jpeg-xl-v9' is not supported"):
        medsr.open_archive(p)
    v = medsr.verify_archive(p)
    assert not v.ok and "jpeg-xl-v9" in v.problems[0]


def test_bad_base_option_fails_before_writing(fixture_path, tmp_path):
    out = tmp_path / "x.medsr.h5"
    with pytest.raises(MedsrError, match="unknown base"):
        medsr.archive_series(fixture_path("basic"), out, medsr.ArchiveOptions(method="bicubic", base="webp"))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_lossless_base_and_archives_without_the_attribute(fixture_path, tmp_path):
    p = tmp_path / "l.medsr.h5"
    res = medsr.archive_series(fixture_path("signed"), p,
                               medsr.ArchiveOptions(method="bicubic", baselines=False, base=BASE_LOSSLESS))
    assert res.info.base == BASE_LOSSLESS and res.info.base_near == 0
    with h5py.File(p, "r") as f:
        assert "lowres" in f and "lowres_coded" not in f
    edit_meta(p, lambda m: [m["attrs"].pop(k) for k in ("base", "base_near")])  # written before the base existed
    info = medsr.open_archive(p)
    assert info.base == BASE_LOSSLESS and medsr.verify_archive(p).ok


def test_signed_data_on_a_near_lossless_base(fixture_path, tmp_path):
    p = tmp_path / "s.medsr.h5"
    res = medsr.archive_series(fixture_path("signed"), p,
                               medsr.ArchiveOptions(method="bicubic", baselines=False, base=BASE_NEAR_LOSSLESS,
                                                    base_near=2))
    data = read_archive(p)
    ref = read_series(fixture_path("signed"))
    exact = downsample(ref.pixels, "area4-v1")
    assert data.lowres.dtype == exact.dtype and exact.min() < 0
    assert np.abs(data.lowres.astype(int) - exact.astype(int)).max() <= 2
    assert res.info.base_near == 2 and medsr.verify_archive(p).ok


def test_jpegls_binds_its_own_charls_and_refuses_inside_orthanc_otherwise():
    """Inside Orthanc, DCMTK's CharLS exports the same C names: pyjpegls must be loaded RTLD_DEEPBIND
    (the plugin does it first) or medsr refuses to code rather than crash the PACS."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-c", "import medsr.codec.base as b; b.load_jpegls(); print(b._DEEPBOUND)"],
                        capture_output=True, text=True, timeout=60)
    assert ok.stdout.strip() == "True", ok.stderr
    late = ("import sys, types, jpeg_ls, numpy as np\n"
            "sys.modules['orthanc'] = types.ModuleType('orthanc')\n"
            "from medsr.codec.base import BaseCodecError, prepare_base\n"
            "try:\n    prepare_base(np.zeros((1, 8, 8), np.uint16), 'near-lossless', 2)\n"
            "except BaseCodecError as e:\n    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("refused:") and "Orthanc" in r.stdout, r.stdout + r.stderr


def test_cli_base_option(fixture_path, tmp_path):
    """``medsr archive --base``/``--base-near``."""
    from medsr import cli

    out = tmp_path / "c.medsr.h5"
    rc = cli.main(["archive", str(fixture_path("basic")), "-o", str(out), "--method", "bicubic", "--no-j2k",
                   "--base", "near-lossless", "--base-near", "4", "--quiet"])
    assert rc == 0
    info = medsr.open_archive(out)
    assert info.base == BASE_NEAR_LOSSLESS and info.base_near == 4
