"""Build the compact training pack: integer MR volumes + source names + subject ids.

    python -m pipelines.prepare_data --out .train/pack.npz

Sources (all offline, all real MR):

- ``sag-anon``: /work/shared/data/sag-anon-t1-mprage.tar.gz, one child, Siemens 3T T1
  MPRAGE, 192 sagittal 256x256 slices, near-isotropic -> train, all three orientations;
- ``colin27``: /usr/share/mricron/templates/ch2.nii.gz, Colin27 T1, uint8 x16 -> ~12-bit,
  1 mm isotropic -> train, all three orientations;
- ``pydicom-data-mr``: the real single MR slices of the pydicom-data package
  (MR2 shoulder 1024x1024, Siemens head 484x484) -> VALIDATION (other subjects,
  scanners, body part and contrast: the most different held-out source);
  ``--train-on MR2_UNCR.dcm`` moves that slice into training instead (listed
  ``--train-on-repeat`` times so one 1024^2 slice is not drowned by ~1,200 smaller ones);
  at least one slice stays held out;
- ``phantom-*`` (optional): Siemens XA30 and Philips phantoms -> extra validation only
  (not anatomy, never trained on).

Every volume is an integer array (n, H, W) of *stored* values (Rescale Slope/Intercept
undone when a reader applied them) in acquisition order, axis 0 = the slice stack the
archive would see. Slices with less than 5% foreground are dropped (their indices are
not listed in the pack's keep lists). DICOM and NIfTI are read with MONAI ``LoadImage``
(PydicomReader / NibabelReader); headers with pydicom. Those imports happen inside the
builders only: ``load_pack`` needs nothing but numpy, so training runs without them.

Pack layout (``np.load(path, allow_pickle=False)``):
``meta`` (JSON string: version, val_source, volumes[{key, name, source, subject, split,
axes, license, shape, dtype}]), ``sources``/``subjects``/``splits`` (str arrays, one per
volume), ``<key>`` (the volume), ``<key>_keep<axis>`` (kept slice indices per axis).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipelines.manifest import MANIFEST, Entry, check
from pipelines import pack_coding
from pipelines.pack_coding import CODING, Coded, encode_volume

PACK_VERSION = 1
VAL_SOURCE = "pydicom-data-mr"
DEFAULT_DATA_DIR = Path(os.environ.get("MEDSR_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
DEFAULT_COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
MIN_FG = 0.05


@dataclass
class PackVolume:
    key: str
    name: str
    source: str
    subject: str
    split: str  # "train", "val" (headline validation) or "val-extra"
    data: np.ndarray  # (n, H, W) stored integers, axis 0 = acquisition stack
    axes: tuple[int, ...] = (0,)
    keep: dict[int, np.ndarray] = field(default_factory=dict)
    license: str = ""
    repeat: int = 1  # training: each slice is listed this many times (weights a large single slice)


@dataclass
class Pack:
    volumes: list[PackVolume]
    val_source: str
    meta: dict

    def split(self, name: str) -> list[PackVolume]:
        return [v for v in self.volumes if v.split == name]


# ---------------------------------------------------------------- pack file


def save_pack(path: Path, volumes: list[PackVolume], val_source: str = VAL_SOURCE, coding: str = "zlib",
              parts: list[str] | None = None, coded: dict[str, Coded] | None = None) -> dict:
    """Write a pack; ``coding`` "zlib" (``np.savez_compressed``) or ``pack_coding.CODING`` (JPEG-LS slices,
    lossless, ~35% smaller: what a GPU run carries; ``coded`` holds volumes already coded, by key)."""
    if coding not in ("zlib", CODING):
        raise ValueError(f"unknown pack coding {coding!r}")
    meta = {
        "version": PACK_VERSION, "val_source": val_source, "created_by": "pipelines/prepare_data.py", "coding": coding,
        "volumes": [{"key": v.key, "name": v.name, "source": v.source, "subject": v.subject, "split": v.split,
                     "axes": list(v.axes), "license": v.license, "repeat": v.repeat, "shape": list(v.data.shape),
                     "dtype": v.data.dtype.str, "kept": {str(a): int(len(k)) for a, k in v.keep.items()}}
                    for v in volumes],
    }
    if parts:
        meta["parts"] = parts  # a pack in parts: every part lists them all, so a missing one is named
    arrays: dict[str, np.ndarray] = {
        "sources": np.array([v.source for v in volumes]),
        "subjects": np.array([v.subject for v in volumes]),
        "splits": np.array([v.split for v in volumes]),
    }
    for v, m in zip(volumes, meta["volumes"]):
        if coding == "zlib":
            arrays[v.key] = v.data
        else:
            c = (coded or {}).get(v.key) or encode_volume(v.data)
            arrays[v.key], arrays[f"{v.key}_ends"], m["shift"] = c.data, c.ends, c.shift
        for axis, idx in v.keep.items():
            arrays[f"{v.key}_keep{axis}"] = np.asarray(idx, dtype=np.int32)
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    (np.savez_compressed if coding == "zlib" else np.savez)(tmp, **arrays)
    tmp.replace(path)
    return meta


def load_pack(path: str | Path) -> Pack:
    """Read a pack written by ``save_pack`` (numpy only, no pickle; a JPEG-LS coded pack also needs pyjpegls).
    A folder is a pack in parts (``pipelines.gpu_pack``): its ``part-*.npz`` files, in name order, read as
    one pack; they must agree on the validation source and list every part (``meta["parts"]``)."""
    path = Path(path)
    if path.is_dir():
        return _load_parts(path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("version") != PACK_VERSION:
            raise ValueError(f"{path}: pack version {meta.get('version')!r}, expected {PACK_VERSION}")
        vols = []
        for m in meta["volumes"]:
            keep = {a: z[f"{m['key']}_keep{a}"] for a in m["axes"] if f"{m['key']}_keep{a}" in z.files}
            data = z[m["key"]]
            if meta.get("coding", "zlib") != "zlib":
                data = pack_coding.decode_volume(data, z[f"{m['key']}_ends"], m["shift"], tuple(m["shape"]), m["dtype"])
            vols.append(PackVolume(m["key"], m["name"], m["source"], m["subject"], m["split"], data,
                                   tuple(m["axes"]), keep, m.get("license", ""), int(m.get("repeat", 1))))
    return Pack(vols, meta["val_source"], meta)


def _load_parts(folder: Path) -> Pack:
    files = sorted(folder.glob("part-*.npz"))
    if not files:
        raise ValueError(f"{folder}: no part-*.npz files (a pack in parts)")
    parts = [load_pack(f) for f in files]
    names = [f.name for f in files]
    for f, part in zip(files, parts):
        if part.val_source != parts[0].val_source:
            raise ValueError(f"{f}: validation source {part.val_source!r}, {files[0].name} says {parts[0].val_source!r}")
        listed = part.meta.get("parts")
        if listed is not None and sorted(listed) != names:
            missing = sorted(set(listed) - set(names))
            raise ValueError(f"{folder}: {f.name} lists parts {', '.join(listed)}; "
                             + (f"missing {', '.join(missing)}" if missing else f"found {', '.join(names)}"))
    meta = dict(parts[0].meta, volumes=[m for part in parts for m in part.meta["volumes"]])
    return Pack([v for part in parts for v in part.volumes], parts[0].val_source, meta)


# ---------------------------------------------------------------- readers


def _loader(reader: str):
    from monai.transforms import LoadImage

    return LoadImage(reader=reader, image_only=True, dtype=None)


def _stored_values(pixels: np.ndarray, slope: float, intercept: float, dtype: np.dtype) -> np.ndarray:
    """Undo a modality rescale a reader applied; the result must be integral."""
    if slope == 1.0 and intercept == 0.0:
        return pixels.astype(dtype)
    raw = (pixels.astype(np.float64) - intercept) / slope
    stored = np.rint(raw)
    if np.abs(raw - stored).max() > 1e-2:
        raise ValueError(f"values are not integral after undoing slope {slope} / intercept {intercept}")
    return stored.astype(dtype)


def read_dicom_files(files: list[Path]) -> np.ndarray:
    """Single-frame MR files of one series -> (n, Rows, Columns) stored integers in stack order."""
    import pydicom

    heads = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if ds.get("Modality") != "MR":
            continue
        heads.append((int(ds.get("InstanceNumber", 0) or 0), f, ds))
    if not heads:
        raise ValueError(f"no MR images among {len(files)} files")
    heads.sort(key=lambda t: (t[0], str(t[1])))
    load = _loader("PydicomReader")
    out = []
    for _, f, ds in heads:
        px = np.asarray(load(str(f))).T  # MONAI gives (columns, rows)
        dtype = np.dtype(np.int16 if int(ds.get("PixelRepresentation", 0)) else np.uint16)
        out.append(_stored_values(px, float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0),
                                  dtype))
    first = pydicom.dcmread(heads[0][1]).pixel_array
    if not np.array_equal(first, out[0]):
        raise ValueError(f"{heads[0][1]}: MONAI pixels differ from pydicom's stored values")
    return np.stack(out)


def _extract(archive: Path, cache: dict[Path, Path], tmp: Path) -> Path:
    """Unpack a shared-data archive once per build (tar.gz or zip) -> its folder."""
    if archive not in cache:
        import zipfile

        dest = tmp / archive.name.split(".")[0]
        dest.mkdir()
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        cache[archive] = dest
    return cache[archive]


def read_nifti(path: Path) -> np.ndarray:
    """A NIfTI volume -> (z, y, x) stored integers, anterior/up first in y (radiological stack order)."""
    import nibabel as nib

    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{path.name}: NIfTI data is {raw.dtype}, expected stored integers")
    return np.ascontiguousarray(np.transpose(raw, (2, 1, 0))[:, ::-1])


def colin27(path: Path) -> np.ndarray:
    """Colin27 (uint8) -> axial stack, anterior up, x16 to ~12-bit."""
    v = np.asarray(_loader("NibabelReader")(str(path)))  # (x, y, z) uint8, RAS
    return np.ascontiguousarray(np.transpose(v, (2, 1, 0))[:, ::-1].astype(np.uint16) * 16)


def read_entry(e: Entry, data_dir: Path, cache: dict[Path, Path], tmp: Path) -> PackVolume:
    """One manifest entry -> a PackVolume of stored integers (no header field but geometry is read)."""
    if e.key == "vol_colin27":
        data = colin27(Path(e.path))
    else:
        root = _extract(data_dir / e.archive, cache, tmp) if e.archive else Path(e.path)
        member = root / e.member
        if e.reader == "nifti":
            data = read_nifti(member)
        else:
            files = sorted(member.rglob("*.dcm"))
            if not files:
                raise FileNotFoundError(f"{e.archive}: no DICOM files under {e.member}")
            data = read_dicom_files(files)
    return PackVolume(e.key, e.key.removeprefix("vol_"), e.source, e.subject, e.split, data, e.axes,
                      license=e.licence, repeat=e.repeat)


def pydicom_data_mr(min_size: int = 128) -> list[PackVolume]:
    """Real single-frame MR slices of pydicom-data, one volume per distinct image.

    Lossy copies (JPEG 2000 irreversible, Lossy Image Compression "01") are skipped and
    copies of the same pixels in other transfer syntaxes are kept once (uncompressed first).
    """
    import hashlib

    import pydicom
    import pydicom.data
    from pydicom.uid import JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit

    anchor = pydicom.data.get_testdata_file("MR2_UNCR.dcm", download=False)
    if anchor is None:
        raise FileNotFoundError("pydicom-data is not installed (pip install pydicom-data)")
    cands = []
    for f in sorted(Path(anchor).parent.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        ts = ds.file_meta.TransferSyntaxUID
        if ds.get("Modality") != "MR" or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            continue
        if min(int(ds.Rows), int(ds.Columns)) < min_size:
            continue
        if ds.get("LossyImageCompression") == "01" or ts in (JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit):
            continue
        cands.append((0 if not ts.is_compressed else 1, f.name, f))
    out: list[PackVolume] = []
    seen: set[str] = set()
    for _, _, f in sorted(cands):
        vol = read_dicom_files([f])
        digest = hashlib.sha256(vol.tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        stem = f.stem.replace("_UNCR", "").replace("_UNCI", "").lower()
        out.append(PackVolume(f"vol_val{len(out)}", f.name, VAL_SOURCE, f"pydicom-{stem}", "val", vol, (0,),
                              license="MIT (pydicom-data)"))
    return out


def phantoms(data_dir: Path) -> list[PackVolume]:
    import zipfile

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        sx = data_dir / "siemens-xa30-phantom-t1w.tar.gz"
        if sx.exists():
            with tarfile.open(sx) as tf:
                tf.extractall(t, filter="data")
            files = sorted(t.rglob("5001_anat-T1w_acq-tfl/*.dcm"))
            out.append(PackVolume("vol_phantom_siemens", "siemens-xa30-phantom-t1w", "phantom-siemens-xa30",
                                  "phantom-siemens", "val-extra", read_dicom_files(files), (0,),
                                  license="BSD-2-Clause (Chris Rorden, 2023)"))
        pz = data_dir / "philips-phantom-t1.zip"
        if pz.exists():
            with zipfile.ZipFile(pz) as zf:
                zf.extractall(t)
            files = sorted(t.rglob("501_T1W_FFE_Sno_CS4/*.dcm"))
            out.append(PackVolume("vol_phantom_philips", "philips-501-t1w-ffe", "phantom-philips", "phantom-philips",
                                  "val-extra", read_dicom_files(files), (0,),
                                  license="BSD-2-Clause (Chris Rorden, 2023)"))
    return out


# ---------------------------------------------------------------- main


def add_keep_lists(v: PackVolume, min_fg: float = MIN_FG) -> PackVolume:
    from medsr.transforms.pipeline import foreground_threshold, kept_slices

    thr = foreground_threshold(v.data)
    v.keep = {a: kept_slices(np.moveaxis(v.data, a, 0), thr, min_fg).astype(np.int32) for a in v.axes}
    return v


def move_to_train(vols: list[PackVolume], names: list[str], repeat: int) -> list[PackVolume]:
    """Move the named held-out slices (file names, e.g. MR2_UNCR.dcm) into the training split, each
    listed ``repeat`` times; the validation split must keep at least one real slice."""
    known = {v.name for v in vols if v.split == "val"}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"--train-on: {', '.join(unknown)} is not a validation slice (known: {', '.join(sorted(known))})")
    if not any(v.split == "val" and v.name not in names for v in vols):
        raise SystemExit("--train-on: every validation slice would be trained on; keep at least one held out")
    for v in vols:
        if v.name in names:
            v.split, v.repeat = "train", repeat
    return vols


def build(data_dir: Path, colin: Path | None, with_phantoms: bool = True, train_on: list[str] | None = None,
          train_on_repeat: int = 1, only_sag_anon: bool = False) -> list[PackVolume]:
    """The pack's volumes: every entry of ``pipelines.manifest`` (``only_sag_anon``: the old two-source
    set, SAG-anon + Colin27), then pydicom-data's MR slices (validation) and the phantoms (val-extra)."""
    check()
    entries = [e for e in MANIFEST if not only_sag_anon or e.source in ("sag-anon", "colin27")]
    vols: list[PackVolume] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[Path, Path] = {}
        for e in entries:
            if e.key == "vol_colin27":
                if colin is None or not colin.exists():
                    continue
                e = replace(e, path=str(colin))
            elif e.archive and not (data_dir / e.archive).exists():
                raise SystemExit(f"error: {data_dir / e.archive}: missing (manifest entry {e.key})")
            vols.append(read_entry(e, data_dir, cache, Path(tmp)))
    vols += pydicom_data_mr()
    if train_on:
        move_to_train(vols, train_on, train_on_repeat)
    if with_phantoms:
        vols += phantoms(data_dir)
    return [add_keep_lists(v) for v in vols]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prepare_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="pack file to write (.npz)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--colin", type=Path, default=DEFAULT_COLIN, help="Colin27 ch2.nii.gz (skipped if absent)")
    p.add_argument("--no-phantoms", action="store_true", help="leave out the phantom validation series")
    p.add_argument("--only-sag-anon", action="store_true",
                   help="the old two-source training set (SAG-anon + Colin27) that the -v1/-v2 weights learned from")
    p.add_argument("--max-mb", type=float, default=120.0)
    p.add_argument("--train-on", action="append", default=[], metavar="FILE",
                   help="train on this pydicom-data slice (e.g. MR2_UNCR.dcm) instead of validating on it; "
                   "the others stay held out")
    p.add_argument("--train-on-repeat", type=int, default=64, metavar="R",
                   help="list each --train-on slice R times (a 1024^2 slice holds ~16x the crops of a 256^2 one)")
    a = p.parse_args(argv)
    vols = build(a.data_dir, a.colin, not a.no_phantoms, a.train_on, a.train_on_repeat, a.only_sag_anon)
    meta = save_pack(a.out, vols)
    size_mb = a.out.stat().st_size / 2**20
    for m in meta["volumes"]:
        print(f"{m['split']:9s} {m['source']:22s} {m['subject']:26s} {str(tuple(m['shape'])):18s} {m['dtype']} "
              f"kept slices per axis {m['kept']}" + (f", listed x{m['repeat']}" if m["repeat"] > 1 else ""))
    print(f"validation source: {meta['val_source']}; wrote {a.out} ({size_mb:.1f} MB)")
    if size_mb > a.max_mb:
        print(f"error: pack is {size_mb:.1f} MB > --max-mb {a.max_mb}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
