"""THE attempt path: every engine runs every item through this code, and only this code.

One attempt of one item has three stages, always in this order::

    load     hash the input (the source's fingerprint), decide resume (skip when done or still
             quarantined), read the volume
    predict  the predictor: one volume in, one volume out
    write    the sink writes the output atomically and digests it

and ends as one *record* (what the job appends to the ledger). Each stage catches every error and
turns it into the record's ``status`` (``quarantined`` / ``failed``, with ``transient`` and a
one-line ``error`` naming the file) - nothing escapes an attempt. Engines differ only in where the
stages run: :func:`attempt_item` runs them one after the other (Dask workers, GPU worker
processes); the local engine runs ``load`` on a reader thread, ``predict`` on the main thread and
``write`` on a writer thread, calling the same :class:`Attempt` methods. Retries of transient
errors follow :func:`retry_delay` in both.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medgen.errors import MedgenError, ReadError, UnsafePathError, WriteError
from medgen.infer.errors import TransientInferenceError, UnsuitableInputError
from medgen.infer.ledger import LEDGER_VERSION

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.items import Item
    from medgen.infer.predictor import VolumePredictor
    from medgen.infer.sinks import OutputSink
    from medgen.infer.sources import ItemSource


@dataclass
class JobContext:
    """What an attempt needs besides the predictor and the item (picklable, sent to workers)."""

    source: ItemSource
    sink: OutputSink
    job_digest: str
    derivation: str
    weights_sha256: str | None
    overwrite: bool = False
    retries: int = 2
    retry_delay: float = 1.0
    engine: str = "local"


# --------------------------------------------------------------------------- memory figures


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


# --------------------------------------------------------------------------- errors


def scrub(text: str, item: Item, limit: int = 300) -> str:
    """One line, with the item's absolute input folders replaced by ``<src>``."""
    text = " ".join(str(text).split())
    for secret in sorted({item.root, *(os.path.dirname(f) for f in item.files)}, key=len,
                         reverse=True):
        if secret and len(secret) > 1:
            text = text.replace(secret, "<src>")
    return text[:limit]


def classify(exc: BaseException, item: Item) -> tuple[str, bool, str]:
    """(status, transient, one-line reason naming the item's file) for an exception."""
    if isinstance(exc, TransientInferenceError):
        return "failed", True, f"{item.rel}: {exc.reason}"
    if isinstance(exc, (ReadError, UnsuitableInputError, WriteError, UnsafePathError)):
        if isinstance(exc, ReadError) and item.error and exc.reason == item.error:
            return "quarantined", False, item.error
        return "quarantined", False, scrub(f"{exc.where or item.rel}: {exc.reason}", item)
    if isinstance(exc, MedgenError):
        return "failed", False, scrub(f"{exc.where or item.rel}: {exc.reason}", item)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return "failed", False, f"{item.rel}: {type(exc).__name__} ({exc.strerror or 'error'})"
    if isinstance(exc, OSError):
        return "failed", True, f"{item.rel}: {type(exc).__name__} ({exc.strerror or exc})"[:300]
    if isinstance(exc, MemoryError):
        return "failed", True, f"{item.rel}: out of host memory"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without torch
        return "failed", True, f"{item.rel}: out of GPU memory"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return "failed", False, scrub(f"{item.rel}: {type(exc).__name__}: {first}", item)


def retry_delay(rec: dict[str, Any], ctx: JobContext) -> float | None:
    """Seconds to wait before attempting the item again, or None (no retry): transient failures
    are retried ``ctx.retries`` times with exponential backoff."""
    attempt = int(rec.get("attempt") or 1)
    if rec.get("status") == "failed" and rec.get("transient") and attempt <= ctx.retries:
        return ctx.retry_delay * 2 ** (attempt - 1)
    return None


# --------------------------------------------------------------------------- resume rules


def is_done(item: Item, entry: dict[str, Any] | None, ctx: JobContext, input_sha: str) -> bool:
    """True when ``entry`` (the latest ledger line) proves the item's outputs are current."""
    if ctx.overwrite or not entry or entry.get("status") != "ok":
        return False
    if entry.get("job_digest") != ctx.job_digest or entry.get("input_sha256") != input_sha:
        return False
    if entry.get("out") != item.out_rel:
        return False
    recorded = {o["path"]: o["sha256"] for o in entry.get("outputs") or []}
    return ctx.sink.current(item, recorded)


def quarantine_current(entry: dict[str, Any] | None, ctx: JobContext, input_sha: str | None) -> bool:
    """True when the item was quarantined before with the same input and job: skip it."""
    return (not ctx.overwrite and bool(entry) and entry.get("status") == "quarantined"
            and input_sha is not None and entry.get("input_sha256") == input_sha
            and entry.get("job_digest") == ctx.job_digest)


def base_record(item: Item, ctx: JobContext, attempt: int) -> dict[str, Any]:
    return {"v": LEDGER_VERSION, "item": item.id, "rel": item.rel, "out": item.out_rel,
            "attempt": attempt, "job_digest": ctx.job_digest,
            "weights_sha256": ctx.weights_sha256, "engine": ctx.engine,
            "input_sha256": None, "outputs": [], "uids": None, "error": None,
            "seconds": 0.0, "peak_rss_mb": None, "cuda_max_allocated_mb": None, "voxels": 0,
            "plan": None, "forward_seconds": 0.0}


# --------------------------------------------------------------------------- the attempt


class Attempt:
    """One attempt of one item: :meth:`load`, :meth:`predict`, :meth:`write`, then
    :attr:`record`. A stage that returns False ended the attempt (skip or error recorded)."""

    def __init__(self, item: Item, ctx: JobContext, number: int, latest: dict[str, Any] | None):
        self.item = item
        self.ctx = ctx
        self.latest = latest
        self.record = base_record(item, ctx, number)
        self.vol = None
        self.out = None
        self._seconds = 0.0

    def _fail(self, exc: BaseException) -> bool:
        status, transient, reason = classify(exc, self.item)
        self.record.update(status=status, transient=transient, error=reason)
        return False

    def _skip(self) -> bool:
        prior = (self.latest or {}).get("status")
        self.record = {**(self.latest or {}), "status": "skipped", "prior_status": prior,
                       "transient": False}
        return False

    def load(self) -> bool:
        """Digest the input, apply the resume rules, read the volume."""
        t0 = time.perf_counter()
        try:
            return self._load()
        except Exception as exc:  # noqa: BLE001 - per-item isolation: every error is a record
            return self._fail(exc)
        finally:
            self._seconds += time.perf_counter() - t0

    def _load(self) -> bool:
        item, ctx, rec = self.item, self.ctx, self.record
        if item.error:
            with contextlib.suppress(Exception):  # a refused file may be unreadable: no digest
                rec["input_sha256"] = ctx.source.fingerprint(item)
            if quarantine_current(self.latest, ctx, rec["input_sha256"]):
                return self._skip()
            raise ReadError(None, item.error)
        rec["input_sha256"] = sha = ctx.source.fingerprint(item)
        if is_done(item, self.latest, ctx, sha) or quarantine_current(self.latest, ctx, sha):
            return self._skip()
        ctx.sink.check(item)  # again: a link may have appeared in DST since discovery
        self.vol = ctx.source.load(item)
        return True

    def predict(self, predictor: VolumePredictor) -> bool:
        """Run the predictor on the loaded volume (forward time and peak memory recorded)."""
        rec = self.record
        t0 = time.perf_counter()
        f0 = predictor.stats.forward_seconds
        peak_rss_reset()
        try:
            self.out = predictor(self.vol)
            rec["voxels"] = int(self.vol.array.size)
            rec["plan"] = predictor.notes.plan
            rec["cuda_max_allocated_mb"] = predictor.notes.cuda_max_allocated_mb
            rec["threads"] = predictor.notes.threads
            if predictor.notes.spacing_mismatch:
                rec["spacing_mismatch"] = True
            return True
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc)
        finally:
            self.vol = None
            self._seconds += time.perf_counter() - t0
            rec["forward_seconds"] = round(predictor.stats.forward_seconds - f0, 4)
            rec["peak_rss_mb"] = peak_rss_mb()

    def write(self) -> bool:
        """Hand the output to the sink (atomic write + digests)."""
        t0 = time.perf_counter()
        try:
            w = self.ctx.sink.write(self.item, self.out, job_digest=self.ctx.job_digest,
                                    derivation=self.ctx.derivation)
            self.record.update(outputs=w.outputs, uids=w.uids, status="ok", transient=False)
            return True
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc)
        finally:
            self.out = None
            self._seconds += time.perf_counter() - t0

    def result(self) -> dict[str, Any]:
        """The attempt's record (call after the last stage that ran)."""
        if self.record.get("status") != "skipped":
            self.record["seconds"] = round(self._seconds, 4)
        return self.record


def attempt_item(predictor: VolumePredictor, item: Item, ctx: JobContext, number: int,
                 latest: dict[str, Any] | None) -> dict[str, Any]:
    """One attempt, stages one after the other (Dask workers, GPU worker processes)."""
    a = Attempt(item, ctx, number, latest)
    _ = a.load() and a.predict(predictor) and a.write()
    return a.result()


def run_item(predictor: VolumePredictor, item: Item, ctx: JobContext,
             latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every attempt of one item (transient errors retried after :func:`retry_delay`)."""
    records = []
    number = 1
    while True:
        rec = attempt_item(predictor, item, ctx, number, latest)
        delay = retry_delay(rec, ctx)
        if delay is not None:
            rec["error"] = f"{rec.get('error')} (retrying in {delay:g} s)"
        records.append(rec)
        if delay is None:
            return records
        time.sleep(delay)
        number += 1
