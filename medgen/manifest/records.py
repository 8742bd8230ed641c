"""Manifest records, reading/writing and the canonical digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medgen.config.base import StrictModel
from medgen.errors import ConfigError
from medgen.utils.atomic import atomic_write_text
from medgen.utils.hashing import canonical_json, sha256_bytes

MANIFEST_VERSION = 1


class FileEntry(StrictModel):
    path: str  # POSIX path relative to the manifest root
    sha256: str
    size: int


class Record(StrictModel):
    id: str  # keyed hash: stable across rebuilds with the same key
    subject: str  # keyed hash of the subject (PatientID / BIDS sub-label); used for splitting
    format: Literal["dicom", "nifti"]
    modality: str = "unknown"
    shape: list[int]
    spacing: list[float]
    files: list[FileEntry]
    split: str | None = None
    synthetic: bool = False
    labels: dict[str, Any] = Field(default_factory=dict)  # conditions / classes / attributes
    extra: dict[str, Any] = Field(default_factory=dict)  # e.g. run id + seed for synthetic data

    def canonical(self) -> dict:
        return self.model_dump(mode="json")


def manifest_digest(records: list[Record]) -> str:
    """sha256 of the canonical form: records sorted by id, each as canonical JSON, newline-joined."""
    lines = [canonical_json(r.canonical()) for r in sorted(records, key=lambda r: r.id)]
    return sha256_bytes(b"medgen-manifest-v1\n" + b"\n".join(lines))


class Manifest:
    """Records plus where their files live."""

    def __init__(self, records: list[Record], root: Path | None = None, path: Path | None = None,
                 summary: dict | None = None):
        self.records = sorted(records, key=lambda r: r.id)
        self.root = Path(root) if root is not None else None
        self.path = path
        self.summary = summary or {}

    @property
    def digest(self) -> str:
        return manifest_digest(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def paths(self, record: Record) -> list[Path]:
        if self.root is None:
            raise ConfigError(None, "manifest root unknown: pass --root")
        return [self.root / f.path for f in record.files]

    def read(self, record: Record, **kwargs):
        """Read a record's volume (a DICOM series, multi-frame file or NIfTI file)."""
        from medgen.io import read_volume

        paths = self.paths(record)
        if record.format == "nifti" or len(paths) == 1:
            return read_volume(paths[0], root=self.root, **kwargs)
        from medgen.io.dicom_read import read_series_files

        return read_series_files(paths, root=self.root, **kwargs)

    # --- files ------------------------------------------------------------------------------
    @staticmethod
    def summary_path(path: Path) -> Path:
        return path.with_name(path.name.removesuffix(".jsonl") + ".summary.json")

    @staticmethod
    def rejects_path(path: Path) -> Path:
        return path.with_name(path.name.removesuffix(".jsonl") + ".rejects.jsonl")

    def write(self, path: str | Path, *, rejects: list[dict] | None = None,
              extra_summary: dict | None = None) -> str:
        path = Path(path)
        text = "".join(json.dumps(r.canonical(), sort_keys=True) + "\n" for r in self.records)
        atomic_write_text(path, text)
        summary = {
            "kind": "medgen-manifest",
            "version": MANIFEST_VERSION,
            "digest": self.digest,
            "n_records": len(self.records),
            "n_rejects": len(rejects or []),
            "splits": {s: len(self.split(s)) for s in sorted({r.split for r in self.records if r.split})},
        }
        if self.root is not None:
            import os

            summary["root"] = Path(os.path.relpath(self.root.resolve(), path.parent.resolve())).as_posix()
        summary.update(extra_summary or {})
        atomic_write_text(self.summary_path(path), json.dumps(summary, indent=1, sort_keys=True) + "\n")
        rp = self.rejects_path(path)
        if rejects:
            atomic_write_text(rp, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects))
        elif rp.exists():
            rp.unlink()
        self.path = path
        self.summary = summary
        return self.digest

    @classmethod
    def load(cls, path: str | Path, root: str | Path | None = None) -> Manifest:
        path = Path(path)
        if not path.exists():
            raise ConfigError(path.name, "manifest not found")
        records = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(Record.model_validate_json(line))
            except Exception as exc:
                raise ConfigError(f"{path.name}:{i}", f"not a manifest record ({type(exc).__name__})") from None
        summary = {}
        sp = cls.summary_path(path)
        if sp.exists():
            summary = json.loads(sp.read_text())
        if root is None and "root" in summary:
            root = (path.parent / summary["root"]).resolve()
        return cls(records, root, path, summary)
