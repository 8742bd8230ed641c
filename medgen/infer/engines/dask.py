"""The Dask engine: one task per item on a Dask cluster, the ledger kept by the client.

``scheduler="tcp://HOST:PORT"`` joins a running cluster (e.g. one started by dask-jobqueue under
Slurm, see docs/inference.md); ``workers=N`` starts a ``LocalCluster`` of N single-threaded
workers (processes by default; ``processes=False`` runs them as threads of this process). Each
task runs every attempt of one item on a worker (:func:`medgen.infer.engines.worker_task`: read,
predict, write atomically, hash) and returns the records; the client appends them to the ledger,
so resume and quarantine behave exactly as with the local engine, and outputs are byte-identical
(same code path, one window per forward on CPU). Dask re-runs a task whose worker died
(``retries``); inputs, checkpoint and ``DST`` must be on a filesystem every worker sees.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from medgen.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Item, Job

log = logging.getLogger("medgen.infer")


def run_dask(job: Job, items: list[Item], *, progress: Callable | None = None,
             scheduler: str | None = None, workers: int | None = None,
             processes: bool = True, task_retries: int = 1) -> None:
    """Submit one task per item and record results as they complete."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover
        raise ConfigError("--engine", "dask needs the 'distributed' package") from None
    from medgen.infer.engines import worker_task
    from medgen.infer.job import _one_line, base_record

    cluster = None
    if scheduler:
        if workers:
            raise ConfigError("--workers", "give either --scheduler (join) or --workers (start), not both")
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ConfigError("--scheduler", f"cannot reach the Dask scheduler ({type(exc).__name__})") from None
    else:
        cluster = LocalCluster(n_workers=max(1, int(workers or 1)), threads_per_worker=1,
                               processes=processes, dashboard_address=None)
        client = Client(cluster)
    try:
        spec = job.spec
        tag = uuid.uuid4().hex[:8]
        futs = {}
        for it in items:
            fut = client.submit(worker_task, spec, it, job.ctx, job.ledger.latest.get(it.id),
                                key=f"medgen-item-{it.id}-{tag}", pure=False, retries=task_retries)
            futs[fut] = it
        for fut in as_completed(list(futs)):
            it = futs[fut]
            try:
                records = fut.result()
            except Exception as exc:  # noqa: BLE001 - the task itself broke (worker lost, ...)
                rec = base_record(it, job.ctx, 1)
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                rec.update(status="failed", transient=False, error=_one_line(
                    f"{it.rel}: dask task failed ({type(exc).__name__}: {first})", it))
                records = [rec]
            for i, r in enumerate(records):
                job.record(r, progress, final=i == len(records) - 1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
