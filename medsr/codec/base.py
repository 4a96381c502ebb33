"""The base layer: how the low-res slices themselves are stored (pure functions).

Three bases, recorded in every archive as the root attribute ``base``:

- ``lossless`` (``BASE_LOSSLESS``): the low-res integers exactly, in the ``/lowres``
  dataset (HDF5 gzip + shuffle). Archives written before the base existed are lossless.
- ``near-lossless`` (``BASE_NEAR_LOSSLESS``, codec id ``charls-jpegls-near-v1``): each
  low-res slice coded as one JPEG-LS codestream (ISO/IEC 14495-1, CharLS through
  ``pyjpegls``) with ``NEAR = k``: every decoded low-res pixel is within ``+-k`` of the
  stored value (a hard bound of the standard, checked after coding here). The values are
  shifted by the stack minimum (``base_min``) so signed data codes as unsigned, and the
  decoded values are clipped back into ``[base_min, base_max]`` (which only moves them
  towards the true values, so the bound still holds).
- ``lossy`` (``BASE_LOSSY``): the same JPEG-LS coding with a large NEAR, by default
  ``lossy_near(window width)`` = 3% of the low-res window (at least ``DEFAULT_NEAR + 1``):
  preview-quality ratios (~230-360:1 measured), restored with the lossy-base tier model where
  one is shipped (trained on this very base) and projected onto the +-NEAR box
  (``consistency_tolerance``), labelled lossy in the DICOM and the report.

Restore decodes the base, runs the network, then projects onto the *decoded* base, so an
archive's stored audit (measured from the decoded base at archive time) describes exactly
what a later restore writes. The default NEAR and the choice of the default base come from
measurement: docs/base-codec.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MedsrError

BASE_LOSSLESS = "lossless"
BASE_NEAR_LOSSLESS = "near-lossless"
BASE_LOSSY = "lossy"  # JPEG-LS with a large NEAR (LOSSY_NEAR_FRACTION of the window): preview-quality ratios
BASE_LOSSY_J2K = "lossy-j2k"  # JPEG 2000 (irreversible) of each low-res slice, rate set by --ratio (codec/rate.py)
JPEGLS_NEAR_ID = "charls-jpegls-near-v1"
J2K_BASE_ID = "openjpeg-j2k-lossy-v1"
DEFAULT_BASE = BASE_NEAR_LOSSLESS  # measured: docs/base-codec.md
DEFAULT_NEAR = 2  # measured: docs/base-codec.md
LOSSY_NEAR_FRACTION = 0.03  # lossy base: NEAR = 3% of the low-res window width (docs/base-codec.md)
MAX_NEAR = 255  # JPEG-LS limit (also <= MAXVAL / 2, which encode_base guarantees)


class BaseCodecError(MedsrError, ValueError):
    """A base request or the data cannot be coded with it (one-line message saying why)."""


@dataclass(frozen=True)
class BaseCodec:
    """One way of storing the low-res slices, named by the archive's ``base`` attribute (its ``id``).

    Everything that depends on the base asks its object (``get_base(id)``): whether it is coded
    (codestreams in ``/lowres_coded``) and lossy, how far restore's projection may stray from the
    decoded values (``tolerance``), how it is described (audit, report, DICOM Derivation
    Description) and how one slice decodes. Coding itself: ``encode_base`` (JPEG-LS) and
    ``medsr.codec.rate`` (rate searches, the JPEG 2000 base).
    """

    id: str
    codec_id: str  # the coding standard's id recorded in the audit ("" = the /lowres dataset itself)
    lossy: bool  # the decoded low-res values are only known within +-NEAR
    offered: bool  # a ``--base`` choice (lossy-j2k is chosen by ``--ratio`` only)
    how: str  # "JPEG-LS NEAR={near}" style phrase, {near} filled in
    quality: str = ""  # how the description names it: "near-lossless", "lossy, preview quality", "lossy"

    @property
    def coded(self) -> bool:
        return bool(self.codec_id)

    def tolerance(self, near: int) -> float:
        """``consistency_tolerance`` of this base (see there)."""
        return float(near) + 0.5 if self.lossy else 0.0

    def describe(self, near: int) -> str:
        """One line for provenance (audit ``base_description``)."""
        if not self.coded:
            return "lossless"
        return f"{self.quality} ({self.how.format(near=near)})"

    def derivation(self, near: int) -> str:
        """The DICOM Derivation Description's phrase for this base ("" for lossless)."""
        if not self.coded:
            return ""
        if not self.lossy:
            return f"low-res base stored near-losslessly ({self.how.format(near=near)}), "
        preview = self.quality.removeprefix("lossy")  # ", preview quality" or ""
        return f"LOSSY low-res base{preview} ({self.how.format(near=near)}), "

    def decode_slice(self, codestream: bytes, shape: tuple[int, int]) -> np.ndarray:
        """One codestream of this base -> int64 (H, W), before the stack offset is added back."""
        if not self.coded:
            raise BaseCodecError(f"the {self.id} base stores no codestreams")
        return _decode_j2k(codestream, shape) if self.codec_id == J2K_BASE_ID else decode_jpegls(codestream, shape)


_JPEGLS_HOW = "JPEG-LS NEAR={near}: every low-res value within +-{near}"
BASE_CODECS: dict[str, BaseCodec] = {c.id: c for c in (
    BaseCodec(BASE_LOSSLESS, "", lossy=False, offered=True, how=""),
    BaseCodec(BASE_NEAR_LOSSLESS, JPEGLS_NEAR_ID, lossy=False, offered=True, how=_JPEGLS_HOW, quality="near-lossless"),
    BaseCodec(BASE_LOSSY, JPEGLS_NEAR_ID, lossy=True, offered=True, how=_JPEGLS_HOW, quality="lossy, preview quality"),
    BaseCodec(BASE_LOSSY_J2K, J2K_BASE_ID, lossy=True, offered=False, quality="lossy",
              how="JPEG 2000 of each low-res slice: every low-res value within +-{near}, measured when it was coded"),
)}
BASES = tuple(c.id for c in BASE_CODECS.values() if c.offered)  # what --base offers
CODED_BASES = tuple(c.id for c in BASE_CODECS.values() if c.coded)  # stored as codestreams in /lowres_coded
KNOWN_BASES = tuple(BASE_CODECS)  # what a reader accepts


def get_base(kind: str) -> BaseCodec:
    """The base codec object of an archive ``base`` value; ``BaseCodecError`` for one this medsr does not know."""
    try:
        return BASE_CODECS[kind]
    except (KeyError, TypeError):
        raise BaseCodecError(f"unknown base {kind!r} (one of: {', '.join(KNOWN_BASES)})") from None


@dataclass(frozen=True)
class BaseMeta:
    """What a reader needs besides the codestreams (the archive stores these as root attributes)."""

    base: str
    near: int = 0
    vmin: int = 0  # stack minimum = offset subtracted before coding (base_min)
    vmax: int = 0  # stack maximum (base_max); decoded values are clipped into [vmin, vmax]
    shape: tuple[int, int, int] = (0, 0, 0)
    dtype: str = "uint16"

    @property
    def codec(self) -> BaseCodec:
        return get_base(self.base)

    def describe(self) -> str:
        """One line for provenance (the audit's ``base_description``)."""
        return self.codec.describe(self.near)

    def to_dict(self) -> dict:
        d = {"base": self.base, "base_near": int(self.near)}
        if self.codec.coded:
            d["base_codec"] = self.codec.codec_id
        return d


def load_jpegls():
    """Import ``jpeg_ls`` so that its CharLS resolves its own symbols (``RTLD_DEEPBIND``).

    Inside Orthanc, DCMTK's older CharLS (libdcmtkcharls) is loaded globally and exports the
    same C names (``JpegLsEncode``/``JpegLsDecode``); pyjpegls' extension would call into it
    and crash the whole PACS. Loading the extension with ``RTLD_DEEPBIND`` binds it to its own
    copy. The Orthanc plugin calls this before anything imports pydicom's pixel handlers; if
    the extension was already loaded plainly inside Orthanc, coding refuses with an error
    instead of crashing.
    """
    import os
    import sys

    global _DEEPBOUND
    if "_CharLS" not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        old = sys.getdlopenflags()
        sys.setdlopenflags(old | os.RTLD_DEEPBIND)
        try:
            import _CharLS  # noqa: F401  (pyjpegls' extension module)
            _DEEPBOUND = True
        except ImportError:
            pass
        finally:
            sys.setdlopenflags(old)
    if "orthanc" in sys.modules and not _DEEPBOUND:
        raise BaseCodecError("JPEG-LS (pyjpegls) was loaded inside Orthanc before medsr could isolate it from "
                             "DCMTK's CharLS; refusing to code (use base 'lossless' here, or load the medsr "
                             "plugin script first)")
    import jpeg_ls

    return jpeg_ls


_DEEPBOUND = False


def lossy_near(window_width: float, fraction: float = LOSSY_NEAR_FRACTION) -> int:
    """JPEG-LS NEAR of a lossy base: ``fraction`` of the low-res window width, within 1..``MAX_NEAR``.

    The one rule shared by the archive (``--base lossy``) and training (``RandBaseCode``),
    so the lossy tier is trained on the base it restores from.
    """
    return min(MAX_NEAR, max(1, int(round(float(fraction) * float(window_width)))))


def consistency_tolerance(base: str, near: int) -> float:
    """How far restore's data-consistency projection lets a 4x4 block mean stray from the decoded base.

    Exact (0) for the lossless and near-lossless bases (measured better there); for the lossy base
    the decoded values are only known within +-NEAR (+0.5 for the operator's rounding), so the
    restore is projected onto that box instead of onto the coding noise (measured: +0.1 to +0.4 dB
    foreground with the lossy-base tier, docs/base-codec.md). Archive and restore both call this.
    """
    return get_base(base).tolerance(near)


def check_base(kind: str, near: int | None = None, window_width: float | None = None) -> tuple[str, int]:
    """Validate a (base, near) request -> (base, near). ``near`` None: ``DEFAULT_NEAR`` for
    near-lossless; for lossy, ``lossy_near(window_width)`` (at least ``DEFAULT_NEAR + 1``)."""
    if kind not in BASES:
        raise BaseCodecError(f"unknown base {kind!r} (one of: {', '.join(BASES)})")  # lossy-j2k: --ratio only
    if kind == BASE_LOSSLESS:
        return kind, 0
    if kind == BASE_LOSSY and near is None:
        if window_width is None:
            raise BaseCodecError("a lossy base without NEAR needs the low-res window to choose it")
        return kind, max(DEFAULT_NEAR + 1, lossy_near(window_width))
    k = DEFAULT_NEAR if near is None else int(near)
    if not 1 <= k <= MAX_NEAR:
        raise BaseCodecError(f"{kind} NEAR must be 1..{MAX_NEAR} (got {near}); use base 'lossless' for 0")
    return kind, k


def supports_near_lossless(lowres: np.ndarray) -> str:
    """'' when ``lowres`` can be JPEG-LS coded, else the reason it cannot."""
    a = np.asarray(lowres)
    if not np.issubdtype(a.dtype, np.integer):
        return f"{a.dtype} pixels are not integers"
    if a.ndim != 3:
        return f"expected an (n, h, w) stack, got shape {a.shape}"
    if a.size and int(a.max()) - int(a.min()) >= (1 << 16):
        return "the value range exceeds 16 bits"
    return ""


def _bits(span: int, near: int) -> int:
    # MAXVAL = 2**bits - 1 must cover the span and be >= 2 * NEAR (JPEG-LS: NEAR <= MAXVAL / 2)
    return max(2, int(span).bit_length(), int(2 * near).bit_length())


def encode_base(lowres: np.ndarray, kind: str = DEFAULT_BASE, near: int | None = None) -> tuple[list[bytes], BaseMeta]:
    """Code the low-res stack ``(n, h, w)`` -> (one codestream per slice, meta).

    ``lossless`` returns no codestreams (the archive keeps ``/lowres`` itself).
    ``near-lossless`` returns JPEG-LS codestreams with ``NEAR = near``; raises
    ``BaseCodecError`` for non-integer data or a value range over 16 bits.
    """
    a = np.asarray(lowres)
    kind, k = check_base(kind, near, _window_width(a) if kind == BASE_LOSSY and near is None else None)
    if a.ndim != 3:
        raise BaseCodecError(f"expected an (n, h, w) stack, got shape {a.shape}")
    if kind == BASE_LOSSLESS:
        return [], BaseMeta(BASE_LOSSLESS, 0, shape=tuple(a.shape), dtype=str(a.dtype))
    why = supports_near_lossless(a)
    if why:
        raise BaseCodecError(f"{kind} base needs integer data within 16 bits: {why} (use base 'lossless')")
    encode_buffer = load_jpegls().encode_buffer
    vmin = int(a.min()) if a.size else 0
    vmax = int(a.max()) if a.size else 0
    bits = _bits(vmax - vmin, k)
    n, h, w = a.shape
    shifted = (a.astype(np.int64) - vmin).astype("<u2" if bits > 8 else np.uint8)
    try:
        out = [bytes(encode_buffer(np.ascontiguousarray(s).tobytes(), h, w, 1, bits, lossy_error=k)) for s in shifted]
    except RuntimeError as e:  # CharLS: e.g. "destination buffer is too small" for tiny, incompressible slices
        raise BaseCodecError(f"JPEG-LS cannot code these {h}x{w} slices ({str(e)[:80]})") from None
    return out, BaseMeta(kind, k, vmin, vmax, (n, h, w), str(a.dtype))


def decode_base(codestreams, meta: BaseMeta) -> np.ndarray:
    """Inverse of ``encode_base`` for the coded bases (near-lossless, lossy): codestreams (list or
    ``pack_codestreams`` output) -> the decoded ``(n, h, w)`` stack in ``meta.dtype``. An empty codestream
    (a slice an archive holds whole, ``medsr.codec.rate.without_slices``) decodes to ``meta.vmin``."""
    codec = get_base(meta.base)
    if not codec.coded:
        raise BaseCodecError(f"decode_base decodes the coded bases only (got {meta.base!r})")
    if isinstance(codestreams, tuple) and len(codestreams) == 2 and isinstance(codestreams[0], np.ndarray):
        codestreams = unpack_codestreams(*codestreams)
    n, h, w = meta.shape
    if len(codestreams) != n:
        raise BaseCodecError(f"{len(codestreams)} codestreams for {n} slices")
    dt = np.dtype(meta.dtype)
    out = np.empty((n, h, w), dtype=dt)
    for i, c in enumerate(codestreams):
        if not len(c):  # a slice held whole elsewhere (the archive's floor): no base; its reader rebuilds it
            out[i] = np.asarray(meta.vmin).astype(dt)
            continue
        try:
            pix = codec.decode_slice(c, (h, w))
        except BaseCodecError as e:
            raise BaseCodecError(f"slice {i}: {e}") from None
        out[i] = np.clip(pix + meta.vmin, meta.vmin, meta.vmax).astype(dt)
    return out


def _decode_j2k(codestream: bytes, shape: tuple[int, int]) -> np.ndarray:
    """One JPEG 2000 codestream (a ``lossy-j2k`` base slice) -> int64 (H, W) (``j2k_pad.decode_j2k``)."""
    from .j2k_pad import decode_j2k

    if bytes(codestream[:2]) != b"\xff\x4f":
        raise BaseCodecError("not a JPEG 2000 codestream")
    try:
        return decode_j2k(codestream, shape)
    except ValueError as e:
        raise BaseCodecError(str(e)[:120]) from None
    except Exception as e:  # noqa: BLE001 - OpenJPEG's errors on damaged data: one line
        raise BaseCodecError(f"JPEG 2000 decode failed ({type(e).__name__})") from None


def decode_jpegls(codestream: bytes, shape: tuple[int, int]) -> np.ndarray:
    """One JPEG-LS codestream -> int64 (H, W); ``BaseCodecError`` when it is not ``shape``."""
    h, w = shape
    buf, hdr = load_jpegls().decode_buffer(bytes(codestream))
    if (int(hdr.get("height", h)), int(hdr.get("width", w))) != (h, w):
        raise BaseCodecError(f"codestream is {hdr.get('height')}x{hdr.get('width')}, expected {h}x{w}")
    pix = np.frombuffer(bytes(buf), dtype="<u2" if len(buf) == 2 * h * w else np.uint8)
    if pix.size != h * w:
        raise BaseCodecError(f"decoded {len(buf)} bytes for {h}x{w} pixels")
    return pix.reshape(h, w).astype(np.int64)


def pack_codestreams(codestreams: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 concatenation, int64 offsets of length n + 1); slice i is data[off[i]:off[i+1]]."""
    offsets = np.zeros(len(codestreams) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in codestreams])
    data = np.frombuffer(b"".join(codestreams), dtype=np.uint8).copy()
    return data, offsets


def unpack_codestreams(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    o = np.asarray(offsets, dtype=np.int64)
    d = np.asarray(data, dtype=np.uint8)
    if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != d.size or np.any(np.diff(o) < 0):
        raise BaseCodecError("codestream offsets do not match the coded data")
    return [d[o[i]:o[i + 1]].tobytes() for i in range(len(o) - 1)]


@dataclass(frozen=True)
class PreparedBase:
    """A coded base ready to write: what restore will see (``decoded``) and what is stored."""

    meta: BaseMeta
    decoded: np.ndarray
    data: np.ndarray | None = None  # uint8 codestreams (near-lossless)
    offsets: np.ndarray | None = None
    note: str = ""  # why the default base was not used, if it was not

    def provenance(self) -> dict:
        """Audit provenance keys: base, base_near (and base_codec, base_note)."""
        d = self.meta.to_dict()
        d["base_description"] = self.meta.describe()
        if self.note:
            d["base_note"] = self.note
        return d

    @property
    def coded_bytes(self) -> int:
        return int(self.data.size) if self.data is not None else 0


def prepare_base(lowres: np.ndarray, kind: str | None = None, near: int | None = None) -> PreparedBase:
    """Code, pack and decode again (the archive writer's one call). Lossless: ``decoded is lowres``.

    ``kind`` None: ``DEFAULT_BASE`` where the data allow it, else lossless (``note`` says why).
    """
    requested = kind
    kind, near, note = resolve_base(kind, near, lowres)
    try:
        streams, meta = encode_base(lowres, kind, near)
    except BaseCodecError as e:
        if requested is not None:  # asked for explicitly: say why it cannot be done
            raise
        kind, near, note = BASE_LOSSLESS, 0, f"lossless base: {e}"  # the default falls back (found by fuzzing)
        streams, meta = encode_base(lowres, kind, near)
    if meta.base == BASE_LOSSLESS:
        return PreparedBase(meta, np.asarray(lowres), note=note)
    data, offsets = pack_codestreams(streams)
    decoded = decode_base(streams, meta)
    err = int(np.abs(decoded.astype(np.int64) - np.asarray(lowres).astype(np.int64)).max()) if decoded.size else 0
    if err > meta.near:  # the standard guarantees it; never store a base that breaks its recorded bound
        raise BaseCodecError(f"JPEG-LS NEAR={meta.near} decoded with error {err} > {meta.near}")
    return PreparedBase(meta, decoded, data, offsets)


def resolve_base(kind: str | None, near: int | None, lowres: np.ndarray) -> tuple[str, int, str]:
    """Archive options -> (base, near, note). ``kind`` None: ``DEFAULT_BASE`` where the data allow it,
    else lossless with a note saying why. An explicit unsupported request raises."""
    if kind is None:
        why = supports_near_lossless(lowres) if DEFAULT_BASE == BASE_NEAR_LOSSLESS else ""
        if why:
            return BASE_LOSSLESS, 0, f"lossless base: {why}"
        kind = DEFAULT_BASE
    b, k = check_base(kind, near, _window_width(lowres) if kind == BASE_LOSSY and near is None else None)
    return b, k, ""


def _window_width(lowres: np.ndarray) -> float:
    from .scaling import intensity_window

    return intensity_window(np.asarray(lowres)).width
