"""Where a batch job's items come from: the :class:`ItemSource` seam and the file sources.

An item source finds the items of a job, digests an item's input (for resume and the audit
trail) and reads it into a :class:`~medgen.io.volume.Volume`. It never opens an input for
writing. Sources must be picklable: Dask workers and GPU processes receive them with the items.

Built in (:func:`open_source` picks one from SRC):

* :class:`FolderSource` - every NIfTI file, every DICOM series per folder (header scan, grouped by
  SeriesInstanceUID), each enhanced multi-frame file; other files are refused items;
* :class:`NiftiFileSource` - one NIfTI file;
* :class:`ManifestSource` - the records of a manifest (``.jsonl``); every file path must stay
  inside the manifest's root (a record that escapes it - ``..``, an absolute path, a symbolic
  link out - is a refused item naming the record, never read).

A PACS source (issue 16) implements the same protocol: ``discover`` returns :class:`Unit` objects
named through :func:`medgen.infer.items.name_outputs`, ``fingerprint`` digests the retrieved
instances, ``load`` decodes them, ``roots`` is empty (nothing local for DST to overlap). Ledger,
resume, quarantine, retries and atomic outputs then come from the job, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from medgen.errors import ConfigError, ReadError, UnsafePathError
from medgen.infer.items import Item, Unit, name_outputs, relpath
from medgen.utils.atomic import TMP_PREFIX
from medgen.utils.hashing import sha256_file, sha256_json
from medgen.utils.paths import is_inside, resolve_inside

if TYPE_CHECKING:  # pragma: no cover
    from medgen.io.volume import Volume

_SKIP_SUFFIXES = (".json", ".jsonl", ".txt", ".md", ".csv", ".tsv", ".yaml", ".yml", ".lock",
                  ".py", ".log")
_SKIP_NAMES = {"dicomdir", "readme", "license"}


@runtime_checkable
class ItemSource(Protocol):
    """What a batch job needs from wherever its inputs live."""

    name: str

    def discover(self, output_format: str, secret: bytes) -> list[Item]:
        """Every item, named (output paths) by :func:`medgen.infer.items.name_outputs`."""

    def fingerprint(self, item: Item) -> str:
        """sha256 over the item's input; raises ReadError when it differs from what was promised."""

    def load(self, item: Item) -> Volume:
        """Read the item (typed :class:`~medgen.errors.ReadError` on a bad input)."""

    def roots(self) -> list[Path]:
        """Local folders/files the inputs live in (DST may overlap none of them)."""


@dataclass(frozen=True)
class FileSource:
    """Shared by the file sources: inputs are local files under ``root``."""

    src: str
    name: str = "files"

    def fingerprint(self, item: Item) -> str:
        """sha256 over (relative path, sha256) of every input file, in path order."""
        pairs = sorted(zip(item.file_rels(), (sha256_file(f) for f in item.files)))
        if item.expected is not None:
            exp = dict(item.expected)
            for rel, digest in pairs:
                if exp.get(rel) not in (None, digest):
                    raise ReadError(rel, "file changed since the manifest was built (sha256 differs)")
        return sha256_json({"v": 1, "files": [list(p) for p in pairs]})

    def load(self, item: Item) -> Volume:
        if item.kind == "nifti":
            from medgen.io.nifti import read_nifti

            return read_nifti(item.files[0], name=item.rel)
        from medgen.io.dicom_read import read_series_files

        return read_series_files([Path(f) for f in item.files], root=item.root)

    def roots(self) -> list[Path]:
        return [Path(self.src)]


def _skippable(p: Path) -> bool:
    n = p.name.lower()
    return n in _SKIP_NAMES or n.endswith(_SKIP_SUFFIXES) or p.name.startswith(TMP_PREFIX)


@dataclass(frozen=True)
class FolderSource(FileSource):
    """Every NIfTI file and DICOM series (per folder) under ``src``."""

    name: str = "folder"

    def discover(self, output_format: str, secret: bytes) -> list[Item]:
        from medgen.io.dicom_read import iter_files, looks_like_nifti, scan_dicom

        src = Path(self.src)
        files = iter_files(src)
        nifti = [p for p in files if looks_like_nifti(p)]
        others = [p for p in files if not looks_like_nifti(p) and not _skippable(p)]
        scan = scan_dicom(others, root=src)
        units = [Unit("nifti", relpath(p, src), [p]) for p in nifti]
        for g in scan.series:
            if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in g.headers):
                units += [Unit("dicom", relpath(f, src), [f]) for f in g.files]  # one volume each
                continue
            by_dir: dict[str, list[Path]] = {}  # copies of a series in two folders stay apart
            for f in g.files:
                by_dir.setdefault(Path(relpath(f, src)).parent.as_posix(), []).append(f)
            units += [Unit("dicom", rel or ".", fs, own_folder=True) for rel, fs in sorted(by_dir.items())]
        units += [Unit("reject", nm, [src / nm], error=f"{nm}: {reason}") for nm, reason in scan.rejects]
        return name_outputs(units, src, output_format, secret)


@dataclass(frozen=True)
class NiftiFileSource(FileSource):
    """A single NIfTI file (its folder is the root; the output is ``DST/<name>``)."""

    name: str = "nifti-file"

    def discover(self, output_format: str, secret: bytes) -> list[Item]:
        p = Path(self.src)
        return name_outputs([Unit("nifti", p.name, [p])], p.parent, output_format, secret)

    def roots(self) -> list[Path]:
        return [Path(self.src)]


@dataclass(frozen=True)
class ManifestSource(FileSource):
    """The records of a manifest; ``root`` overrides the root recorded in its summary."""

    root: str | None = None
    name: str = "manifest"

    def _manifest(self):
        from medgen.manifest import Manifest

        man = Manifest.load(self.src, root=self.root)
        if man.root is None:
            raise ConfigError(Path(self.src).name, "manifest root unknown: pass --root")
        return man

    def roots(self) -> list[Path]:
        return [Path(self.src), self._manifest().root]

    def discover(self, output_format: str, secret: bytes) -> list[Item]:
        man = self._manifest()
        return name_outputs([_record_unit(rec, man.root) for rec in man.records], man.root,
                            output_format, secret)


def _record_unit(rec, root: Path) -> Unit:
    """A manifest record as a unit; a file path that leaves the root refuses the record."""
    rels = [f.path for f in rec.files]
    expected = tuple((f.path, f.sha256) for f in rec.files)
    label = f"record {rec.id}"
    try:
        files = [resolve_inside(root, r, what=label) for r in rels]
    except UnsafePathError as exc:
        return Unit("reject", label, [], id=rec.id, error=f"{label}: {exc.reason}", label=label,
                    file_rels=[])
    if rec.format == "nifti" or len(rels) == 1:
        return Unit(rec.format, rels[0], files, id=rec.id, expected=expected, file_rels=rels)
    parents = sorted({Path(r).parent.as_posix() for r in rels})
    rel = os.path.commonpath(parents) if len(parents) > 1 else parents[0]
    return Unit(rec.format, rel or ".", files, own_folder=True, id=rec.id, expected=expected,
                file_rels=rels)


def open_source(src: str | Path, *, root: str | Path | None = None) -> ItemSource:
    """The file source for SRC: a manifest (``.jsonl``), a NIfTI file or a folder."""
    from medgen.io import is_nifti_path

    p = Path(src).resolve()
    if p.is_file() and p.name.lower().endswith(".jsonl"):
        return ManifestSource(str(p), root=str(Path(root).resolve()) if root else None)
    if root is not None:
        raise ConfigError("--root", "is the root of a manifest's files: SRC must be a manifest")
    if p.is_file() and is_nifti_path(p):
        return NiftiFileSource(str(p))
    if p.is_dir():
        return FolderSource(str(p))
    raise ConfigError("SRC", "not found, or not a folder / NIfTI file / manifest (.jsonl)")


def check_overlap(roots: Sequence[Path], dst: str | Path) -> None:
    """Refuse a DST that overlaps an input in either direction (after resolving links): DST is
    an input root or lies inside one, or an input root (or file) lies inside DST."""
    d = os.path.realpath(dst)
    for r in roots:
        real = os.path.realpath(r)
        if is_inside(d, real) and os.path.isdir(real):
            raise ConfigError("DST", "the output folder is (or lies inside) the input folder; "
                              "choose an output folder outside the inputs")
        if is_inside(real, d):
            raise ConfigError("DST", "the output folder contains the input; choose an output "
                              "folder outside the inputs")
