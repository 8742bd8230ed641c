"""The local engine: the attempt's stages on three threads, or one worker process per device.

In this process (CPU, or one GPU), :class:`StagedRunner` runs :class:`medgen.infer.attempt.Attempt`
stages where they overlap best: ``load`` (digest, resume check, decode) on a reader thread up to
``prefetch`` items ahead, ``predict`` on the calling thread, ``write`` (atomic write + digests) on
a writer thread while the next item computes. Queues are bounded, so memory holds at most
``prefetch`` volumes on either side. The stages are the attempt path's own methods, so the bytes
written are those of :func:`medgen.infer.attempt.attempt_item`, which the other engines run.

Several visible GPUs (``--device auto|cuda``), or ``--workers N`` > 1 on CPU: one spawned worker
process per device, each running whole items through :func:`medgen.infer.engines.worker_task`;
the job's process writes the ledger from their records.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from medgen.infer.attempt import Attempt, retry_delay
from medgen.infer.engines import EngineHost, Progress, lost_record, worker_task

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.items import Item

log = logging.getLogger("medgen.infer")


def _gpu_devices(spec_device: str) -> list[str]:
    import torch

    if spec_device not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


class LocalEngine:
    """``--engine local`` (``workers``: processes; default one per visible GPU, else none)."""

    name = "local"

    def __init__(self, workers: int | None = None, **_: Any):
        self.workers = workers

    def devices(self, spec_device: str) -> list[str]:
        """Worker processes to start (one device each); empty: run in this process."""
        gpus = _gpu_devices(spec_device)
        if len(gpus) > 1 and (self.workers is None or self.workers > 1):
            return gpus[: self.workers or len(gpus)]
        if not gpus and self.workers and self.workers > 1:
            return ["cpu"] * self.workers
        return []

    def run(self, host: EngineHost, items: Sequence[Item], progress: Progress | None = None) -> None:
        devices = self.devices(host.spec.settings.device)
        if devices:
            _run_processes(host, items, devices, progress)
        else:
            StagedRunner(host, items, progress).run()


# --------------------------------------------------------------------------- in this process


class StagedRunner:
    """Reader thread (``load``) -> this thread (``predict``) -> writer thread (``write``), with
    retries of transient failures after their backoff."""

    def __init__(self, host: EngineHost, items: Sequence[Item], progress: Progress | None = None):
        self.host = host
        self.progress = progress
        self.ctx = host.ctx
        self.queue: deque[tuple[Item, int]] = deque((it, 1) for it in items)
        self.retry_heap: list[tuple[float, int, Item, int]] = []
        self._seq = 0

    def _load(self, item: Item, number: int) -> tuple[Attempt, bool]:
        a = Attempt(item, self.ctx, number, self.host.latest(item.id))
        return a, a.load()

    @staticmethod
    def _write(a: Attempt) -> Attempt:
        a.write()
        return a

    def _next(self) -> tuple[Item, int] | None:
        if self.retry_heap and self.retry_heap[0][0] <= time.monotonic():
            _, _, item, number = heapq.heappop(self.retry_heap)
            return item, number
        return self.queue.popleft() if self.queue else None

    def _finish(self, a: Attempt) -> None:
        rec = a.result()
        delay = retry_delay(rec, self.ctx)
        if delay is not None:
            rec["error"] = f"{rec.get('error')} (retrying in {delay:g} s)"
            self._seq += 1
            heapq.heappush(self.retry_heap, (time.monotonic() + delay, self._seq, a.item,
                                             int(rec["attempt"]) + 1))
        self.host.record(rec, self.progress, final=delay is None)

    def run(self) -> None:
        prefetch = self.host.prefetch
        reads: deque[Future] = deque()
        writes: deque[Future] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="medgen-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="medgen-write") as writer:
            while True:
                while len(reads) < prefetch and (nxt := self._next()) is not None:
                    reads.append(reader.submit(self._load, *nxt))
                while writes and writes[0].done():
                    self._finish(writes.popleft().result())
                if reads:
                    a, loaded = reads.popleft().result()
                    if not (loaded and a.predict(self.host.predictor)):
                        self._finish(a)
                        continue
                    while len(writes) >= prefetch:  # bounded write-behind
                        self._finish(writes.popleft().result())
                    writes.append(writer.submit(self._write, a))
                elif writes:
                    self._finish(writes.popleft().result())
                elif self.retry_heap:
                    time.sleep(max(0.0, min(1.0, self.retry_heap[0][0] - time.monotonic())))
                else:
                    break


# --------------------------------------------------------------------------- processes


_proc_spec = None


def _init_proc(spec, devices_queue, threads: int | None) -> None:
    global _proc_spec
    dev = devices_queue.get()
    changes: dict[str, Any] = {"device": dev}
    if dev == "cpu" and spec.settings.threads is None:  # --threads, when given, wins
        changes["threads"] = threads
    _proc_spec = spec.with_settings(**changes)


def _proc_task(item, ctx, latest):
    return worker_task(_proc_spec, item, ctx, latest)


def _run_processes(host: EngineHost, items: Sequence[Item], devices: list[str],
                   progress: Progress | None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    for d in devices:
        q.put(d)
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    log.info("local engine: %d worker process(es) on %s", len(devices), ", ".join(sorted(set(devices))))
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_proc,
                             initargs=(host.spec, q, threads)) as pool:
        futs = {pool.submit(_proc_task, it, host.ctx, host.latest(it.id)): it for it in items}
        for fut in as_completed(futs):
            it = futs[fut]
            try:
                records = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died: the item failed this run
                records = [lost_record(it, host.ctx, exc, "worker lost")]
            for i, r in enumerate(records):
                host.record(r, progress, final=i == len(records) - 1)
