"""Errors medsr raises for problems a user can fix.

Every error carries a one-line message naming the file and the problem, and the
process exit code the CLI uses for it. Nothing in a message may contain patient
names or IDs: name files and UIDs only.
"""
from __future__ import annotations


class MedsrError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is the CLI's exit status."""

    exit_code = 1

    def __init__(self, message: str, *, path: object | None = None):
        self.path = str(path) if path is not None else None
        text = f"{self.path}: {message}" if self.path else message
        super().__init__(text.replace("\n", " "))


class InputError(MedsrError):
    """The input path is missing, unreadable or holds no usable images."""

    exit_code = 2


class SeriesError(InputError):
    """The input holds images, but not exactly one supported MR series."""

    exit_code = 3


class BudgetError(MedsrError):
    """No representation of the series fits the --ratio byte budget: nothing was restored or written."""


class ArchiveError(MedsrError):
    """An archive is missing, corrupt, of an unknown version or fails its checksums."""

    exit_code = 4


class OutputError(MedsrError):
    """The output exists (and --force was not given) or cannot be written."""

    exit_code = 5


class ModelError(MedsrError):
    """A model name, weights file or checksum is wrong."""

    exit_code = 6


class QualityGateError(MedsrError):
    """The audit is below a --min-* gate: nothing was written."""

    exit_code = 7


class DicomError(MedsrError):
    """A derived DICOM object could not be built correctly."""

    exit_code = 8


EXIT_CODES = {
    0: "success",
    1: "other medsr error",
    2: "bad input path or unreadable input",
    3: "input is not exactly one supported MR series",
    4: "archive missing, corrupt or failing verification",
    5: "output exists or cannot be written",
    6: "model name, weights or checksum problem",
    7: "quality gate not met (nothing written)",
    8: "derived DICOM could not be built",
    9: "batch: at least one series failed (see the manifest)",
    130: "interrupted",
}
