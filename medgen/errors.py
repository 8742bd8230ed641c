"""Typed errors shared by every stage, and the exit codes the command line maps them to.

Every error renders as ONE line that names the item (a file name relative to the input root, or a
pseudonymous id) and the reason. Messages never carry header values (names, IDs, dates, UIDs).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2  # usage or configuration error
EXIT_PARTIAL = 3  # finished, but some items failed or were quarantined


class MedgenError(Exception):
    """Base class. ``where`` names the item (file or id), ``reason`` says what is wrong."""

    def __init__(self, where: str | Path | None, reason: str):
        self.where = str(where) if where is not None else None
        self.reason = " ".join(str(reason).split())  # one line, always
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


class ConfigError(MedgenError):
    """Invalid configuration (unknown key, bad value). Exit code 2."""


class ReadError(MedgenError):
    """A file or series could not be read as a medical volume."""


class NotDicomError(ReadError):
    """Not a DICOM file, or truncated beyond repair."""


class UnsupportedSOPClassError(ReadError):
    """A DICOM object that holds no image volume (RT plan, SR, waveform, ...)."""


class InconsistentSeriesError(ReadError):
    """Mixed orientations, sizes or other per-slice geometry within one series."""


class SliceSpacingError(ReadError):
    """Missing slices or uneven spacing; carries the measured gap."""

    def __init__(self, where, reason, *, expected: float, measured: float):
        self.expected = expected
        self.measured = measured
        super().__init__(where, reason)


class NonFiniteVoxelsError(ReadError):
    """NaN or Inf voxels in a volume."""


class WriteError(MedgenError):
    """An output could not be written."""


class KeyRequiredError(MedgenError):
    """A pseudonymization key is needed but none was given."""


class UnsafePathError(MedgenError):
    """A path from an untrusted source (manifest, DICOM attribute, variable) escapes its root."""
