"""``medsr eval``'s picture (eval.png): every method's restore of one slice, each over an enlarged crop of the
same region (where a perceptual model's texture shows), on the original's grey scale."""
from __future__ import annotations

import numpy as np
import pytest

from medsr.flow.evaluate import draw_panels, zoom_box


def _head(h=256, w=200, cy=150, cx=90, r=50):
    yy, xx = np.mgrid[:h, :w]
    return np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 1000.0, 0.0)


def test_the_zoom_is_a_quarter_of_the_shorter_side_centred_on_the_foreground():
    top, left, size = zoom_box(_head())
    assert size == 50  # 200 / 4
    assert (top + size / 2, left + size / 2) == pytest.approx((150, 90), abs=1)


def test_the_zoom_stays_inside_the_image_and_an_empty_slice_zooms_its_centre():
    top, left, size = zoom_box(_head(cy=5, cx=195, r=20))
    assert 0 <= top and top + size <= 256 and 0 <= left and left + size <= 200
    assert zoom_box(np.zeros((64, 64))) == (24, 24, 16)


def test_the_picture_has_a_slice_and_its_zoom_for_every_method(tmp_path):
    from PIL import Image

    img = _head()
    panels = {"index": 3, "original": img, "bicubic": img * 0.9}
    panels.update({f"model-{k}": img + k for k in range(5)})  # 7 methods: two rows of up to 5
    path = tmp_path / "eval.png"
    draw_panels(panels, "series, slice 3", path)
    w, h = Image.open(path).size
    assert w == pytest.approx(3.0 * 5 * 110, abs=2) and h == pytest.approx(6.2 * 2 * 110, abs=2)
    small = tmp_path / "two.png"
    draw_panels({"index": 0, "original": img, "bicubic": img}, "s", small)
    assert Image.open(small).size[0] == pytest.approx(3.0 * 2 * 110, abs=2)
