"""Batch de-identification: walk SRC, map names, process files (optionally in processes), audit.

Two passes, both streaming (no dataset is held beyond the file being processed):

1. **names** - read only the identifying header fields of each file (PatientName, PatientID, ...)
   and collect them; any output path component containing one of them gets that part replaced by
   a keyed pseudonym, the same for every file, so folders stay together and no name leaks.
2. **files** - de-identify each file to its mapped path, verify it, append its audit line.

Items are named in logs, progress and the audit only by their (pseudonymised) output path or
index, never by an input path.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.deid import table as T
from medgen.deid.engine import (
    Quarantine,
    deidentify_dicom,
    deidentify_json,
    deidentify_nifti,
    file_kind,
    safe_reason,
)
from medgen.deid.verifier import quiet_pydicom
from medgen.keys import Key
from medgen.utils.atomic import atomic_path
from medgen.utils.hashing import sha256_file

log = logging.getLogger("medgen.deid")
AUDIT_DIR = "_deid"
_NAME_TAGS = ["PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
              "StudyDate", "SeriesDate", "AcquisitionDate", "OtherPatientNames", "PatientBirthName",
              "PatientMotherBirthName", "IssuerOfPatientID", "StudyID"]
_SUFFIX = re.compile(r"(\.nii\.gz|\.[A-Za-z0-9]{1,6})$")


@dataclass
class DeidReport:
    """Outcome of :func:`deidentify`."""

    ok: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    audit_path: Path | None = None
    key_fingerprint: str = ""
    options: tuple[str, ...] = ()
    table_edition: str = ""

    @property
    def exit_code(self) -> int:
        from medgen.errors import EXIT_OK, EXIT_PARTIAL

        return EXIT_PARTIAL if self.quarantined else EXIT_OK


# ---------------------------------------------------------------- worker state (per process)

_W: dict[str, Any] = {}


def _init(secret: bytes, options: tuple[str, ...], rules_path: str | None, verify: bool) -> None:
    from medgen.deid.pixels import load_pixel_rules

    _W.update(key=Key(secret, "file"), options=options,
              rules=load_pixel_rules(rules_path) if rules_path else None, verify=verify)


def _tokens(path_str: str) -> list[str]:
    """Identifying tokens of one file for file-name mapping (lower case)."""
    p = Path(path_str)
    vals: list[str] = []
    kind = file_kind(p)
    try:
        if kind == "json":
            data = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                vals = [str(data[k]) for k in ("PatientName", "PatientID", "PatientBirthDate",
                                               "AccessionNumber") if data.get(k)]
                if data.get("AcquisitionDateTime"):
                    vals.append(re.sub(r"[^0-9]", "", str(data["AcquisitionDateTime"]))[:8])
        elif kind == "dicom":
            from pydicom.datadict import tag_for_keyword
            from pydicom.filereader import read_partial

            tags = [tag_for_keyword(k) for k in _NAME_TAGS]
            with open(p, "rb") as fh:  # the patient/study groups come first: stop after 0020
                ds = read_partial(fh, stop_when=lambda tag, vr, length: tag.group > 0x0020,
                                  specific_tags=tags, force=True)
            for kw in _NAME_TAGS:
                v = ds.get(kw)
                if v not in (None, ""):
                    vals.extend(str(x) for x in (v if isinstance(v, list | tuple) else [v]))
    except Exception:
        return []
    out = set()
    for v in vals:
        for part in [v] + re.split(r"[\^=\s,]+", v):
            s = part.strip().lower()
            if len(s) >= 3 and not (s.isdigit() and len(s) < 4):
                out.add(s)
    return sorted(out)


def map_name(rel: Path, tokens: set[str], key: Key) -> Path:
    """Replace every identifying token inside each path component by a keyed pseudonym."""
    parts = []
    for i, comp in enumerate(rel.parts):
        is_file = i == len(rel.parts) - 1
        m = _SUFFIX.search(comp) if is_file else None
        stem, suffix = (comp[: m.start()], comp[m.start():]) if m else (comp, "")
        low = stem.lower()
        hits = sorted((t for t in tokens if t in low), key=len, reverse=True)
        for t in hits:
            stem = re.sub(re.escape(t), key.hex("path", t, 10), stem, flags=re.IGNORECASE)
        parts.append(stem + suffix)
    return Path(*parts)


def _process(task: tuple[int, str, str, str]) -> dict[str, Any]:
    # pydicom's own warnings quote header values (PHI): silence them while a file is processed
    with quiet_pydicom():
        return _process_one(task)


def _process_one(task: tuple[int, str, str, str]) -> dict[str, Any]:
    idx, src_s, dst_s, item = task
    src, dst = Path(src_s), Path(dst_s)
    key, options = _W["key"], _W["options"]
    rec: dict[str, Any] = {"index": idx, "item": item}
    try:
        rec["in_sha256"] = sha256_file(src)
    except OSError as exc:
        return {**rec, "status": "quarantined", "reason": f"cannot read input ({type(exc).__name__})"}
    kind = file_kind(src)
    try:
        if kind == "nifti":
            rec.update(deidentify_nifti(src, dst, key, options, _W["verify"]))
        elif kind == "nifti-pair":
            rec.update(deidentify_nifti(src, dst, key, options, _W["verify"], pair=True))
        elif kind == "json":
            hint = next((p[4:] for p in src.parts if p.startswith("sub-")), "")
            rec.update(deidentify_json(src, dst, key, options, _W["verify"], hint))
        else:
            rec.update(deidentify_dicom(src, dst, key, options, _W["rules"], _W["verify"]))
        rec["status"] = "ok"
    except Quarantine as exc:
        rec.update(status="quarantined", reason=str(exc))
    except Exception as exc:  # one bad file never stops the batch
        rec.update(status="quarantined", reason=safe_reason(exc))
    try:
        if sha256_file(src) != rec["in_sha256"]:  # inputs are never modified; prove it
            rec.update(status="quarantined", reason="input changed while it was processed")
    except OSError:
        pass
    return rec


def _names(path_str: str) -> list[str]:
    with quiet_pydicom():
        return _tokens(path_str)


def deidentify(src: str | Path, dst: str | Path, *, key: Key, options=(), workers: int = 1,
               pixel_rules: str | Path | None = None, verify: bool = True,
               audit: str | Path | None = None, progress=None) -> DeidReport:
    """De-identify every file under ``src`` into ``dst`` (DICOM, NIfTI, JSON sidecars).

    Parameters
    ----------
    src : input file or folder (never modified).
    dst : output folder (created; must not be inside ``src``).
    key : pseudonymization key (:func:`medgen.keys.load_key`).
    options : PS3.15 option names, e.g. ``("retain-long-modified-dates",)``.
    workers : processes to use (1 = in this process).
    pixel_rules : YAML of pixel rules for burned-in annotations.
    verify : scan each output with the independent verifier and quarantine what fails.
    audit : JSONL audit path (default ``dst/_deid/audit.jsonl``).
    progress : optional callable(done, total) for progress display.

    Returns
    -------
    DeidReport
    """
    from medgen.errors import ConfigError

    options = T.check_options(tuple(options))
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.exists():
        raise ConfigError("SRC", "input path does not exist")
    if dst == src or src in dst.parents:
        raise ConfigError("DST", "output folder must not be the input or inside it")
    if pixel_rules is not None:
        from medgen.deid.pixels import load_pixel_rules

        load_pixel_rules(pixel_rules)  # fail fast on a bad rule file
    root = src.parent if src.is_file() else src
    files = [src] if src.is_file() else sorted(
        p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    files = [p for p in files if file_kind(p) != "nifti-pair-data"]
    dst.mkdir(parents=True, exist_ok=True)
    audit_path = Path(audit) if audit else dst / AUDIT_DIR / "audit.jsonl"
    rep = DeidReport(audit_path=audit_path, key_fingerprint=key.fingerprint, options=options,
                     table_edition=T.table_edition())
    init = (key.secret, options, str(pixel_rules) if pixel_rules else None, verify)
    common = {"key_fingerprint": key.fingerprint, "options": list(options),
              "table_edition": rep.table_edition}
    ex = ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=init) \
        if workers > 1 else None
    try:
        chunk = max(1, min(64, len(files) // (4 * max(workers, 1)) or 1))
        if ex is None:
            _init(*init)
            token_lists = map(_names, (str(p) for p in files))
        else:
            token_lists = ex.map(_names, (str(p) for p in files), chunksize=chunk)
        tokens: set[str] = set()
        for tl in token_lists:
            tokens.update(tl)
        tasks = []
        for i, p in enumerate(files):
            rel = map_name(p.relative_to(root), tokens, key)
            tasks.append((i, str(p), str(dst / rel), rel.as_posix()))
        results = map(_process, tasks) if ex is None else ex.map(_process, tasks, chunksize=chunk)
        with atomic_path(audit_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for n, rec in enumerate(results, 1):
                fh.write(json.dumps({**rec, **common}, sort_keys=True) + "\n")
                if rec["status"] == "ok":
                    rep.ok += 1
                else:
                    rep.quarantined.append((rec["item"], rec["reason"]))
                    log.info("quarantined %s: %s", rec["item"], rec["reason"])
                if progress is not None:
                    progress(n, len(tasks))
    finally:
        if ex is not None:
            ex.shutdown()
    if hasattr(os, "sync"):
        os.sync()  # outputs are renamed into place without per-file fsync; make them durable
    return rep


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
