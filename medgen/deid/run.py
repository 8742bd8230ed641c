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
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.deid import table as T
from medgen.deid.dicom_file import PixelPolicy, deidentify_dicom
from medgen.deid.engine import (
    Quarantine,
    deidentify_json,
    deidentify_nifti,
    file_kind,
    safe_reason,
)
from medgen.deid.paths import SUFFIX as _SUFFIX
from medgen.deid.paths import initials, map_name, name_tokens
from medgen.deid.verifier import quiet_pydicom
from medgen.keys import Key
from medgen.utils.atomic import atomic_path
from medgen.utils.hashing import sha256_file

log = logging.getLogger("medgen.deid")
AUDIT_DIR = "_deid"


@dataclass
class DeidReport:
    """Outcome of :func:`deidentify`."""

    ok: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    audit_path: Path | None = None
    key_fingerprint: str = ""
    options: tuple[str, ...] = ()
    table_edition: str = ""
    # (modality, outcome) -> files; outcome: kept (no pixel risk), redacted (OCR or rule blanked
    # pixels), ocr-clean (at risk, OCR found nothing identifying), quarantined
    by_modality: dict[tuple[str, str], int] = field(default_factory=dict)

    def modality_table(self) -> list[tuple[str, int, int, int, int]]:
        """(modality, kept, redacted, ocr-clean, quarantined) rows, sorted by modality."""
        mods = sorted({m for m, _ in self.by_modality})
        return [(m, *(self.by_modality.get((m, o), 0)
                      for o in ("kept", "redacted", "ocr-clean", "quarantined"))) for m in mods]

    @property
    def exit_code(self) -> int:
        from medgen.errors import EXIT_OK, EXIT_PARTIAL

        return EXIT_PARTIAL if self.quarantined else EXIT_OK


# ---------------------------------------------------------------- worker state (per process)

_W: dict[str, Any] = {}


def _init(secret: bytes, options: tuple[str, ...], rules_path: str | None, verify: bool,
          ocr: bool = True, blank_unsure: bool = False) -> None:
    rules = None
    if rules_path:
        from medgen.deid.pixel_rules import load_pixel_rules

        rules = load_pixel_rules(rules_path)
    _W.update(key=Key(secret, "file"), options=options, verify=verify,
              policy=PixelPolicy(rules=rules, ocr=ocr, blank_unsure=blank_unsure))


def _process(task: tuple[int, str, str]) -> dict[str, Any]:
    # pydicom's own warnings quote header values (PHI): silence them while a file is processed
    with quiet_pydicom():
        return _process_one(task)


def _process_one(task: tuple[int, str, str]) -> dict[str, Any]:
    idx, src_s, stage_s = task
    src, stage = Path(src_s), Path(stage_s)
    key, options = _W["key"], _W["options"]
    rec: dict[str, Any] = {"index": idx}
    kind = file_kind(src)
    try:
        st0 = os.stat(src)
        if kind != "dicom":  # DICOM: the hash of the bytes actually parsed, by the engine
            rec["in_sha256"] = sha256_file(src)
    except OSError as exc:
        return {**rec, "status": "quarantined", "reason": f"cannot read input ({type(exc).__name__})"}
    try:
        if kind == "nifti":
            rec.update(deidentify_nifti(src, stage, key, options, _W["verify"]))
        elif kind == "nifti-pair":
            rec.update(deidentify_nifti(src, stage, key, options, _W["verify"], pair=True))
        elif kind == "json":
            hint = next((p[4:] for p in src.parts if p.startswith("sub-")), "")
            rec.update(deidentify_json(src, stage, key, options, _W["verify"], hint))
        else:
            rec.update(deidentify_dicom(src, stage, key, options, _W["policy"], _W["verify"]))
        rec["status"] = "ok"
    except Quarantine as exc:
        rec.update(status="quarantined", reason=str(exc), names=exc.names)
        if kind == "dicom":
            rec["modality"] = exc.modality
        if exc.in_sha256:
            rec["in_sha256"] = exc.in_sha256
    except OSError as exc:
        rec.update(status="quarantined", reason=f"cannot read input ({type(exc).__name__})")
    except Exception as exc:  # one bad file never stops the batch
        rec.update(status="quarantined", reason=safe_reason(exc))
    try:  # inputs are opened read-only; a change by someone else while we read is detected
        st1 = os.stat(src)
        if (st1.st_size, st1.st_mtime_ns, st1.st_ino) != (st0.st_size, st0.st_mtime_ns,
                                                          st0.st_ino):
            rec.update(status="quarantined", reason="input changed while it was processed")
    except OSError:
        pass
    names = rec.pop("names", None) or []
    rec["tokens"] = sorted(name_tokens(names))
    rec["initials"] = sorted(initials(names))
    if rec["status"] != "ok":
        for p in (stage, stage.with_suffix(".img")):
            p.unlink(missing_ok=True)
    return rec


def list_inputs(src: Path) -> tuple[list[Path], list[str]]:
    """Every regular file under ``src`` (symlinks not followed), and the folders that could not be
    read (reported as quarantined items, never skipped silently)."""
    if src.is_file():
        return [src], []
    files, unreadable = [], []

    def onerror(err: OSError) -> None:
        where = Path(err.filename) if err.filename else src
        try:
            rel = where.relative_to(src).as_posix() or "."
        except ValueError:
            rel = "."
        unreadable.append(rel)

    for folder, dirs, names in os.walk(src, onerror=onerror):
        dirs.sort()
        for n in sorted(names):
            p = Path(folder) / n
            if p.is_file() and not p.is_symlink():
                files.append(p)
    files = [p for p in files if file_kind(p) != "nifti-pair-data"]
    return sorted(files), unreadable


def _check_args(src: Path, dst: Path, options, pixel_rules) -> tuple[str, ...]:
    from medgen.errors import ConfigError

    options = T.check_options(tuple(options))
    if not src.exists():
        raise ConfigError("SRC", "input path does not exist")
    if dst == src or src in dst.parents:
        raise ConfigError("DST", "output folder must not be the input or inside it")
    if pixel_rules is not None:
        from medgen.deid.pixel_rules import load_pixel_rules

        load_pixel_rules(pixel_rules)  # fail fast on a bad rule file
    return options


def _run_tasks(tasks, init, workers: int, records: Path, progress) -> tuple[set[str], set[str]]:
    """Process every task (in processes when workers > 1); records go to ``records`` (JSONL)."""
    ex = ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=init) \
        if workers > 1 else None
    tokens: set[str] = set()
    inits: set[str] = set()
    try:
        if ex is None:
            _init(*init)
            results = map(_process, tasks)
        else:
            chunk = max(1, min(32, len(tasks) // (8 * workers) or 1))
            results = ex.map(_process, tasks, chunksize=chunk)
        with open(records, "w", encoding="utf-8") as fh:
            for n, rec in enumerate(results, 1):
                tokens.update(rec.pop("tokens"))
                inits.update(rec.pop("initials"))
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
                if progress is not None:
                    progress(n, len(tasks))
    finally:
        if ex is not None:
            ex.shutdown()
    return tokens, inits


def _outcome(rec: dict) -> str:
    if rec["status"] != "ok":
        return "quarantined"
    pix = rec.get("pixels")
    if pix is None:
        return "kept"
    return "redacted" if pix["action"] == "redacted" else "ocr-clean"


def _place(rep: DeidReport, tasks, files, root: Path, dst: Path, records: Path, key: Key,
           names: tuple[set[str], set[str]], common: dict, audit_tmp) -> None:
    """Rename staged outputs to their final (pseudonymised) names and write the audit."""
    tokens, inits = names
    used: set[Path] = set()
    with open(records, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            i = rec["index"]
            rel = map_name(files[i].relative_to(root), tokens, key, inits)
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
            if rec.get("kind", "dicom") == "dicom" and "modality" in rec:
                k = (rec["modality"], _outcome(rec))
                rep.by_modality[k] = rep.by_modality.get(k, 0) + 1
            audit_tmp.write(json.dumps({**rec, **common}, sort_keys=True) + "\n")


def deidentify(src: str | Path, dst: str | Path, *, key: Key, options=(), workers: int = 1,
               pixel_rules: str | Path | None = None, verify: bool = True,
               audit: str | Path | None = None, progress=None, ocr: bool = True,
               blank_unsure: bool = False) -> DeidReport:
    """De-identify every file under ``src`` into ``dst`` (DICOM, NIfTI, JSON sidecars).

    Parameters
    ----------
    src : input file or folder (never modified).
    dst : output folder (created; must not be inside ``src``).
    key : pseudonymization key (:func:`medgen.keys.load_key`).
    options : PS3.15 option names, e.g. ``("retain-long-modified-dates",)``.
    workers : processes to use (1 = in this process).
    pixel_rules : YAML of pixel rules and text zones for burned-in annotations.
    verify : scan each output with the independent verifier and quarantine what fails.
    audit : JSONL audit path (default ``dst/_deid/audit.jsonl``).
    progress : optional callable(done, total) for progress display.
    ocr : read burned-in text of at-risk instances with OCR and blank identifying words
        (False: at-risk instances without a matching pixel rule are quarantined).
    blank_unsure : blank words OCR read with low confidence that may be identifiers, instead of
        quarantining the file.

    Returns
    -------
    DeidReport
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    options = _check_args(src, dst, options, pixel_rules)
    root = src.parent if src.is_file() else src
    files, unreadable = list_inputs(src)
    dst.mkdir(parents=True, exist_ok=True)
    audit_path = Path(audit) if audit else dst / AUDIT_DIR / "audit.jsonl"
    rep = DeidReport(audit_path=audit_path, key_fingerprint=key.fingerprint, options=options,
                     table_edition=T.table_edition())
    init = (key.secret, options, str(pixel_rules) if pixel_rules else None, verify, ocr,
            blank_unsure)
    common = {"key_fingerprint": key.fingerprint, "options": list(options),
              "table_edition": rep.table_edition}
    # One pass: each file is de-identified into a staging folder under its index; the output
    # names are decided at the end, when every identifier that could sit in a file or folder
    # name has been seen; every staged file is synced once, then renamed into place.
    staging = dst / AUDIT_DIR / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    tasks = []
    for i, p in enumerate(files):
        m = _SUFFIX.search(p.name)
        tasks.append((i, str(p), str(staging / f"{i:08d}{m.group(0) if m else ''}")))
    try:
        names = _run_tasks(tasks, init, workers, staging / "records.jsonl", progress)
        if hasattr(os, "sync"):
            os.sync()  # staged contents durable before any rename: no torn final output
        with atomic_path(audit_path) as tmp, open(tmp, "w", encoding="utf-8") as out:
            _place(rep, tasks, files, root, dst, staging / "records.jsonl", key, names, common,
                   out)
            for n, rel in enumerate(unreadable):
                reason = "folder cannot be read (permission or I/O error); its files were not seen"
                item = map_name(Path(rel), names[0], key, names[1]).as_posix()
                rep.quarantined.append((item, reason))
                out.write(json.dumps({"index": len(files) + n, "item": item, "kind": "folder",
                                      "status": "quarantined", "reason": reason, **common},
                                     sort_keys=True) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()  # the renames durable
    return rep
