"""Batch jobs: items, the ledger, resume, atomic outputs, retries, quarantine and the summary.

Layout of an output folder ``DST``::

    DST/<relative input path>        outputs, mirroring the input tree (NIfTI file or DICOM folder)
    DST/ledger.jsonl                 append-only, one fsync'd line per attempt; latest line wins
    DST/quarantine.jsonl             items whose input cannot go through the model (latest state)
    DST/output_manifest.json         item id, relative output path and sha256 of every output file
    DST/summary.json                 the last run's counts, throughput and digests
    DST/.medgen-job.lock             held (flock) while a job writes here

Item ids are not identifying: ``sha256`` of the item's relative input path (NIfTI file, DICOM series
folder) or the manifest record id. Logs and ledger lines name items by id and relative paths only.

Resume: an item is skipped when its latest ledger line is ``ok``, its input files still hash to the
recorded input sha256, the job digest (weights + everything that changes output voxels) is the
same, and every recorded output file still has its recorded sha256. ``overwrite=True`` re-runs all.
Leftovers of interrupted atomic writes (``.medgen-tmp-*``) are removed from ``DST`` on start.

Errors are isolated per item. *Quarantined*: the input itself is bad (unreadable or truncated
DICOM, NaN voxels, a non-image object such as an RT structure set, wrong channel count); not
retried, skipped on re-runs while the input is unchanged. *Failed*: anything else; transient errors
(I/O errors other than not-found/permission, GPU out-of-memory after every step-down) are retried
with exponential backoff first, and failed items are attempted again on the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.errors import EXIT_OK, EXIT_PARTIAL, ConfigError, MedgenError, ReadError, WriteError
from medgen.utils.atomic import TMP_PREFIX, atomic_write_text, clean_temp
from medgen.utils.hashing import canonical_json, sha256_bytes, sha256_file, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.predictor import PredictorSpec, VolumePredictor
    from medgen.io.volume import Volume

log = logging.getLogger("medgen.infer")

LEDGER_NAME = "ledger.jsonl"
QUARANTINE_NAME = "quarantine.jsonl"
OUTPUT_MANIFEST_NAME = "output_manifest.json"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".medgen-job.lock"
LEDGER_VERSION = 1
_RESERVED = {LEDGER_NAME, QUARANTINE_NAME, OUTPUT_MANIFEST_NAME, SUMMARY_NAME, LOCK_NAME}
_SKIP_SUFFIXES = (".json", ".jsonl", ".txt", ".md", ".csv", ".tsv", ".yaml", ".yml", ".lock",
                  ".py", ".log")
_SKIP_NAMES = {"dicomdir", "readme", "license"}


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Item:
    """One unit of work: a NIfTI file, a DICOM series (or multi-frame file), or a manifest record.

    Attributes
    ----------
    id : str
        Stable, non-identifying id.
    kind : {"nifti", "dicom", "reject"}
    rel : str
        Input path relative to ``root`` (file, or folder of a series; ``.`` for the root).
    files : tuple of str
        Absolute paths of the input files (in memory only; never logged).
    root : str
        Input root (errors name files relative to it).
    out_rel : str, optional
        Output path relative to ``DST`` (a ``.nii.gz`` file or a DICOM series folder).
    out_format : {"nifti", "dicom"}, optional
    error : str, optional
        Reason the item was refused at discovery (one line; it is quarantined unread).
    expected : tuple of (relpath, sha256), optional
        File digests from a manifest; a mismatch quarantines the item.
    """

    id: str
    kind: str
    rel: str
    files: tuple[str, ...]
    root: str
    out_rel: str | None = None
    out_format: str | None = None
    error: str | None = None
    expected: tuple[tuple[str, str], ...] | None = None

    def file_rels(self) -> list[str]:
        return [_relpath(f, self.root) for f in self.files]

    def input_sha256(self) -> str:
        """sha256 over (relative path, sha256) of every input file, in path order."""
        pairs = sorted(zip(self.file_rels(), (sha256_file(f) for f in self.files)))
        if self.expected is not None:
            exp = dict(self.expected)
            for rel, digest in pairs:
                if exp.get(rel) not in (None, digest):
                    raise ReadError(rel, "file changed since the manifest was built (sha256 differs)")
        return sha256_json({"v": 1, "files": [list(p) for p in pairs]})


def _relpath(path: str | Path, root: str | Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def item_id(kind: str, key: str) -> str:
    """Stable id from the item's relative input path (no identifiers in it beyond that path)."""
    return sha256_bytes(f"medgen-infer-item-v1\0{kind}\0{key}".encode())[:16]


def _strip_ext(rel: str) -> str:
    low = rel.lower()
    for ext in (".nii.gz", ".nii", ".dcm", ".ima"):
        if low.endswith(ext):
            return rel[: -len(ext)]
    return rel


def _out_for(kind: str, rel: str, fmt: str, *, own_folder: bool, iid: str) -> str:
    """Output path relative to DST for an input at ``rel`` (see :func:`discover_items`)."""
    if kind == "nifti":
        if fmt == "nifti":
            return rel if rel.lower().endswith((".nii", ".nii.gz")) else rel + ".nii.gz"
        return _strip_ext(rel)
    # DICOM: a series folder, or one multi-frame file (own_folder=False) named by the file
    base = rel if own_folder else _strip_ext(rel)
    if base in (".", ""):
        base = f"series-{iid[:8]}"
    return base + ".nii.gz" if fmt == "nifti" else base


def _skippable(p: Path) -> bool:
    n = p.name.lower()
    return n in _SKIP_NAMES or n.endswith(_SKIP_SUFFIXES) or p.name.startswith(TMP_PREFIX)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def discover_items(src: str | Path, dst: str | Path | None = None, *, output_format: str = "auto",
                   root: str | Path | None = None) -> list[Item]:
    """Find the items of a job.

    ``src`` is a folder (each DICOM series in a folder - found by header scan, grouped by
    SeriesInstanceUID within each folder - and each NIfTI file is an item; files that are neither are reported as refused items), a single
    NIfTI file, or a manifest (``.jsonl``; ``root`` overrides its recorded root).

    Outputs mirror the input tree under ``DST``: NIfTI ``a/b/x.nii.gz`` -> ``a/b/x.nii.gz``; the
    series in folder ``a/b/`` -> ``a/b/`` (a derived series), or ``a/b/series-<id8>/`` when that
    folder also holds other items (several series, NIfTI files, sub-folders with items), so no
    output folder ever contains another item's output. ``output_format`` ``auto`` keeps the input
    format; ``nifti`` / ``dicom`` convert (``x.nii.gz`` <-> ``x/``).
    """
    from medgen.errors import ConfigError

    if output_format not in ("auto", "nifti", "dicom"):
        raise ConfigError("--output-format", "auto, nifti or dicom")
    src = Path(src).resolve()
    dstp = Path(dst).resolve() if dst is not None else None
    if dstp is not None and (dstp == src or (src.is_dir() and _inside(src, dstp))):
        raise ConfigError("DST", "the output folder must not be the input folder or contain it")
    if src.is_file() and src.name.lower().endswith(".jsonl"):
        return _manifest_items(src, output_format, root)
    from medgen.io import is_nifti_path

    if src.is_file() and is_nifti_path(src):
        root_p = src.parent
        rel = src.name
        iid = item_id("nifti", rel)
        fmt = "nifti" if output_format == "auto" else output_format
        return [Item(iid, "nifti", rel, (str(src),), str(root_p),
                     _out_for("nifti", rel, fmt, own_folder=False, iid=iid), fmt)]
    if not src.is_dir():
        raise ConfigError("SRC", "not found, or not a folder / NIfTI file / manifest (.jsonl)")
    return _folder_items(src, dstp, output_format)


def _folder_items(src: Path, dst: Path | None, output_format: str) -> list[Item]:
    from medgen.io.dicom_read import iter_files, looks_like_nifti, scan_dicom

    files = [p for p in iter_files(src) if dst is None or not _inside(p, dst)]
    nifti = [p for p in files if looks_like_nifti(p)]
    others = [p for p in files if not looks_like_nifti(p) and not _skippable(p)]
    scan = scan_dicom(others, root=src)
    units: list[tuple[str, str, list[Path], bool]] = []  # (kind, rel, files, own_folder)
    for p in nifti:
        units.append(("nifti", _relpath(p, src), [p], False))
    for g in scan.series:
        multiframe = any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in g.headers)
        if multiframe:  # each enhanced file is its own volume
            for f in g.files:
                units.append(("dicom", _relpath(f, src), [f], False))
        else:  # one item per (folder, series): copies of a series in two folders stay apart
            by_dir: dict[str, list[Path]] = {}
            for f in g.files:
                by_dir.setdefault(Path(_relpath(f, src)).parent.as_posix(), []).append(f)
            for rel, fs in sorted(by_dir.items()):
                units.append(("dicom", rel or ".", fs, True))
    # a series folder is used as the output folder only when nothing else lives inside it
    inputs = [(u, [_relpath(f, src) for f in u[2]]) for u in units]
    items: list[Item] = []
    seen_out: dict[str, str] = {}
    for idx, ((kind, rel, ufiles, own), frels) in enumerate(inputs):
        key = rel
        if kind == "dicom" and own:
            prefix = "" if rel == "." else rel + "/"
            crowded = rel == "." or any(
                j != idx and any(fr.startswith(prefix) for fr in ofr)
                for j, (_u, ofr) in enumerate(inputs))
            if crowded:
                key = f"{rel}#{frels[0].rsplit('/', 1)[-1]}"
                iid = item_id(kind, key)
                base = f"series-{iid[:8]}" if rel == "." else f"{rel}/series-{iid[:8]}"
                fmt = ("dicom" if output_format == "auto" else output_format)
                out = base + ".nii.gz" if fmt == "nifti" else base
                items.append(_mk(kind, iid, rel, ufiles, src, out, fmt, seen_out))
                continue
        iid = item_id(kind, key)
        fmt = (kind if output_format == "auto" else output_format)
        out = _out_for(kind, rel, fmt, own_folder=own, iid=iid)
        items.append(_mk(kind, iid, rel, ufiles, src, out, fmt, seen_out))
    for nm, reason in scan.rejects:
        rid = item_id("reject", nm)
        items.append(Item(rid, "reject", nm, (str(src / nm),), str(src), None, None,
                          f"{nm}: {reason}"))
    items.sort(key=lambda it: (it.rel, it.id))
    return items


def _mk(kind, iid, rel, files, root, out, fmt, seen_out) -> Item:
    err = None
    if out in seen_out:
        err = f"{rel}: output path {out} clashes with another item's; rename one of them"
        out = None
    else:
        seen_out[out] = iid
    return Item(iid, kind, rel, tuple(str(f) for f in files), str(root), out,
                fmt if out else None, err)


def _manifest_items(path: Path, output_format: str, root: str | Path | None) -> list[Item]:
    from medgen.manifest import Manifest

    man = Manifest.load(path, root=root)
    if man.root is None:
        raise ConfigError(path.name, "manifest root unknown: pass --root")
    units = []
    for rec in man.records:
        rels = [f.path for f in rec.files]
        if rec.format == "nifti" or len(rels) == 1:
            units.append((rec, rels[0], False))
        else:
            parents = sorted({Path(r).parent.as_posix() for r in rels})
            units.append((rec, os.path.commonpath(parents) if len(parents) > 1 else parents[0], True))
    items = []
    seen_out: dict[str, str] = {}
    all_rels = [(u[0].id, [f.path for f in u[0].files]) for u in units]
    for rec, rel, own in units:
        kind = rec.format
        fmt = kind if output_format == "auto" else output_format
        if kind == "dicom" and own:
            prefix = "" if rel == "." else rel + "/"
            crowded = rel == "." or any(rid != rec.id and any(r.startswith(prefix) for r in rr)
                                         for rid, rr in all_rels)
            if crowded:
                base = f"series-{rec.id[:8]}" if rel == "." else f"{rel}/series-{rec.id[:8]}"
                out = base + ".nii.gz" if fmt == "nifti" else base
            else:
                out = _out_for(kind, rel, fmt, own_folder=True, iid=rec.id)
        else:
            out = _out_for(kind, rel, fmt, own_folder=False, iid=rec.id)
        it = _mk(kind, rec.id, rel, [man.root / r for r in (f.path for f in rec.files)], man.root,
                 out, fmt, seen_out)
        items.append(Item(it.id, it.kind, it.rel, it.files, it.root, it.out_rel, it.out_format,
                          it.error, tuple((f.path, f.sha256) for f in rec.files)))
    items.sort(key=lambda it: (it.rel, it.id))
    return items


# --------------------------------------------------------------------------- ledger


class Ledger:
    """``DST/ledger.jsonl``: one JSON line per attempt, appended and fsync'd; the latest line per
    item wins. A line cut short by a kill is ignored on load (and a newline restores framing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.latest: dict[str, dict[str, Any]] = {}
        self.bad_lines = 0
        self._lock = threading.Lock()
        if self.path.exists():
            for line in self.path.read_text("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    self.latest[str(e["item"])] = e
                except (ValueError, KeyError, TypeError):
                    self.bad_lines += 1
            if self.bad_lines:
                log.warning("ledger: ignored %d incomplete line(s) (interrupted write)", self.bad_lines)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write(line.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            self.latest[str(entry["item"])] = entry


# --------------------------------------------------------------------------- per item


def peak_rss_reset() -> None:
    """Reset the process's peak RSS (Linux ``clear_refs``); a no-op elsewhere."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass
class JobContext:
    """What a worker needs besides the predictor and the item (picklable)."""

    dst: str
    job_digest: str
    derivation: str
    weights_sha256: str | None
    overwrite: bool = False
    retries: int = 2
    retry_delay: float = 1.0
    engine: str = "local"


def _one_line(text: str, item: Item, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    for secret in sorted({item.root, *(os.path.dirname(f) for f in item.files)}, key=len, reverse=True):
        if secret and len(secret) > 1:
            text = text.replace(secret, "<src>")
    return text[:limit]


def classify(exc: BaseException, item: Item) -> tuple[str, bool, str]:
    """(status, transient, one-line reason naming the item's file) for an exception."""
    from medgen.infer.predictor import TransientInferenceError, UnsuitableInputError

    if isinstance(exc, TransientInferenceError):
        return "failed", True, f"{item.rel}: {exc.reason}"
    if isinstance(exc, (ReadError, UnsuitableInputError, WriteError)):
        where = exc.where or item.rel
        return "quarantined", False, _one_line(f"{where}: {exc.reason}", item)
    if isinstance(exc, MedgenError):
        return "failed", False, _one_line(f"{exc.where or item.rel}: {exc.reason}", item)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return "failed", False, f"{item.rel}: {type(exc).__name__} ({exc.strerror or 'error'})"
    if isinstance(exc, OSError):
        return "failed", True, f"{item.rel}: {type(exc).__name__} ({exc.strerror or exc})"[:300]
    if isinstance(exc, MemoryError):
        return "failed", True, f"{item.rel}: out of host memory"
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return "failed", True, f"{item.rel}: out of GPU memory"
    except ImportError:  # pragma: no cover
        pass
    first = str(exc).splitlines()[0] if str(exc) else ""
    return "failed", False, _one_line(f"{item.rel}: {type(exc).__name__}: {first}", item)


def load_input(item: Item) -> tuple[Volume, str]:
    """Hash the input files, then read the volume (typed errors name files relative to root)."""
    sha = item.input_sha256()
    if item.kind == "nifti":
        from medgen.io.nifti import read_nifti

        vol = read_nifti(item.files[0], name=item.rel)
    else:
        from medgen.io.dicom_read import read_series_files

        vol = read_series_files([Path(f) for f in item.files], root=item.root)
    return vol, sha


def output_files(dst: str | Path, out_rel: str) -> list[tuple[str, str]]:
    """(path relative to DST, sha256) of every file of an output (a file or a series folder)."""
    p = Path(dst) / out_rel
    if p.is_file():
        return [(out_rel, sha256_file(p))]
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
    return [(q.relative_to(dst).as_posix(), sha256_file(q)) for q in files]


def write_output(item: Item, vol: Volume, ctx: JobContext) -> tuple[list[dict[str, str]], dict | None]:
    """Write atomically (NIfTI: temp + fsync + rename; DICOM: the whole series folder); return
    the output files with sha256 and the derived UIDs (DICOM)."""
    out = Path(ctx.dst) / item.out_rel
    uids = None
    if item.out_format == "nifti":
        from medgen.io.nifti import write_nifti

        # a predictor may mark its outputs (translate: synthetic) via meta["output_descrip"]
        write_nifti(vol, out, dtype="float32", descrip=str(vol.meta.get("output_descrip") or "medgen"))
    else:
        from medgen.io.dicom_write import write_dicom_series

        res = write_dicom_series(vol, out, digest=ctx.job_digest, derivation=ctx.derivation)
        uids = {"series_instance_uid": res["series_instance_uid"],
                "sop_instance_uids": res["sop_instance_uids"]}
    files = [{"path": p, "sha256": h} for p, h in output_files(ctx.dst, item.out_rel)]
    return files, uids


def is_done(item: Item, entry: dict[str, Any] | None, ctx: JobContext, input_sha: str) -> bool:
    """True when ``entry`` (the latest ledger line) proves the item's outputs are current."""
    if ctx.overwrite or not entry or entry.get("status") != "ok":
        return False
    if entry.get("job_digest") != ctx.job_digest or entry.get("input_sha256") != input_sha:
        return False
    if entry.get("out") != item.out_rel:
        return False
    recorded = {o["path"]: o["sha256"] for o in entry.get("outputs") or []}
    if not recorded:
        return False
    return dict(output_files(ctx.dst, item.out_rel)) == recorded


def quarantine_current(item: Item, entry: dict[str, Any] | None, ctx: JobContext,
                       input_sha: str | None) -> bool:
    """True when the item was quarantined before with the same input and job: skip it."""
    return (not ctx.overwrite and bool(entry) and entry.get("status") == "quarantined"
            and entry.get("input_sha256") == input_sha and input_sha is not None
            and entry.get("job_digest") == ctx.job_digest)


def base_record(item: Item, ctx: JobContext, attempt: int) -> dict[str, Any]:
    return {"v": LEDGER_VERSION, "item": item.id, "rel": item.rel, "out": item.out_rel,
            "attempt": attempt, "job_digest": ctx.job_digest,
            "weights_sha256": ctx.weights_sha256, "engine": ctx.engine,
            "input_sha256": None, "outputs": [], "uids": None, "error": None,
            "seconds": 0.0, "peak_rss_mb": None, "cuda_max_allocated_mb": None, "voxels": 0,
            "plan": None, "forward_seconds": 0.0}


def record_prediction(rec: dict[str, Any], vol: Volume, predictor: VolumePredictor) -> None:
    """What the ledger keeps about one prediction: voxels, plan, GPU memory, spacing warning."""
    rec["voxels"] = int(vol.array.size)
    rec["plan"] = predictor.notes.plan
    rec["cuda_max_allocated_mb"] = predictor.notes.cuda_max_allocated_mb
    if predictor.notes.spacing_mismatch:
        rec["spacing_mismatch"] = True


def attempt_item(predictor: VolumePredictor, item: Item, ctx: JobContext, attempt: int,
                 latest: dict[str, Any] | None) -> dict[str, Any]:
    """One sequential attempt (read, predict, write) - the Dask / GPU-process worker's step.

    Returns a record with ``status`` ok / failed / quarantined / skipped and ``transient``.
    """
    rec = base_record(item, ctx, attempt)
    t0 = time.perf_counter()
    f0 = predictor.stats.forward_seconds
    peak_rss_reset()
    try:
        if item.error:
            rec["input_sha256"] = _safe_input_sha(item)
            if quarantine_current(item, latest, ctx, rec["input_sha256"]):
                return {**latest, "status": "skipped", "prior_status": "quarantined",
                        "transient": False}
            raise ReadError(None, item.error)
        sha = item.input_sha256()
        rec["input_sha256"] = sha
        if is_done(item, latest, ctx, sha) or quarantine_current(item, latest, ctx, sha):
            return {**(latest or {}), "status": "skipped",
                    "prior_status": (latest or {}).get("status"), "transient": False}
        vol, _ = load_input(item)
        out = predictor(vol)
        record_prediction(rec, vol, predictor)
        del vol
        rec["outputs"], rec["uids"] = write_output(item, out, ctx)
        rec["status"], rec["transient"] = "ok", False
    except Exception as exc:  # noqa: BLE001 - per-item isolation: every error becomes a record
        status, transient, reason = classify(exc, item)
        if isinstance(exc, ReadError) and item.error and exc.reason == item.error:
            reason = item.error
        rec.update(status=status, transient=transient, error=reason)
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    rec["forward_seconds"] = round(predictor.stats.forward_seconds - f0, 4)
    rec["peak_rss_mb"] = peak_rss_mb()
    return rec


def _safe_input_sha(item: Item) -> str | None:
    try:
        return item.input_sha256()
    except Exception:  # noqa: BLE001 - a missing reject file has no digest
        return None


def run_item(predictor: VolumePredictor, item: Item, ctx: JobContext,
             latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """All attempts of one item (retrying transient errors with exponential backoff)."""
    records = []
    for attempt in range(1, ctx.retries + 2):
        rec = attempt_item(predictor, item, ctx, attempt, latest)
        records.append(rec)
        if not (rec.get("status") == "failed" and rec.get("transient")) or attempt > ctx.retries:
            break
        time.sleep(ctx.retry_delay * 2 ** (attempt - 1))
    return records


# --------------------------------------------------------------------------- summary


@dataclass
class JobSummary:
    """Counts, throughput and digests of one run of a job (``DST/summary.json``)."""

    task: str
    engine: str
    n_items: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    quarantined: int = 0
    retried: int = 0
    voxels: int = 0
    seconds: float = 0.0
    forward_seconds: float | None = None
    voxels_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    cuda_max_allocated_mb: float | None = None
    job_digest: str = ""
    weights_sha256: str | None = None
    input_digest: str = ""
    output_manifest_sha256: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    tracking_run_id: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if (self.failed or self.quarantined) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


# --------------------------------------------------------------------------- the job


Progress = Callable[[str, dict[str, Any]], None]


class Job:
    """A batch job over ``src`` writing into ``dst``.

    Parameters
    ----------
    spec : PredictorSpec
        How to build the predictor (here and on workers).
    src, dst : path
        Input folder / NIfTI file / manifest, and the output folder.
    output_format : {"auto", "nifti", "dicom"}
    overwrite : bool
        Re-run every item whatever the ledger says.
    retries, retry_delay : int, float
        Attempts after the first for transient errors; first backoff in seconds (doubles).
    root : path, optional
        Root of a manifest's files (default: recorded in its summary).
    prefetch : int
        Items read ahead / written behind the GPU (local engine).
    task : str
        Name used in logs, tracking and the summary (``denoise``, ``upscale``, ``translate``).
    """

    def __init__(self, spec: PredictorSpec, src: str | Path, dst: str | Path, *,
                 output_format: str = "auto", overwrite: bool = False, retries: int = 2,
                 retry_delay: float = 1.0, root: str | Path | None = None, prefetch: int = 2,
                 task: str = "denoise"):
        self.spec = spec
        self.src = Path(src)
        self.dst = Path(dst)
        self.output_format = output_format
        self.overwrite = overwrite
        self.retries = max(0, int(retries))
        self.retry_delay = float(retry_delay)
        self.root = root
        self.prefetch = max(1, int(prefetch))
        self.task = task
        self.items: list[Item] = []
        self.ledger: Ledger | None = None
        self.predictor: VolumePredictor | None = None
        self.ctx: JobContext | None = None
        self._lock_fh = None
        self._records: dict[str, dict[str, Any]] = {}
        self._input_sha: dict[str, str | None] = {}
        self._attempts = 0
        self._retried = 0
        self._all_records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ set-up
    def prepare(self, predictor: VolumePredictor | None = None, engine: str = "local") -> list[Item]:
        """Lock DST, clean temp leftovers, discover items, build the predictor, load the ledger."""
        self.dst.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        n = clean_temp(self.dst)
        if n:
            log.info("removed %d leftover temporary file(s) of an interrupted run", n)
        self.items = discover_items(self.src, self.dst, output_format=self.output_format,
                                    root=self.root)
        self.predictor = predictor or self.spec.build()
        self.job_digest = sha256_json(self.predictor.describe())
        self.ctx = JobContext(str(self.dst.resolve()), self.job_digest, self.predictor.derivation(),
                              self.predictor.weights_sha256, self.overwrite, self.retries,
                              self.retry_delay, engine)
        self.ledger = Ledger(self.dst / LEDGER_NAME)
        return self.items

    def _take_lock(self) -> None:
        import fcntl

        fh = open(self.dst / LOCK_NAME, "a+")  # noqa: SIM115 - held for the job's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ConfigError("DST", "another medgen job is writing to this output folder") from None
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                self._lock_fh.close()
            self._lock_fh = None

    # ------------------------------------------------------------------ results
    def record(self, rec: dict[str, Any], progress: Progress | None = None,
               final: bool = True) -> None:
        """Take one attempt's record: append it to the ledger (not skips), count, report.
        ``final=False``: a transient failure that will be retried."""
        status = rec["status"]
        iid = rec["item"]
        if status == "skipped":
            self._records[iid] = rec
            self._input_sha[iid] = rec.get("input_sha256")
        else:
            self._attempts += 1
            self._all_records.append(rec)
            if int(rec.get("attempt") or 1) > 1:
                self._retried += 1
            entry = {k: v for k, v in rec.items() if k not in ("transient", "prior_status")}
            entry["status"] = status
            assert self.ledger is not None
            prev = self.ledger.latest.get(iid)
            same_reject = (status == "quarantined" and prev is not None
                           and prev.get("status") == "quarantined"
                           and prev.get("error") == entry.get("error")
                           and prev.get("input_sha256") == entry.get("input_sha256")
                           and prev.get("job_digest") == entry.get("job_digest"))
            if not same_reject:
                self.ledger.append(entry)
            if status == "quarantined":
                self._append_quarantine(entry)
            self._records[iid] = rec
            self._input_sha[iid] = rec.get("input_sha256")
            if status != "ok":
                log.warning("item %s (%s) %s: %s", iid, rec.get("out") or rec.get("rel"),
                            status, rec.get("error"))
        if progress is not None:
            progress("item" if final else "retry", rec)

    def _append_quarantine(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"item": entry["item"], "rel": entry.get("rel"),
                           "input_sha256": entry.get("input_sha256"), "error": entry.get("error")},
                          sort_keys=True) + "\n"
        with open(self.dst / QUARANTINE_NAME, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    # ------------------------------------------------------------------ running
    def run(self, *, engine: str = "local", workers: int | None = None,
            scheduler: str | None = None, progress: Progress | None = None,
            predictor: VolumePredictor | None = None, processes: bool = True) -> JobSummary:
        """Run every pending item with the chosen engine and write ledger, quarantine list,
        output manifest and summary."""
        t0 = time.perf_counter()
        try:
            if self.ctx is None:
                self.prepare(predictor, engine)
            assert self.predictor is not None and self.ctx is not None and self.ledger is not None
            if progress is not None:
                progress("start", {"total": len(self.items)})
            if engine == "local":
                from medgen.infer.engines.local import run_local

                run_local(self, self.items, progress=progress, workers=workers)
            elif engine == "dask":
                from medgen.infer.engines.dask import run_dask

                run_dask(self, self.items, progress=progress, scheduler=scheduler,
                         workers=workers, processes=processes)
            else:
                raise ConfigError("--engine", f"unknown engine '{engine}' (local or dask)")
            return self.finish(engine, time.perf_counter() - t0)
        finally:
            self.close()

    def finish(self, engine: str, seconds: float) -> JobSummary:
        assert self.predictor is not None and self.ledger is not None
        s = JobSummary(task=self.task, engine=engine, n_items=len(self.items),
                       job_digest=self.job_digest, weights_sha256=self.predictor.weights_sha256)
        s.seconds = round(seconds, 3)
        peak_cuda = []
        for it in self.items:
            rec = self._records.get(it.id)
            if rec is None:  # never came back (should not happen): count as failed
                s.failed += 1
                s.failures.append({"item": it.id, "rel": it.rel, "status": "failed",
                                   "error": "no result"})
                continue
            st = rec["status"]
            if st == "skipped":
                s.skipped += 1
                if rec.get("prior_status") == "quarantined":
                    s.quarantined += 1
                    s.failures.append({"item": it.id, "rel": it.rel, "status": "quarantined",
                                       "error": rec.get("error") or ""})
            elif st == "ok":
                s.ok += 1
                s.voxels += int(rec.get("voxels") or 0)
            else:
                setattr(s, st, getattr(s, st) + 1)
                s.failures.append({"item": it.id, "rel": it.rel, "status": st,
                                   "error": rec.get("error") or ""})
            if rec.get("cuda_max_allocated_mb"):
                peak_cuda.append(float(rec["cuda_max_allocated_mb"]))
            s.peak_rss_mb = max(s.peak_rss_mb, float(rec.get("peak_rss_mb") or 0.0))
        s.retried = self._retried
        s.cuda_max_allocated_mb = max(peak_cuda) if peak_cuda else None
        fwd = [float(r.get("forward_seconds") or 0.0) for r in self._all_records]
        s.forward_seconds = round(sum(fwd), 3) if fwd else None
        s.voxels_per_s = round(s.voxels / seconds, 1) if seconds > 0 else 0.0
        s.input_digest = sha256_json(sorted([[i.id, self._input_sha.get(i.id)] for i in self.items],
                                            key=lambda p: p[0]))
        manifest = self.output_manifest()
        data = canonical_json(manifest)
        atomic_write_text(self.dst / OUTPUT_MANIFEST_NAME, data.decode("utf-8") + "\n")
        s.output_manifest_sha256 = sha256_bytes(data)
        self._rewrite_quarantine()
        atomic_write_text(self.dst / SUMMARY_NAME, json.dumps(s.to_dict(), indent=1, sort_keys=True) + "\n")
        return s

    def output_manifest(self) -> dict[str, Any]:
        """Item id, relative output path and sha256 of every output file (ok items)."""
        assert self.ledger is not None
        rows = []
        for it in sorted(self.items, key=lambda i: i.id):
            e = self.ledger.latest.get(it.id)
            if e and e.get("status") == "ok" and e.get("job_digest") == self.job_digest:
                rows.append({"item": it.id, "out": e.get("out"),
                             "input_sha256": e.get("input_sha256"),
                             "files": [{"path": o["path"], "sha256": o["sha256"]}
                                       for o in e.get("outputs") or []]})
        return {"kind": "medgen-infer-outputs", "version": 1, "task": self.task,
                "job_digest": self.job_digest, "weights_sha256": self.predictor.weights_sha256
                if self.predictor else None, "items": rows}

    def _rewrite_quarantine(self) -> None:
        assert self.ledger is not None
        ids = {i.id for i in self.items}
        rows = [e for k, e in sorted(self.ledger.latest.items())
                if k in ids and e.get("status") == "quarantined"]
        path = self.dst / QUARANTINE_NAME
        if rows:
            atomic_write_text(path, "".join(
                json.dumps({"item": e["item"], "rel": e.get("rel"),
                            "input_sha256": e.get("input_sha256"), "error": e.get("error")},
                           sort_keys=True) + "\n" for e in rows))
        elif path.exists():
            path.unlink()
