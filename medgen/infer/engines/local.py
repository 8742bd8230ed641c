"""The local engine: an in-process pipeline, or one worker process per GPU.

In-process (CPU, or one GPU): reading (hashing the input, resume check, decoding DICOM/NIfTI)
runs on a reader thread up to ``prefetch`` items ahead, the model runs on the calling thread, and
outputs are written (and hashed) on a writer thread while the next item computes; the queues are
bounded, so memory holds at most ``prefetch`` volumes on either side. The bytes written are those
of the sequential path (:func:`medgen.infer.job.attempt_item`), which the Dask engine uses.

Several visible GPUs (``--device auto|cuda``): one spawned worker process per GPU (``--workers``
caps the count; on CPU ``--workers N`` > 1 also starts N processes, each with its share of the
cores), each running whole items; the job's process writes the ledger from their records.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from medgen.infer.job import (
    base_record,
    classify,
    is_done,
    load_input,
    peak_rss_mb,
    peak_rss_reset,
    quarantine_current,
    record_prediction,
    write_output,
)

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Item, Job

log = logging.getLogger("medgen.infer")


def _gpu_devices(spec_device: str) -> list[str]:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return []
    if spec_device not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def run_local(job: Job, items: list[Item], *, progress: Callable | None = None,
              workers: int | None = None) -> None:
    """Run ``items`` of ``job`` locally (see module docstring)."""
    gpus = _gpu_devices(job.spec.settings.device)
    if len(gpus) > 1 and (workers is None or workers > 1):
        devices = gpus[: workers or len(gpus)]
    elif not gpus and workers and workers > 1:
        devices = ["cpu"] * workers
    else:
        devices = []
    if devices:
        _run_processes(job, items, devices, progress)
    else:
        Pipeline(job, items, progress).run()


# --------------------------------------------------------------------------- in-process pipeline


class Pipeline:
    """Reader thread -> model (this thread) -> writer thread, with retries and backoff."""

    def __init__(self, job: Job, items: list[Item], progress: Callable | None = None):
        self.job = job
        self.items = items
        self.progress = progress
        self.ctx = job.ctx
        self.predictor = job.predictor
        self.prefetch = job.prefetch
        self.queue: deque[tuple[Item, int]] = deque((it, 1) for it in items)
        self.retry_heap: list[tuple[float, int, Item, int]] = []
        self._seq = 0

    # ------------------------------------------------------------------ stages
    def _read(self, item: Item, attempt: int) -> dict[str, Any]:
        """Reader thread: hash, resume check, read. Never raises."""
        rec = base_record(item, self.ctx, attempt)
        t0 = time.perf_counter()
        latest = self.job.ledger.latest.get(item.id)
        try:
            if item.error:
                from medgen.errors import ReadError
                from medgen.infer.job import _safe_input_sha

                rec["input_sha256"] = _safe_input_sha(item)
                if quarantine_current(item, latest, self.ctx, rec["input_sha256"]):
                    return {"rec": {**latest, "status": "skipped", "prior_status": "quarantined"}}
                raise ReadError(None, item.error)
            sha = item.input_sha256()
            rec["input_sha256"] = sha
            if is_done(item, latest, self.ctx, sha) or quarantine_current(item, latest, self.ctx, sha):
                return {"rec": {**latest, "status": "skipped", "prior_status": latest.get("status")}}
            vol, _ = load_input(item)
            rec["seconds"] = time.perf_counter() - t0
            return {"rec": rec, "vol": vol}
        except Exception as exc:  # noqa: BLE001 - isolated per item
            status, transient, reason = classify(exc, item)
            if item.error:
                reason = item.error
            rec.update(status=status, transient=transient, error=reason,
                       seconds=round(time.perf_counter() - t0, 4))
            return {"rec": rec}

    def _write(self, item: Item, rec: dict[str, Any], out) -> dict[str, Any]:
        """Writer thread: atomic write + output hashes. Never raises."""
        t0 = time.perf_counter()
        try:
            rec["outputs"], rec["uids"] = write_output(item, out, self.ctx)
            rec.update(status="ok", transient=False)
        except Exception as exc:  # noqa: BLE001
            status, transient, reason = classify(exc, item)
            rec.update(status=status, transient=transient, error=reason)
        rec["seconds"] = round(rec["seconds"] + time.perf_counter() - t0, 4)
        return rec

    # ------------------------------------------------------------------ control
    def _next(self) -> tuple[Item, int] | None:
        now = time.monotonic()
        if self.retry_heap and self.retry_heap[0][0] <= now:
            _, _, item, attempt = heapq.heappop(self.retry_heap)
            return item, attempt
        if self.queue:
            return self.queue.popleft()
        return None

    def _finish(self, item: Item, rec: dict[str, Any]) -> None:
        attempt = int(rec.get("attempt") or 1)
        if rec.get("status") == "failed" and rec.get("transient") and attempt <= self.ctx.retries:
            delay = self.ctx.retry_delay * 2 ** (attempt - 1)
            rec = {**rec, "error": f"{rec.get('error')} (retrying in {delay:g} s)"}
            self._seq += 1
            heapq.heappush(self.retry_heap, (time.monotonic() + delay, self._seq, item, attempt + 1))
            self.job.record(rec, self.progress, final=False)
            return
        self.job.record(rec, self.progress)

    def run(self) -> None:
        reads: deque[tuple[Item, int, Future]] = deque()
        writes: deque[tuple[Item, Future]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="medgen-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="medgen-write") as writer:
            while True:
                while len(reads) < self.prefetch:
                    nxt = self._next()
                    if nxt is None:
                        break
                    reads.append((nxt[0], nxt[1], reader.submit(self._read, nxt[0], nxt[1])))
                while writes and writes[0][1].done():
                    item, fut = writes.popleft()
                    self._finish(item, fut.result())
                if reads:
                    item, attempt, fut = reads.popleft()
                    got = fut.result()
                    rec = got["rec"]
                    if "vol" not in got:
                        self._finish(item, rec)
                        continue
                    out = self._compute(item, rec, got.pop("vol"))
                    if out is None:
                        self._finish(item, rec)
                        continue
                    while len(writes) >= self.prefetch:  # bounded write-behind
                        witem, wfut = writes.popleft()
                        self._finish(witem, wfut.result())
                    writes.append((item, writer.submit(self._write, item, rec, out)))
                elif writes:
                    item, fut = writes.popleft()
                    self._finish(item, fut.result())
                elif self.retry_heap:
                    time.sleep(max(0.0, min(1.0, self.retry_heap[0][0] - time.monotonic())))
                else:
                    break

    def _compute(self, item: Item, rec: dict[str, Any], vol) -> Any:
        p = self.predictor
        t0 = time.perf_counter()
        f0 = p.stats.forward_seconds
        peak_rss_reset()
        try:
            out = p(vol)
            record_prediction(rec, vol, p)
        except Exception as exc:  # noqa: BLE001
            status, transient, reason = classify(exc, item)
            rec.update(status=status, transient=transient, error=reason)
            out = None
        rec["seconds"] = rec["seconds"] + time.perf_counter() - t0
        rec["forward_seconds"] = round(p.stats.forward_seconds - f0, 4)
        rec["peak_rss_mb"] = peak_rss_mb()
        if out is None:
            rec["seconds"] = round(rec["seconds"], 4)
        return out


# --------------------------------------------------------------------------- processes


_proc_spec = None


def _init_proc(spec, devices_queue, threads: int | None) -> None:
    global _proc_spec
    dev = devices_queue.get()
    settings_threads = threads if dev == "cpu" else None
    import dataclasses

    _proc_spec = dataclasses.replace(
        spec, settings=dataclasses.replace(spec.settings, device=dev,
                                           threads=settings_threads or spec.settings.threads))


def _proc_task(item, ctx, latest):
    from medgen.infer.engines import worker_task

    return worker_task(_proc_spec, item, ctx, latest)


def _run_processes(job: Job, items: list[Item], devices: list[str], progress) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    for d in devices:
        q.put(d)
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    log.info("local engine: %d worker process(es) on %s", len(devices), ", ".join(sorted(set(devices))))
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_proc,
                             initargs=(job.spec, q, threads)) as pool:
        futs = {pool.submit(_proc_task, it, job.ctx, job.ledger.latest.get(it.id)): it for it in items}
        for fut in as_completed(futs):
            it = futs[fut]
            try:
                records = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died: the item failed this run
                from medgen.infer.job import classify as _cls

                rec = base_record(it, job.ctx, 1)
                status, transient, reason = _cls(exc, it)
                rec.update(status="failed", transient=False, error=f"worker lost: {reason}")
                records = [rec]
            for i, r in enumerate(records):
                job.record(r, progress, final=i == len(records) - 1)
