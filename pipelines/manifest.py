"""The one list of MR data medsr's models may learn from or be chosen on.

Every entry names its source, licence (with the attribution the licence asks for), subject and
split. ``pipelines/prepare_data.py`` builds the training pack from this list alone, and the model
cards quote it. Splits (``docs/evaluation.md`` has the protocol):

- ``train``: crops are drawn from these volumes;
- ``val``: held out *by subject and by source*; watched during training and used to choose
  (recipe, checkpoint, whether to ship). Never called unseen;
- ``val-extra``: phantoms, watched but not anatomy.

Evaluation sets (never used to choose anything) are not in this list on purpose: they are the
registry series of ``dicom_fixtures/unseen.py`` (GE 1.5 T PD brain, GE 1.5 T T2-FLAIR, Siemens 3 T
MEMPRAGE), read only by ``medsr eval`` after training.

PHI: several of these headers carry birth dates or an institution. Nothing here or in the pack
reads or stores any header field other than pixel geometry, modality, instance number and rescale.
"""
from __future__ import annotations

from dataclasses import dataclass

TRAIN, VAL, VAL_EXTRA = "train", "val", "val-extra"
SPLITS = (TRAIN, VAL, VAL_EXTRA)


@dataclass(frozen=True)
class Entry:
    """One volume (or 2D series) of real MR."""

    key: str  # pack key, unique
    source: str  # data set it comes from (validation is held out by source or by subject within it)
    subject: str  # one person (or phantom); no two splits share a subject
    split: str  # train | val | val-extra
    archive: str  # file in ../shared/data ("" for a path outside it, see ``path``)
    member: str  # folder (DICOM files) or file (NIfTI) inside the archive
    reader: str  # "dicom" | "nifti"
    axes: tuple[int, ...]  # orientations to cut 2D slices from (0 = the acquired stack); >1 only for ~isotropic 3D
    licence: str  # licence and attribution
    description: str  # scanner, field, contrast, body part, matrix
    repeat: int = 1  # each training slice listed this many times: the new sources x2-x3 so that they weigh about
    # as much as the two 3D T1 brains (SAG-anon, Colin27), cut in three orientations, together
    path: str = ""  # absolute path when ``archive`` is empty (a Debian package's file)


_SUNNYBROOK = ("CC0 1.0 (Sunnybrook Health Sciences Centre; Radau et al. 2009, Cardiac MR Left Ventricle "
               "Segmentation Challenge), LICENSE.sunnybrook-cardiac-cine")
_SPINE = ("CC BY 4.0 (Spine Generic Public Database, Cohen-Adad et al. 2021), LICENSE.spine-generic-neck-mts")
_PROSTATEX = ("CC BY 3.0 (PROSTATEx, TCIA; Litjens et al. 2017, doi:10.7937/K9TCIA.2017.MURS5CL), "
              "LICENSE.prostatex-t2-pelvis")
_RORDEN_PRISMA = "BSD-2-Clause (Chris Rorden 2022), LICENSE.siemens-prisma-t1-fl2d-head"
_RORDEN_PHILIPS = "BSD-2-Clause (Chris Rorden 2021; data provided by Sandeep Ganji), LICENSE.philips-3t-t1-mprage"


def _sunnybrook(n: int, split: str) -> Entry:
    return Entry(f"vol_sunnybrook_{n}", "sunnybrook-cardiac-cine", f"sunnybrook-SCD0000{n}01", split,
                 "sunnybrook-cardiac-cine.tar.gz", f"sunnybrook_SCD0000{n}01_sax_cine", "dicom", (0,), _SUNNYBROOK,
                 "GE Signa HDx 1.5 T short-axis cine SSFP (FIESTA), heart, 256^2, 4 phases per position", repeat=2)


def _spine(n: str, mt: str, split: str) -> Entry:
    return Entry(f"vol_spine_{n}_{mt.lower()}", "spine-generic-neck-mts", f"spine-generic-sub-{n}", split,
                 "spine-generic-neck-mts.tar.gz", f"spine-generic_unf{n}_{mt}/sub-{n}_acq-{mt}_MTS.nii.gz", "nifti",
                 (0,), _SPINE, f"Siemens Prisma fit 3 T axial 3D GRE ({mt}), cervical spine / neck, 256^2 x 22", repeat=3)


def _prostate(patient: str, folder: str, plane: str, split: str, scanner: str) -> Entry:
    return Entry(f"vol_prostatex_{patient}_{plane}", "prostatex-t2-pelvis", f"ProstateX-{patient}", split,
                 "prostatex-t2-pelvis.tar.gz", folder, "dicom", (0,), _PROSTATEX,
                 f"{scanner} T2 TSE, pelvis / prostate, {plane}", repeat=3)


def _prisma(position: str, series: str) -> Entry:
    return Entry(f"vol_prisma_{position.lower()}", "siemens-prisma-t1-fl2d-head", "prisma-decubitus-1", TRAIN,
                 "siemens-prisma-t1-fl2d-head.tar.gz", f"prisma-decubitus_{position}_{series}_t1_fl2d_sag", "dicom",
                 (0,), _RORDEN_PRISMA, f"Siemens Prisma fit 3 T sagittal 2D FLASH T1, head ({position}), 256^2", repeat=2)


MANIFEST: tuple[Entry, ...] = (
    # ---- training: 1 child + 1 adult T1 brain (Siemens 3 T), Colin27, 1 adult 2D T1 head, 4 hearts, 2 necks, 2 pelves
    Entry("vol_sag_anon", "sag-anon", "sag-anon-1", TRAIN, "sag-anon-t1-mprage.tar.gz", "SAG-anon", "dicom",
          (0, 1, 2), "MIT (Rudolph Pienaar, 2018), LICENSE.sag-anon",
          "Siemens Skyra 3 T sagittal T1 MPRAGE, head (child), 256^2 x 192"),
    Entry("vol_colin27", "colin27", "colin27", TRAIN, "", "", "nifti", (0, 1, 2),
          "Colin27 (Debian mricron-data, BSD-style); rescaled x16 from uint8",
          "Colin27 T1 average of 27 scans of one adult, 1 mm isotropic, 8-bit", path="/usr/share/mricron/templates/ch2.nii.gz"),
    *(_prisma(p, s) for p, s in (("HFS", "3"), ("HFP", "2"), ("HFDL", "2"), ("HFDR", "2"))),
    *(_sunnybrook(n, TRAIN) for n in (1, 2, 3, 4)),
    *(_spine(n, mt, TRAIN) for n in ("01", "03") for mt in ("MToff", "MTon")),
    _prostate("0000", "ProstateX-0000_3_t2tsesag", "sagittal", TRAIN, "Siemens Skyra 3 T"),
    _prostate("0000", "ProstateX-0000_4_t2tsetra", "axial", TRAIN, "Siemens Skyra 3 T"),
    _prostate("0000", "ProstateX-0000_5_t2tsecor", "coronal", TRAIN, "Siemens Skyra 3 T"),
    _prostate("0001", "ProstateX-0001_4_t2tsesag", "sagittal", TRAIN, "Siemens Skyra 3 T"),
    _prostate("0001", "ProstateX-0001_6_t2tsetra", "axial", TRAIN, "Siemens Skyra 3 T"),
    _prostate("0001", "ProstateX-0001_5_t2tsecor", "coronal", TRAIN, "Siemens Skyra 3 T"),
    # ---- validation: held out by subject (one of each multi-subject source) and by source (Philips, pydicom-data)
    Entry("vol_philips_mprage", "philips-3t-t1-mprage", "philips-3t-1", VAL, "philips-3t-t1-mprage.tar.gz",
          "philips-3t_1301_ADNI_Sag3D_MPRAGE", "dicom", (0,), _RORDEN_PHILIPS,
          "Philips Ingenia Elition X 3 T sagittal 3D T1 MPRAGE (TFE), head, 256^2 x 170"),
    _sunnybrook(5, VAL),
    _spine("05", "MToff", VAL),
    _spine("05", "MTon", VAL),
    _prostate("0218", "ProstateX-0218_4_t2tsesag320p2", "sagittal", VAL, "Siemens TrioTim 3 T"),
    _prostate("0218", "ProstateX-0218_5_t2tsetra320p2", "axial", VAL, "Siemens TrioTim 3 T"),
    _prostate("0218", "ProstateX-0218_6_t2tsecor320p2", "coronal", VAL, "Siemens TrioTim 3 T"),
    # pydicom-data's real MR slices (484^2 abdomen, 1024^2 shoulder) and the phantoms are added by
    # prepare_data (they come from a PyPI package and two archives, not one folder each).
)


def by_split(split: str) -> list[Entry]:
    return [e for e in MANIFEST if e.split == split]


def check(manifest: tuple[Entry, ...] = MANIFEST) -> None:
    """Raise ValueError unless keys are unique, splits known and no subject is in two splits."""
    keys = [e.key for e in manifest]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate manifest keys")
    where: dict[str, str] = {}
    for e in manifest:
        if e.split not in SPLITS:
            raise ValueError(f"{e.key}: unknown split {e.split!r}")
        if where.setdefault(e.subject, e.split) != e.split:
            raise ValueError(f"subject {e.subject} is in both {where[e.subject]} and {e.split}")
        if e.reader not in ("dicom", "nifti"):
            raise ValueError(f"{e.key}: unknown reader {e.reader!r}")
