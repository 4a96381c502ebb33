"""A series' headers as the archive stores them are pydicom's own encoding of each original header,
made once per distinct element while the series is read (``medsr.io.header_elements``)."""
from io import BytesIO

import pydicom
import pytest

import medsr.io.header_elements as he
from medsr.archive.headers import _split_part10, pack_headers, unpack_header
from medsr.io import read_series


def _pydicom_part10(header) -> bytes:
    """What ``pydicom.dcmwrite`` writes for a header as Explicit VR Little Endian (the reference)."""
    ds = header.copy()
    for tag in [t for t in ds.keys() if t.group == 0x0000]:  # a command set is not part of a stored data set
        del ds[tag]
    ds.file_meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def _fresh_encodings(header) -> list[bytes]:
    """Every stored element encoded from a fresh decode of the header: no cache, no raw keys."""
    ds = pydicom.dcmread(BytesIO(_pydicom_part10(header)))
    return [he.encode_element(e) for e in ds if he.stored(int(e.tag))]


@pytest.mark.parametrize("case", ["basic", "implicit", "bigendian", "rescale", "deflate", "command_set", "j2k"])
def test_stored_headers_are_pydicoms_encoding_of_every_original_header(fixture_path, case):
    s = read_series(fixture_path(case))
    assert len(s.header_prefixes) == len(s.header_elements) == len(s.headers) == s.n_slices
    for header, prefix, elements in zip(s.headers, s.header_prefixes, s.header_elements):
        reference = _pydicom_part10(header)
        assert prefix == _split_part10(reference)[0]  # preamble, DICM and file meta as dcmwrite writes them
        assert list(elements) == _fresh_encodings(header)  # each element's bytes, however often it repeats


def test_a_real_series_packs_and_unpacks_to_its_original_headers(philips_ffe):
    s = read_series(philips_ffe)
    packed = pack_headers(s.header_prefixes, s.header_elements)
    for i, header in enumerate(s.headers):
        assert list(s.header_elements[i]) == _fresh_encodings(header)
        back = unpack_header(packed, i)
        assert [e for e in back if he.stored(int(e.tag))] == [e for e in header if he.stored(int(e.tag))]
        assert back.file_meta.MediaStorageSOPInstanceUID == header.SOPInstanceUID


def test_an_element_repeated_across_the_series_is_encoded_once(fixture_path, monkeypatch):
    calls = []
    real = he.encode_element
    monkeypatch.setattr(he, "encode_element", lambda e: calls.append(int(e.tag)) or real(e))
    s = read_series(fixture_path("basic"))
    total = sum(len(e) for e in s.header_elements)
    assert s.n_slices > 1 and len(calls) < total
    # the Study Instance UID is the same in every file: encoded for the first only
    assert calls.count(0x0020000D) == 1
    # the SOP Instance UID differs in every file: encoded for each
    assert calls.count(0x00080018) == s.n_slices


def test_elements_read_from_an_implicit_vr_file_are_each_encoded(fixture_path, monkeypatch):
    """No raw keys for implicit VR data (the VR comes from the dictionary): nothing is taken from a cache."""
    calls = []
    real = he.encode_element
    monkeypatch.setattr(he, "encode_element", lambda e: calls.append(int(e.tag)) or real(e))
    s = read_series(fixture_path("implicit"))
    assert len(calls) == sum(len(e) for e in s.header_elements)


def test_a_header_without_a_preamble_has_no_prefix():
    ds = pydicom.Dataset()
    ds.SOPInstanceUID = "1.2.3"
    assert he.HeaderEncoder.prefix(ds) == b""


def test_a_series_gives_each_header_as_the_part10_bytes_its_archive_gives_back(fixture_path):
    from medsr.archive.headers import header_part10_bytes

    s = read_series(fixture_path("basic"))
    packed = pack_headers(s.header_prefixes, s.header_elements)
    assert len(s.header_bytes) == s.n_slices
    for i, b in enumerate(s.header_bytes):
        assert b == header_part10_bytes(packed, i)
        assert pydicom.dcmread(BytesIO(b)).SOPInstanceUID == s.headers[i].SOPInstanceUID
