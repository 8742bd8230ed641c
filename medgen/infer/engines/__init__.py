"""Execution engines for :class:`medgen.infer.job.Job`.

* ``local`` (:mod:`.local`): in-process pipeline (a reader thread prefetching the next items, the
  model on the main thread, a writer thread writing the previous outputs); with several visible
  GPUs, one worker process per GPU.
* ``dask`` (:mod:`.dask`): one task per item on a Dask cluster (``--scheduler tcp://HOST:PORT``
  joins one, ``--workers N`` starts a ``LocalCluster``).

Whatever the engine, workers only compute and write outputs; the ledger is written by the job's
own process from the records workers return, so resume semantics are identical.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Item, JobContext
    from medgen.infer.predictor import PredictorSpec, VolumePredictor

_cache: dict[tuple[str, int], Any] = {}
_cache_lock = threading.Lock()


def worker_predictor(spec: PredictorSpec) -> VolumePredictor:
    """The predictor for ``spec`` in this worker (built once per process and thread)."""
    key = (spec.key(), threading.get_ident())
    with _cache_lock:
        p = _cache.get(key)
    if p is None:
        p = spec.build()
        with _cache_lock:
            _cache[key] = p
    return p


def worker_task(spec: PredictorSpec, item: Item, ctx: JobContext,
                latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Run every attempt of one item on a worker; returns the records for the client's ledger."""
    import os
    import socket

    from medgen.infer.job import run_item

    predictor = worker_predictor(spec)
    records = run_item(predictor, item, ctx, latest)
    for r in records:
        r["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return records
