"""Where a batch job's outputs go: the :class:`OutputSink` seam and the folder sink.

A sink checks that an item's output target is safe, writes an output atomically (complete or
absent), digests what it wrote, and later tells whether recorded outputs are still there
unchanged (resume). Sinks must be picklable (workers write outputs themselves).

:class:`FolderSink` writes under DST. Every output path, whatever its origin (a folder walk, a
manifest record, DICOM attributes a plug-in source used for naming, pipeline variables), goes
through :func:`medgen.utils.paths.output_path`: it must resolve inside DST - ``..``, absolute
paths and symbolic links that lead out are refused - and may never be an input file (same path
or same inode). The check runs at discovery (the item is quarantined unread) and again just
before the write (a link planted while the job ran).

A PACS sink (issue 16) implements the same protocol: ``check`` validates the target study,
``write`` stores a derived series and returns what the PACS acknowledged, ``current`` asks the
PACS whether the recorded instances are still there. The job's state (ledger, summary, lock)
stays in the local DST folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medgen.utils.hashing import sha256_file
from medgen.utils.paths import output_path

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.items import Item
    from medgen.io.volume import Volume


@dataclass
class Written:
    """What a sink wrote for one item: files (path relative to DST, sha256) and DICOM UIDs."""

    outputs: list[dict[str, str]]
    uids: dict[str, Any] | None = None


@runtime_checkable
class OutputSink(Protocol):
    """What a batch job needs from wherever its outputs go."""

    name: str

    def check(self, item: Item) -> None:
        """Raise :class:`~medgen.errors.UnsafePathError` when the item's target is unsafe."""

    def write(self, item: Item, vol: Volume, *, job_digest: str, derivation: str) -> Written:
        """Write ``vol`` as the item's output, atomically."""

    def current(self, item: Item, recorded: dict[str, str]) -> bool:
        """True when the recorded outputs (path -> sha256) are all still there, unchanged."""


@dataclass(frozen=True)
class FolderSink:
    """Outputs as files under ``dst`` (NIfTI files or DICOM series folders)."""

    dst: str
    name: str = "folder"

    def target(self, item: Item) -> Path:
        """The item's output path under DST (checked: inside DST, never an input)."""
        what = f"record {item.id}" if item.expected is not None else item.rel
        return output_path(self.dst, item.out_rel or "", inputs=item.files,
                           what=f"{what} (output)")

    def check(self, item: Item) -> None:
        self.target(item)

    def write(self, item: Item, vol: Volume, *, job_digest: str, derivation: str) -> Written:
        """NIfTI: temp + fsync + rename; DICOM: the whole series folder replaced at once."""
        out = self.target(item)
        uids = None
        if item.out_format == "nifti":
            from medgen.io.nifti import write_nifti

            # a predictor may mark its outputs (translate: synthetic) via meta["output_descrip"]
            write_nifti(vol, out, dtype="float32",
                        descrip=str(vol.meta.get("output_descrip") or "medgen"))
        else:
            from medgen.io.dicom_write import write_dicom_series

            res = write_dicom_series(vol, out, digest=job_digest, derivation=derivation)
            uids = {"series_instance_uid": res["series_instance_uid"],
                    "sop_instance_uids": res["sop_instance_uids"]}
        return Written([{"path": p, "sha256": h} for p, h in self.files(item)], uids)

    def files(self, item: Item) -> list[tuple[str, str]]:
        """(path relative to DST, sha256) of every file of the item's output (none: absent).
        Symbolic links are never followed: an output is a plain file or a folder of them."""
        p = Path(self.dst) / (item.out_rel or "")
        if p.is_symlink():
            return []
        if p.is_file():
            return [(item.out_rel, sha256_file(p))]
        out = []
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for f in sorted(filenames):
                    q = Path(dirpath) / f
                    if not q.is_symlink() and q.is_file():
                        out.append((q.relative_to(self.dst).as_posix(), sha256_file(q)))
        return sorted(out)

    def current(self, item: Item, recorded: dict[str, str]) -> bool:
        return bool(recorded) and dict(self.files(item)) == recorded
