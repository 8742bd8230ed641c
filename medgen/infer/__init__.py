"""The batch-inference core shared by ``medgen denoise``, ``medgen upscale`` and ``medgen translate``.

Layers (each usable on its own):

* :mod:`medgen.infer.predictor` - one volume in, one volume out: intensity normalisation from the
  model card, MONAI sliding-window inference with Gaussian blending, AMP / channels-last on CUDA,
  spacing check (or resampling), denormalisation and the output geometry (a per-axis scale factor
  for super-resolution: same world extent, finer grid). :class:`VolumePredictor` is the strategy
  other tasks subclass (override :meth:`VolumePredictor.predict_fn` / ``normalise`` /
  ``denormalise`` / ``scale_factor``), :class:`PredictorSpec` the picklable recipe that builds it
  on a worker.
* :mod:`medgen.infer.planner` - chooses the sliding window and batch from free GPU memory, steps
  down on out-of-memory (batch, then window, then CPU stitching).
* :mod:`medgen.infer.job` - item discovery (DICOM series / NIfTI / manifest), the append-only
  ledger, resume, atomic outputs, retries, quarantine, summary, MLflow tracking.
* :mod:`medgen.infer.engines` - ``local`` (in-process pipeline; one process per GPU) and ``dask``.

Importing this package is light (no torch): the heavy modules are imported on use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "InferenceSettings": "medgen.infer.predictor",
    "PredictorSpec": "medgen.infer.predictor",
    "VolumePredictor": "medgen.infer.predictor",
    "scaled_geometry": "medgen.infer.predictor",
    "resolve_model": "medgen.infer.predictor",
    "Plan": "medgen.infer.planner",
    "Planner": "medgen.infer.planner",
    "Item": "medgen.infer.job",
    "Job": "medgen.infer.job",
    "JobSummary": "medgen.infer.job",
    "Ledger": "medgen.infer.job",
    "discover_items": "medgen.infer.job",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.infer' has no attribute '{name}'")


__all__ = sorted(_LAZY)
