"""``--delete-original``: delete source files only when a written archive provably holds them.

Called by ``medsr.flow.pipeline.archive_series`` after the archive was written (and by the Orthanc
plugin through it). Every check runs before the first file is deleted, and any failure
deletes nothing:

1. the archive file is re-read from disk (its cached pages dropped first where the OS
   allows) and verified: structure, every dataset's sha256, every header;
2. it holds this series (same Series Instance UID, one recorded file per source file);
3. each source file is read again and its sha256 equals the one recorded for it (so a
   file changed since it was read, or an archive swapped meanwhile, stops everything);
4. every folder holding a source file is writable (so deletion cannot stop half-way
   for lack of permission).

Only then are the files unlinked. An unlink that still fails (e.g. an I/O error) stops
with an ``OutputError`` saying how many were deleted: those are all in the verified archive.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..archive import read_archive, verify_archive
from ..errors import ArchiveError, InputError, OutputError


def _drop_cache(path: Path) -> None:
    """Ask the kernel to forget cached pages of ``path`` so the re-read comes from the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


from ..io.digest import file_sha256 as _sha256


def delete_verified_originals(archive: Path, series) -> tuple[Path, ...]:
    """Delete ``series.source_files`` after the checks in the module docstring; returns them."""
    archive = Path(archive)
    _drop_cache(archive)
    check = verify_archive(archive)
    if not check.ok:
        raise ArchiveError("written archive failed verification; originals were NOT deleted: "
                           + "; ".join(check.problems), path=archive)
    try:
        data = read_archive(archive)  # verifies every checksum again
    except ArchiveError as e:
        raise ArchiveError(f"written archive could not be re-read; originals were NOT deleted ({e})",
                           path=archive) from None
    files = tuple(Path(f) for f in series.source_files)
    recorded = tuple(data.source_sha256)
    if data.info.series_uid != series.series_uid or len(recorded) != len(files):
        raise ArchiveError("the archive does not hold exactly this series (Series Instance UID or file count "
                           "differ); originals were NOT deleted", path=archive)
    for f, want in zip(files, recorded):
        try:
            digest = _sha256(f)
        except OSError as e:
            raise InputError(f"cannot re-read the original ({e.strerror or type(e).__name__}); nothing was deleted",
                             path=f) from None
        if digest != want:
            raise ArchiveError(f"original {f.name} does not match its sha256 in the archive (changed since it was "
                               "read?); nothing was deleted", path=f)
    for folder in sorted({f.parent for f in files}):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError("folder of original files is not writable, so they cannot be deleted; nothing was "
                              "deleted (the archive is written and verified)", path=folder)
    deleted: list[Path] = []
    for f in files:
        try:
            f.unlink()
        except OSError as e:
            raise OutputError(f"deleting the originals stopped after {len(deleted)} of {len(files)} files "
                              f"({e.strerror or type(e).__name__}); every deleted file is in the verified archive",
                              path=f) from None
        deleted.append(f)
    return tuple(deleted)
