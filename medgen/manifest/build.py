"""Build a manifest from a folder of DICOM series and/or NIfTI files.

Every file is hashed (sha256) and every series is checked for geometry (orientation, sizes, slice
spacing) from its headers, without decoding pixels - a folder of 1,000 small files takes seconds.
Bad files and series go to a reject list with a one-line reason; the good ones still make a
manifest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from medgen.errors import MedgenError
from medgen.io.dicom_read import iter_files, looks_like_nifti, read_series_files, scan_dicom
from medgen.keys import Key
from medgen.manifest.records import FileEntry, Manifest, Record
from medgen.utils.hashing import sha256_file

log = logging.getLogger("medgen.manifest")

_BIDS_SUB = re.compile(r"^sub-[A-Za-z0-9]+$")


@dataclass
class BuildResult:
    manifest: Manifest
    rejects: list[dict] = field(default_factory=list)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _entries(paths: list[Path], root: Path, pool: ThreadPoolExecutor) -> list[FileEntry]:
    hashes = list(pool.map(sha256_file, paths))
    return [FileEntry(path=_rel(p, root), sha256=h, size=p.stat().st_size)
            for p, h in zip(paths, hashes)]


def build_manifest(src: str | Path, key: Key, *, allow_uneven: bool = False,
                   workers: int = 4, progress: Callable[[int], None] | None = None) -> BuildResult:
    """Scan ``src`` (recursively) and return the manifest of good volumes plus rejects."""
    root = Path(src).resolve()
    files = iter_files(root)
    nifti = [p for p in files if looks_like_nifti(p)]
    other = [p for p in files if not looks_like_nifti(p) and p.name.lower() not in _SKIP_NAMES
             and not p.name.lower().endswith(_SKIP_SUFFIXES)]
    records: list[Record] = []
    rejects: list[dict] = []

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # DICOM: headers only, grouped by SeriesInstanceUID
        scan = scan_dicom(other, root=root)
        for nm, reason in scan.rejects:
            rejects.append({"path": nm, "reason": reason})
        for g in scan.series:
            by_mf = [g] if not any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in g.headers) else None
            units = ([(g.files, g.headers)] if by_mf else
                     [([f], [h]) for f, h in zip(g.files, g.headers)])
            for unit_files, unit_headers in units:
                try:
                    vol = read_series_files(unit_files, root=root, headers=unit_headers,
                                            allow_uneven=allow_uneven, pixels=False)
                except MedgenError as exc:
                    rejects.append({"path": exc.where or _rel(unit_files[0], root),
                                    "reason": exc.reason,
                                    "n_files": len(unit_files)})
                    continue
                h0 = unit_headers[0]
                uid_basis = g.series_uid + (("/" + str(h0.get("SOPInstanceUID", ""))) if not by_mf else "")
                subject_basis = str(h0.get("PatientID", "") or h0.get("StudyInstanceUID", "") or uid_basis)
                records.append(Record(
                    id=key.hex("record", "dicom:" + uid_basis, 16),
                    subject=key.hex("subject", subject_basis, 16),
                    format="dicom",
                    modality=str(h0.get("Modality", "OT")),
                    shape=list(vol.shape),
                    spacing=[round(float(s), 6) for s in vol.spacing],
                    files=_entries(list(unit_files), root, pool),
                ))
                if progress:
                    progress(len(unit_files))
        # NIfTI: header only (nibabel loads lazily)
        for p in nifti:
            rel = _rel(p, root)
            try:
                rec = _nifti_record(p, rel, key, root, pool)
            except MedgenError as exc:
                rejects.append({"path": rel, "reason": exc.reason})
                continue
            records.append(rec)
            if progress:
                progress(1)
    ids = {}
    for r in records:  # identical series copied twice under the root: keep the first, reject the rest
        if r.id in ids:
            rejects.append({"path": r.files[0].path, "reason": "duplicate of another record (same series)"})
    uniq = {}
    for r in records:
        uniq.setdefault(r.id, r)
    return BuildResult(Manifest(list(uniq.values()), root), rejects)


_SKIP_NAMES = {"dicomdir", "readme", "readme.txt", "readme.md", "license", ".ds_store"}
_SKIP_SUFFIXES = (".json", ".jsonl", ".txt", ".md", ".tsv", ".csv", ".yaml", ".yml", ".html", ".log", ".key")


def _nifti_record(p: Path, rel: str, key: Key, root: Path, pool) -> Record:
    import nibabel as nib
    import numpy as np

    from medgen.errors import ReadError
    from medgen.io.volume import LPS_TO_RAS, Volume

    try:
        img = nib.load(str(p))
        shape = img.shape
    except Exception as exc:
        raise ReadError(rel, f"not a readable NIfTI file ({type(exc).__name__})") from None
    if len(shape) < 3:
        shape = tuple(shape) + (1,) * (3 - len(shape))
    vol = Volume(np.empty(shape[:3], dtype=np.uint8), LPS_TO_RAS @ img.affine)
    parts = Path(rel).parts
    sub = next((q for q in parts if _BIDS_SUB.match(q)), None)
    subject_basis = sub or rel.split(".nii")[0]
    modality = "MR" if any(t in rel.lower() for t in ("t1w", "t2w", "flair", "bold", "dwi")) else "unknown"
    return Record(
        id=key.hex("record", "nifti:" + rel, 16),
        subject=key.hex("subject", subject_basis, 16),
        format="nifti",
        modality=modality,
        shape=[int(s) for s in shape[:3]],
        spacing=[round(float(s), 6) for s in vol.spacing],
        files=_entries([p], root, pool),
    )
