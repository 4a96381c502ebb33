"""Compact, exact storage of every original DICOM header.

Each header is split into its top-level data elements, each encoded as Explicit VR
Little Endian bytes (``medsr.io.header_elements``, while the series is read); identical
element encodings are stored once. A series of 192
Siemens files (19 MB of headers, mostly identical CSA blocks) packs to ~60 kB.
``pack_headers``/``unpack_header`` are exact inverses on the element encodings.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np

from ..io.classify import PART10_PREFIX_BYTES, has_part10_magic


@dataclass(frozen=True)
class PackedHeaders:
    blob: np.ndarray  # uint8: unique element encodings, concatenated
    blob_offsets: np.ndarray  # int64 (u + 1,)
    element_ids: np.ndarray  # int32: per-slice lists of unique-element indices, concatenated
    slice_offsets: np.ndarray  # int64 (n + 1,)
    meta: np.ndarray  # uint8: per-slice Part 10 prefix (preamble + file meta), concatenated
    meta_offsets: np.ndarray  # int64 (n + 1,)


def _split_part10(data: bytes) -> tuple[bytes, bytes]:
    """Split Part 10 bytes into (preamble + 'DICM' + file meta, dataset body)."""
    import struct

    if not has_part10_magic(data):
        return b"", data
    # (0002,0000) UL group length directly after DICM: tag(4) VR(2) len(2) value(4)
    glen = struct.unpack("<I", data[PART10_PREFIX_BYTES + 8:PART10_PREFIX_BYTES + 12])[0]
    end = PART10_PREFIX_BYTES + 12 + glen
    return data[:end], data[end:]


def pack_headers(prefixes, elements) -> PackedHeaders:
    """Pack headers given as their Part 10 prefixes and element encodings (``Series.header_prefixes`` and
    ``Series.header_elements``, made by ``medsr.io.header_elements`` as the series was read)."""
    uniq: dict[bytes, int] = {}
    ids: list[int] = []
    slice_offsets = [0]
    for elems in elements:
        ids.extend(uniq.setdefault(e, len(uniq)) for e in elems)
        slice_offsets.append(len(ids))
    metas = list(prefixes)
    if len(metas) != len(slice_offsets) - 1:
        raise ValueError(f"{len(metas)} prefixes for {len(slice_offsets) - 1} headers")
    blobs = list(uniq)
    blob_offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    meta_offsets = np.cumsum([0] + [len(m) for m in metas]).astype(np.int64)
    return PackedHeaders(
        blob=np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(),
        blob_offsets=blob_offsets,
        element_ids=np.asarray(ids, dtype=np.int32),
        slice_offsets=np.asarray(slice_offsets, dtype=np.int64),
        meta=np.frombuffer(b"".join(metas), dtype=np.uint8).copy(),
        meta_offsets=meta_offsets,
    )


def header_part10_bytes(p: PackedHeaders, i: int) -> bytes:
    """The i-th header as Part 10 bytes (Explicit VR Little Endian, no Pixel Data)."""
    blob = p.blob.tobytes()
    ids = p.element_ids[p.slice_offsets[i]:p.slice_offsets[i + 1]]
    body = b"".join(blob[p.blob_offsets[k]:p.blob_offsets[k + 1]] for k in ids)
    meta = p.meta[p.meta_offsets[i]:p.meta_offsets[i + 1]].tobytes()
    return meta + body


def unpack_header(p: PackedHeaders, i: int):
    """The i-th original header as a pydicom Dataset (with its file meta).

    A header that does not decode (a damaged archive) raises ``ArchiveError``, one line
    (pydicom's message is dropped: it may quote element values).
    """
    import pydicom

    from ..errors import ArchiveError

    try:
        with warnings.catch_warnings(), pydicom.config.disable_value_validation():
            # an original's over-long value was reported when it was archived; kept as it was
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(header_part10_bytes(p, i)), force=True)
            ds.walk(lambda _ds, _elem: None)  # decode every element now
            return ds
    except Exception as e:  # noqa: BLE001 - any pydicom error on damaged bytes
        raise ArchiveError(f"stored header {i} cannot be decoded ({type(e).__name__}): the archive is "
                           "damaged") from None
