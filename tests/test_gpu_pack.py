"""A GPU run's pack: JPEG-LS coded volumes in parts, each small enough to travel with one device call, read back
as the very pack it came from (same values, same order), and a missing part named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pack_util import make_tiny_pack, synthetic_volume
from pipelines import gpu_pack
from pipelines.gpu_pack import split_volumes
from pipelines.pack_coding import CODING
from pipelines.prepare_data import PackVolume, load_pack, save_pack


def _same(a, b) -> None:
    assert [v.key for v in a.volumes] == [v.key for v in b.volumes]
    for x, y in zip(a.volumes, b.volumes):
        assert (x.split, x.source, x.axes, x.data.dtype) == (y.split, y.source, y.axes, y.data.dtype)
        np.testing.assert_array_equal(x.data, y.data)
        assert x.keep.keys() == y.keep.keys()
        for k in x.keep:
            np.testing.assert_array_equal(x.keep[k], y.keep[k])


def test_a_jpeg_ls_pack_reads_back_value_for_value(tmp_path):
    signed = synthetic_volume(3, 64, 2).astype(np.int16) - 300  # negative stored values too
    vols = [PackVolume("vol_s", "s", "syn", "s1", "train", signed, (0,), {0: np.array([0, 2], np.int32)}),
            PackVolume("vol_v", "v", "syn-val", "s2", "val", synthetic_volume(1, 70, 5), (0,))]
    save_pack(tmp_path / "z.npz", vols, val_source="syn-val")
    save_pack(tmp_path / "ls.npz", vols, val_source="syn-val", coding=CODING)
    zlib, ls = load_pack(tmp_path / "z.npz"), load_pack(tmp_path / "ls.npz")
    _same(zlib, ls)
    assert ls.meta["coding"] == CODING and ls.volumes[0].data.min() < 0


def test_volumes_are_cut_in_order_into_parts_under_the_size():
    assert split_volumes([5, 5, 5, 5], 10) == [[0, 1], [2, 3]]
    assert split_volumes([12, 3, 3], 10) == [[0], [1, 2]]  # a larger volume travels alone
    assert split_volumes([], 10) == [[]]


def test_gpu_pack_writes_parts_that_read_as_the_source_pack(tmp_path, capsys):
    src = tmp_path / "pack.npz"
    make_tiny_pack(src)
    out = tmp_path / "gpu"
    rc = gpu_pack.main(["--pack", str(src), "--out", str(out), "--part-mb", "0.001", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["fits"]
    assert sorted(p.name for p in out.iterdir()) == ["part-1.npz", "part-2.npz"]  # one volume each
    _same(load_pack(src), load_pack(out))
    assert all(n.startswith("medsr/models/weights/") for n in rep["unused_weights"])
    assert not any(n.endswith("/medsr-srresnet-x4.safetensors") for n in rep["unused_weights"])  # the warm start

    capsys.readouterr()
    assert gpu_pack.main(["--unused-weights"]) == 0
    assert capsys.readouterr().out.split() == rep["unused_weights"]

    (out / "part-1.npz").unlink()  # the machine went cold between the two calls
    with pytest.raises(ValueError, match="missing part-1.npz"):
        load_pack(out)


def test_a_part_that_does_not_decode_to_the_source_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "pack.npz"
    make_tiny_pack(src)
    import pipelines.pack_coding as pc

    real = pc.decode_volume
    monkeypatch.setattr(pc, "decode_volume", lambda *a, **k: real(*a, **k) + 1)
    with pytest.raises(SystemExit, match="does not decode to the original values"):
        gpu_pack.main(["--pack", str(src), "--out", str(tmp_path / "gpu")])
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "gpu.tmp").exists()
