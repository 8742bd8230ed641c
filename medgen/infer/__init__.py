"""The batch-inference core shared by ``medgen denoise``, ``medgen upscale`` and ``medgen translate``.

Where a volume goes, module by module (each usable on its own):

* :mod:`~medgen.infer.sources` - where items come from (folder, NIfTI file, manifest; the
  :class:`~medgen.infer.sources.ItemSource` seam a PACS source plugs into) and how an input is
  digested and read;
* :mod:`~medgen.infer.items` - the :class:`~medgen.infer.items.Item`, its keyed id and the ONE
  rule that names outputs;
* :mod:`~medgen.infer.attempt` - THE attempt path every engine runs: load -> predict -> write
  -> record, error classification, retries with backoff;
* :mod:`~medgen.infer.predictor` - one volume in, one volume out (normalisation, sliding window,
  AMP, spacing, output geometry); :class:`~medgen.infer.predictor.VolumePredictor` is the
  strategy other tasks subclass (:mod:`.sr`, :mod:`.translate`);
* :mod:`~medgen.infer.probes` and :mod:`~medgen.infer.planner` - what the predictor measures,
  and the window/batch chosen from it (a pure function);
* :mod:`~medgen.infer.sinks` - where outputs go (the folder sink: atomic, inside DST, never an
  input; the :class:`~medgen.infer.sinks.OutputSink` seam for a PACS);
* :mod:`~medgen.infer.ledger` - ``DST/ledger.jsonl`` (always valid JSONL);
* :mod:`~medgen.infer.engines` - ``local`` and ``dask`` (one protocol, one registry);
* :mod:`~medgen.infer.job` - set-up and orchestration; :mod:`~medgen.infer.summary` - what the
  job reports; :mod:`~medgen.infer.settings` - typed settings checked before any work;
  :mod:`~medgen.infer.tracking` - the MLflow record (keyed ids only).

Importing this package is light (no torch): the heavy modules are imported on use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "InferenceSettings": "medgen.infer.settings",
    "JobSettings": "medgen.infer.settings",
    "PredictorSpec": "medgen.infer.predictor",
    "VolumePredictor": "medgen.infer.predictor",
    "Plan": "medgen.infer.planner",
    "Item": "medgen.infer.items",
    "ItemSource": "medgen.infer.sources",
    "OutputSink": "medgen.infer.sinks",
    "Engine": "medgen.infer.engines",
    "ENGINES": "medgen.infer.engines",
    "Job": "medgen.infer.job",
    "JobSummary": "medgen.infer.summary",
    "Ledger": "medgen.infer.ledger",
    "discover_items": "medgen.infer.job",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.infer' has no attribute '{name}'")


__all__ = sorted(_LAZY)
