"""The Dask engine: one task per item on a Dask cluster, the ledger kept by the client.

``scheduler="tcp://HOST:PORT"`` joins a running cluster (e.g. one started by dask-jobqueue under
Slurm, see docs/inference.md); ``workers=N`` starts a ``LocalCluster`` of N single-threaded
workers (processes by default; ``processes=False`` runs them as threads of this process). Each
task runs every attempt of one item on a worker (:func:`medgen.infer.engines.worker_task`, the
attempt path) and returns the records; the client appends them to the ledger, so resume and
quarantine behave exactly as with the local engine, and outputs are byte-identical. Dask re-runs
a task whose worker died (``task_retries``); inputs, checkpoint and DST must be on a filesystem
every worker sees.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medgen.errors import ConfigError
from medgen.infer.engines import EngineHost, Progress, lost_record, worker_task

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.items import Item

log = logging.getLogger("medgen.infer")


class DaskEngine:
    """``--engine dask`` (``scheduler`` to join, or ``workers`` to start a LocalCluster)."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 processes: bool = True, task_retries: int = 1, **_: Any):
        if scheduler and workers:
            raise ConfigError("--workers", "give either --scheduler (join) or --workers (start), "
                              "not both")
        self.workers = workers
        self.scheduler = scheduler
        self.processes = processes
        self.task_retries = task_retries

    def _client(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover
            raise ConfigError("--engine", "dask needs the 'distributed' package") from None
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="30s"), None
            except OSError as exc:
                raise ConfigError("--scheduler", "cannot reach the Dask scheduler "
                                  f"({type(exc).__name__})") from None
        cluster = LocalCluster(n_workers=max(1, int(self.workers or 1)), threads_per_worker=1,
                               processes=self.processes, dashboard_address=None)
        return Client(cluster), cluster

    def run(self, host: EngineHost, items: Sequence[Item], progress: Progress | None = None) -> None:
        """Submit one task per item and record results as they complete."""
        from distributed import as_completed

        client, cluster = self._client()
        try:
            tag = uuid.uuid4().hex[:8]
            futs = {client.submit(worker_task, host.spec, it, host.ctx, host.latest(it.id),
                                  key=f"medgen-item-{it.id}-{tag}", pure=False,
                                  retries=self.task_retries): it for it in items}
            for fut in as_completed(list(futs)):
                it = futs[fut]
                try:
                    records = fut.result()
                except Exception as exc:  # noqa: BLE001 - the task itself broke (worker lost...)
                    records = [lost_record(it, host.ctx, exc, "dask task failed")]
                for i, r in enumerate(records):
                    host.record(r, progress, final=i == len(records) - 1)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
