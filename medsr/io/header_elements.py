"""A DICOM header as the archive stores it: its Part 10 prefix and its data elements, each encoded once.

``HeaderEncoder`` (one per series read) gives, for a pydicom data set without pixel data:

- ``prefix(ds)``: for a data set read from a Part 10 file, the 128-byte preamble, ``DICM`` and the file
  meta with Transfer Syntax UID Explicit VR Little Endian (Media Storage SOP Class / Instance UID from the
  data set where the meta lacks them), the bytes ``pydicom.dcmwrite`` writes before the data set;
- ``elements(ds, keys)``: each top-level element but group 0000 (command), 0002 (file meta), 7FE0 (pixels)
  and Data Set Trailing Padding, in tag order, as Explicit VR Little Endian bytes (``encode_element``).

Most of a series' header is the same in every file, so elements are not encoded again when they repeat:
``raw_keys(ds)``, taken before pydicom decodes the data set, keys each element still as read from an
explicit VR little endian file on its raw bytes (tag, VR, length, value) and the data set's Specific
Character Set, everything pydicom decodes it from. An element with raw VR UN (pydicom takes the dictionary's
VR, which for a private tag depends on its private creator) or one already decoded is always encoded.
Measured on the 22 x 512^2 bench phantom: 46 ms of encoding -> 12 ms (``tests/test_header_elements.py``
holds the output to pydicom's own encoding).
"""
from __future__ import annotations

SKIPPED_GROUPS = (0x0000, 0x0002, 0x7FE0)
TRAILING_PADDING = 0xFFFCFFFC


def stored(tag) -> bool:
    """Is this top-level element part of the stored header?"""
    return (tag >> 16) not in SKIPPED_GROUPS and tag != TRAILING_PADDING


def encode_element(elem) -> bytes:
    """One data element as Explicit VR Little Endian bytes (``pydicom.filewriter.write_data_element``); an
    element that cannot be written raises pydicom's error with the tag in its message."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element
    from pydicom.tag import tag_in_exception

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    with tag_in_exception(elem.tag):
        write_data_element(fp, elem)
    return fp.getvalue()


class HeaderEncoder:
    """Encodes the headers of one series (see the module docstring); keeps one copy of each repeated element."""

    def __init__(self) -> None:
        self._done: dict[tuple, bytes] = {}

    @staticmethod
    def raw_keys(ds) -> dict[int, tuple]:
        """tag -> key of each element not yet decoded, for a data set read as explicit VR little endian."""
        from pydicom.dataelem import RawDataElement

        if getattr(ds, "original_encoding", (None, None)) != (False, True):
            return {}
        cs = ds.get_item(0x00080005)
        charset = None if cs is None else (cs.value if isinstance(cs, RawDataElement) else str(cs.value))
        keys = {}
        for tag in ds.keys():
            e = ds.get_item(tag)
            if isinstance(e, RawDataElement) and e.VR not in (None, "UN") and not e.is_implicit_VR \
                    and e.is_little_endian and stored(tag):
                keys[int(tag)] = (int(tag), e.VR, e.length, e.value, charset)
        return keys

    def elements(self, ds, keys: dict[int, tuple] | None = None) -> tuple[bytes, ...]:
        """Every stored element of ``ds`` (decoded) encoded, in tag order; ``keys`` from ``raw_keys`` before decoding."""
        keys = keys or {}
        out = []
        for elem in ds:
            tag = int(elem.tag)
            if not stored(tag):
                continue
            k = keys.get(tag)
            if k is None:
                out.append(encode_element(elem))
                continue
            b = self._done.get(k)
            if b is None:
                b = self._done[k] = encode_element(elem)
            out.append(b)
        return tuple(out)

    @staticmethod
    def prefix(ds) -> bytes:
        """Preamble + ``DICM`` + file meta (Explicit VR Little Endian), as ``pydicom.dcmwrite`` writes them for ``ds``."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info
        from pydicom.uid import ExplicitVRLittleEndian

        meta = FileMetaDataset(ds.file_meta) if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        if "MediaStorageSOPInstanceUID" not in meta and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        preamble = getattr(ds, "preamble", None)
        if not preamble:  # not read from a Part 10 file: no prefix is stored (and none is written back)
            return b""
        if len(preamble) != 128:
            raise ValueError("the preamble must be 128 bytes long")
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(preamble)
        fp.write(b"DICM")
        if meta:
            write_file_meta_info(fp, meta, enforce_standard=False)
        return fp.getvalue()
