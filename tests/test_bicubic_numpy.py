"""The bicubic baseline and ``--method bicubic`` restore are PyTorch's bicubic, computed in NumPy.

Archives made when the engine called ``F.interpolate`` record audits of that output; the NumPy
version must give the same float64 values (so the same rounded pixels) on the data archives hold,
on every shape an archive can hold: x4 and x2, odd sizes, padded sizes cropped back, single rows
and columns. Low-res stacks of integer series are integers (``downsample`` rounds), where every
product and sum is exact: bit-identical. On arbitrary floats the two agree to rounding (PyTorch's
own last bit depends on whether its CPU kernel fuses multiply-adds).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medsr.engine.interpolate import bicubic_upsample  # noqa: E402


def _torch_bicubic(x: np.ndarray, H: int, W: int) -> np.ndarray:
    import torch.nn.functional as F

    n, h, w = x.shape
    s = max(-(-H // h), -(-W // w))
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[:, None]
    with torch.no_grad():
        y = F.interpolate(t, size=(s * h, s * w), mode="bicubic", align_corners=False)
    return y[:, 0, :H, :W].numpy()


@pytest.mark.parametrize("scale,h,w", [(4, 64, 64), (4, 37, 41), (2, 100, 77), (4, 1, 5), (2, 3, 1), (4, 128, 115),
                                       (2, 256, 256)])
def test_numpy_bicubic_is_bit_identical_to_torch(scale, h, w):
    rng = np.random.default_rng(scale * 1000 + h + w)
    x = rng.integers(0, 4096, size=(3, h, w)).astype(np.float64)
    x[0] = np.round(rng.normal(2000, 900, size=(h, w)))  # signed, wide
    x[1] = rng.integers(0, 65536, size=(h, w))  # the full 16-bit range
    got = bicubic_upsample(x, scale)
    assert np.array_equal(got, _torch_bicubic(x, h * scale, w * scale))


def test_numpy_bicubic_matches_torch_to_rounding_on_floats():
    rng = np.random.default_rng(5)
    x = rng.random((2, 33, 20)) * np.array([1e-3, 1e4])[:, None, None]
    for k in range(2):  # each slice to rounding of its own scale (cancellation in the negative lobes)
        np.testing.assert_allclose(bicubic_upsample(x[k:k + 1], 4), _torch_bicubic(x[k:k + 1], 132, 80), rtol=0,
                                   atol=1e-13 * np.abs(x[k]).max())


@pytest.mark.parametrize("scale,h,w", [(3, 20, 21), (5, 7, 9)])
def test_other_scales_match_torch_to_rounding(scale, h, w):
    """No archive operator is x3 or x5 (x2, x4 only), but bicubic_upsample takes any integer scale: there the
    taps are not exactly periodic in floating point, so each tap is a gather (the other path of ``_pass``), and
    weights like 1/3 are not exact, so the result agrees with torch's to rounding, not bit for bit."""
    rng = np.random.default_rng(scale + h + w)
    x = rng.integers(0, 4096, size=(2, h, w)).astype(np.float64)
    np.testing.assert_allclose(bicubic_upsample(x, scale), _torch_bicubic(x, h * scale, w * scale), rtol=0,
                               atol=1e-12 * 4096)


def test_cropped_output_matches_torch_of_the_padded_size():
    rng = np.random.default_rng(3)
    x = rng.integers(-2048, 2048, size=(2, 16, 13)).astype(np.float64)
    got = bicubic_upsample(x, out_shape=(62, 50))
    assert got.shape == (2, 62, 50)
    assert np.array_equal(got, _torch_bicubic(x, 62, 50))


def test_bicubic_archive_and_restore_do_not_import_torch(tmp_path):
    """A bicubic archive and restore run without loading torch (it costs over a second of start-up)."""
    import subprocess
    import sys

    from dicom_fixtures.build import build_series
    from dicom_fixtures.spec import SeriesSpec

    src = tmp_path / "s"
    build_series(src, SeriesSpec(rows=64, cols=64, slices=3, seed=1))
    code = ("import sys, medsr\n"
            "from medsr.api import ArchiveOptions, RestoreOptions\n"
            f"medsr.archive_series({str(src)!r}, {str(tmp_path / 'a.medsr.h5')!r}, ArchiveOptions(method='bicubic'))\n"
            f"medsr.restore_archive({str(tmp_path / 'a.medsr.h5')!r}, {str(tmp_path / 'r')!r}, RestoreOptions(method='bicubic'))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
