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
import shutil
import uuid
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
_SUFFIX = re.compile(r"(\.nii\.gz|\.nii|\.dcm|\.dicom|\.ima|\.dc3|\.json|\.hdr|\.img|\.gz|\.bin)$",
                     re.IGNORECASE)


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
    rules = None
    if rules_path:
        from medgen.deid.pixel_rules import load_pixel_rules

        rules = load_pixel_rules(rules_path)
    _W.update(key=Key(secret, "file"), options=options, rules=rules, verify=verify)


def name_tokens(vals: list[str]) -> set[str]:
    """Identifying tokens (lower case) for file-name mapping, from header/sidecar values."""
    out = set()
    for v in vals:
        for part in [v] + re.split(r"[\^=\s,]+", v):
            t = part.strip().lower()
            if len(t) >= 3 and not (t.isdigit() and len(t) < 4):
                out.add(t)
    return out


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


def _process(task: tuple[int, str, str]) -> dict[str, Any]:
    # pydicom's own warnings quote header values (PHI): silence them while a file is processed
    with quiet_pydicom():
        return _process_one(task)


def _process_one(task: tuple[int, str, str]) -> dict[str, Any]:
    idx, src_s, stage_s = task
    src, stage = Path(src_s), Path(stage_s)
    key, options = _W["key"], _W["options"]
    rec: dict[str, Any] = {"index": idx}
    try:
        rec["in_sha256"] = sha256_file(src)
    except OSError as exc:
        return {**rec, "status": "quarantined", "reason": f"cannot read input ({type(exc).__name__})"}
    kind = file_kind(src)
    try:
        if kind == "nifti":
            rec.update(deidentify_nifti(src, stage, key, options, _W["verify"]))
        elif kind == "nifti-pair":
            rec.update(deidentify_nifti(src, stage, key, options, _W["verify"], pair=True))
        elif kind == "json":
            hint = next((p[4:] for p in src.parts if p.startswith("sub-")), "")
            rec.update(deidentify_json(src, stage, key, options, _W["verify"], hint))
        else:
            rec.update(deidentify_dicom(src, stage, key, options, _W["rules"], _W["verify"]))
        rec["status"] = "ok"
    except Quarantine as exc:
        rec.update(status="quarantined", reason=str(exc), names=exc.names)
    except Exception as exc:  # one bad file never stops the batch
        rec.update(status="quarantined", reason=safe_reason(exc))
    try:
        if sha256_file(src) != rec["in_sha256"]:  # inputs are never modified; prove it
            rec.update(status="quarantined", reason="input changed while it was processed")
    except OSError:
        pass
    rec["tokens"] = sorted(name_tokens(rec.pop("names", None) or []))
    if rec["status"] != "ok":
        for p in (stage, stage.with_suffix(".img")):
            p.unlink(missing_ok=True)
    return rec


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
        from medgen.deid.pixel_rules import load_pixel_rules

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
    # One pass: each file is de-identified into a staging folder under its index; the output
    # names are decided at the end, when every identifier that could sit in a file or folder
    # name has been seen, and the staged files are renamed into place.
    staging = dst / AUDIT_DIR / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    tasks = []
    for i, p in enumerate(files):
        m = _SUFFIX.search(p.name)
        tasks.append((i, str(p), str(staging / f"{i:08d}{m.group(0) if m else ''}")))
    ex = ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=init) \
        if workers > 1 else None
    tokens: set[str] = set()
    try:
        chunk = max(1, min(32, len(files) // (8 * max(workers, 1)) or 1))
        if ex is None:
            _init(*init)
            results = map(_process, tasks)
        else:
            results = ex.map(_process, tasks, chunksize=chunk)
        with open(staging / "records.jsonl", "w", encoding="utf-8") as fh:
            for n, rec in enumerate(results, 1):
                tokens.update(rec.pop("tokens"))
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
                if progress is not None:
                    progress(n, len(tasks))
        used: set[Path] = set()
        with atomic_path(audit_path) as tmp, open(tmp, "w", encoding="utf-8") as out, \
                open(staging / "records.jsonl", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                i = rec["index"]
                rel = map_name(files[i].relative_to(root), tokens, key)
                if rel in used:  # two inputs mapped onto one name: keep both
                    rel = rel.with_name(f"{i:08d}_{rel.name}")
                used.add(rel)
                rec["item"] = rel.as_posix()
                if rec["status"] == "ok":
                    staged = Path(tasks[i][2])
                    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, dst / rel)
                    if staged.with_suffix(".img").exists():
                        os.replace(staged.with_suffix(".img"), (dst / rel).with_suffix(".img"))
                    rep.ok += 1
                else:
                    rep.quarantined.append((rec["item"], rec["reason"]))
                    log.info("quarantined %s: %s", rec["item"], rec["reason"])
                out.write(json.dumps({**rec, **common}, sort_keys=True) + "\n")
    finally:
        if ex is not None:
            ex.shutdown()
        shutil.rmtree(staging, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()  # file contents were fsync'd when staged; this makes the final renames durable
    return rep
