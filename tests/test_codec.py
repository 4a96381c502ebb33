"""The codec: versioned, pure operators shared by archive and training."""
import numpy as np
import pytest

from medsr.codec import (downsample, from_signed_unit, intensity_window, pad_to_multiple, project_consistent,
                         to_signed_unit, to_unit, crop_to)


def test_area4_is_exact_block_mean_rounded_to_stored_dtype():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4096, size=(3, 16, 12), dtype=np.uint16)
    lr = downsample(x, "area4-v1")
    assert lr.dtype == np.uint16 and lr.shape == (3, 4, 3)
    expected = np.rint(x.reshape(3, 4, 4, 3, 4).astype(np.float64).mean(axis=(2, 4)))
    assert np.array_equal(lr, expected.astype(np.uint16))


def test_area_operator_keeps_signed_values():
    x = np.full((1, 8, 8), -1000, dtype=np.int16)
    assert (downsample(x, "area4-v1") == -1000).all()


def test_float_input_is_not_rounded():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert downsample(x, "area4-v1").item() == pytest.approx(7.5)


def test_sizes_not_divisible_by_four_are_padded_and_cropped_back():
    x = np.arange(70 * 61, dtype=np.uint16).reshape(1, 70, 61)
    padded, pad = pad_to_multiple(x, 4)
    assert padded.shape == (1, 72, 64) and pad == (2, 3)
    assert np.array_equal(crop_to(padded, 70, 61), x)


def test_projection_restores_the_stored_low_res_exactly():
    rng = np.random.default_rng(1)
    hr = rng.normal(500, 100, size=(2, 32, 32))
    lr = rng.integers(0, 1000, size=(2, 8, 8)).astype(np.uint16)
    proj = project_consistent(hr, lr, "area4-v1")
    assert np.allclose(proj.reshape(2, 8, 4, 8, 4).mean(axis=(2, 4)), lr)


def test_unknown_operator_is_a_clear_error():
    from medsr.errors import MedsrError

    with pytest.raises(MedsrError, match="unknown operator"):
        downsample(np.zeros((1, 4, 4)), "nope-v9")


def test_intensity_scaling_round_trips():
    lr = np.linspace(0, 700, 64).reshape(1, 8, 8)
    w = intensity_window(lr)
    assert to_unit(lr, w).min() == pytest.approx(0.0)
    assert np.allclose(from_signed_unit(to_signed_unit(lr, w), w), lr, atol=1e-3)
