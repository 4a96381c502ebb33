"""Archives of format version 2 (medsr main at 1cae0a5, before the operator and model attribute groups of
format 3) and the sha256 of what they restore to.

tests/test_previous_format.py restores them with today's code and expects the same pixels. Made with

    git worktree add /tmp/medsr-1cae0a5 1cae0a5
    cd /tmp/medsr-1cae0a5 && PYTHONPATH=. python tests/data/format-v2/make.py OUTDIR  # (this file, copied)

(nothing is rewritten when OUTDIR already holds the archives: only the expected sha256 are recomputed).
The restores run on the CPU with 1 and 2 torch threads and must agree.
"""
import hashlib, json, sys, tempfile
from pathlib import Path

import numpy as np
import pydicom
import torch

import medsr
from dicom_fixtures.build import BASIC, build_series

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
src = out / "src" / "basic"
if not src.exists():
    build_series(src, BASIC)

VARIANTS = {
    "basic-bicubic": dict(method="bicubic"),
    "basic-model": dict(),  # auto: the shipped default model and its self-ensemble
    "basic-floor-lossless": dict(method="bicubic", base="lossless", floor_psnr_fg=45.0, floor_fallback="lossless"),
    "basic-lossy-model": dict(base="lossy"),  # the lossy JPEG-LS base and its own model
    "basic-ratio-80": dict(ratio=80),  # --ratio: whatever measured best (its candidates in the audit)
}


def restored_sha(arc: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        res = medsr.restore_archive(arc, Path(d) / "r", medsr.RestoreOptions(device="cpu"))
        dss = sorted((pydicom.dcmread(f) for f in Path(d, "r").glob("*.dcm")), key=lambda ds: int(ds.InstanceNumber))
        px = np.stack([ds.pixel_array for ds in dss])
        with tempfile.TemporaryDirectory() as d2:
            medsr.restore_archive(arc, Path(d2) / "r.nii.gz", medsr.RestoreOptions(device="cpu", format="nifti"))
            import nibabel as nib
            nii = np.asarray(nib.load(Path(d2) / "r.nii.gz").dataobj)
    return {"dicom_pixels_sha256": hashlib.sha256(px.tobytes()).hexdigest(), "shape": list(px.shape),
            "dtype": str(px.dtype), "method": res.method, "model_id": res.model_id, "ensemble": res.ensemble,
            "nifti_pixels_sha256": hashlib.sha256(np.ascontiguousarray(nii).tobytes()).hexdigest(),
            "nifti_shape": list(nii.shape), "nifti_dtype": str(nii.dtype)}


expected = {"made_with": "medsr main 1cae0a5 (format version 2)", "archives": {}}
for name, kw in VARIANTS.items():
    arc = out / f"{name}.medsr.h5"
    if not arc.exists():
        medsr.archive_series(src, arc, medsr.ArchiveOptions(device="cpu", **kw))
    threads = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        threads[n] = restored_sha(arc)
    assert threads[1] == threads[2], (name, threads)
    expected["archives"][arc.name] = threads[2]
    print(name, arc.stat().st_size, threads[2])
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
