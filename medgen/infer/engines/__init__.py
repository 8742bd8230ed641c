"""Execution engines: where the attempts of a job run. One protocol, one registry.

* ``local`` (:class:`.local.LocalEngine`): in this process - a reader thread loads the next
  items, the model runs on the main thread, a writer thread writes the previous outputs; with
  several visible GPUs (or ``--workers N`` on CPU), one worker process per device.
* ``dask`` (:class:`.dask.DaskEngine`): one task per item on a Dask cluster (``--scheduler
  tcp://HOST:PORT`` joins one, ``--workers N`` starts a ``LocalCluster``).

Every engine runs the one attempt path (:mod:`medgen.infer.attempt`): workers only load, predict
and write; the job's own process appends the records they return to the ledger
(:meth:`EngineHost.record`), so resume, quarantine and the summary never depend on the engine.

A third-party engine is a class with ``name`` and ``run(host, items, progress)`` registered under
the entry-point group ``medgen.engines`` (or ``ENGINES.register("name", Class)`` in code);
``--engine`` then accepts its name, and a misspelt name is answered with the nearest one.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medgen.infer.engines.registry import ENGINES, check_engine_name, make_engine

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.attempt import JobContext
    from medgen.infer.items import Item
    from medgen.infer.predictor import PredictorSpec, VolumePredictor

__all__ = ["ENGINES", "Engine", "EngineHost", "Progress", "check_engine_name", "make_engine",
           "worker_task"]

Progress = Callable[[str, dict[str, Any]], None]


class EngineHost(Protocol):
    """What an engine sees of the job (:class:`medgen.infer.job.Job` implements it)."""

    spec: PredictorSpec
    ctx: JobContext
    predictor: VolumePredictor
    prefetch: int

    def latest(self, item_id: str) -> dict[str, Any] | None:
        """The item's latest ledger line (resume decisions are made from it)."""

    def record(self, rec: dict[str, Any], progress: Progress | None = None, final: bool = True) -> None:
        """Take one attempt's record (ledger, counts, progress); ``final=False``: will retry."""


@runtime_checkable
class Engine(Protocol):
    """Runs every item of ``items`` through the attempt path and hands each record to ``host``."""

    name: str

    def run(self, host: EngineHost, items: Sequence[Item], progress: Progress | None = None) -> None:
        ...


# --------------------------------------------------------------------------- worker side

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
    """Every attempt of one item on a worker (the attempt path); records for the host's ledger."""
    from medgen.infer.attempt import run_item

    records = run_item(worker_predictor(spec), item, ctx, latest)
    for r in records:
        r["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return records


def lost_record(item: Item, ctx: JobContext, exc: BaseException, what: str) -> dict[str, Any]:
    """The record of an item whose worker or task died (the item failed this run)."""
    from medgen.infer.attempt import base_record, scrub

    rec = base_record(item, ctx, 1)
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    rec.update(status="failed", transient=False,
               error=scrub(f"{item.rel}: {what} ({type(exc).__name__}: {first})", item))
    return rec
