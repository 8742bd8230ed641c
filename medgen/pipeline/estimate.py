"""Rough time estimates of pipeline steps for ``medgen run --dry-run`` (no torch, no data read).

How they are computed (printed with each step as its *basis*):

* a step that ran before with the same kind: the seconds its last run took (state file);
* ``train``: ``START + max_steps * batch_size * patch voxels * width**2 * k[family]`` (CPU), capped
  by ``optim.time_budget_s``; ``width`` is the model's first-level channels (``features`` for
  ``rrdb_sr``); ``k`` per family was fitted to the shipped tiny configs run by the shipped
  pipelines on the project's 2-core CPU machine while it was shared (load ~9), so figures are
  pessimistic on an idle CPU and far too high on a GPU (commonly 10-50x faster);
* other steps: the time the same step kind took in the shipped pipelines on the bundled sample
  data (a handful of small volumes) on that machine; they grow with the number of volumes.

Expect a factor of two either way; the estimate says when a step is minutes rather than hours.
"""

from __future__ import annotations

import math
from typing import Any

#: seconds a training subprocess spends before its first step (imports, store, data cache)
START = 20.0
#: seconds per (step x batch x voxel x width**2), per model family (see the module doc)
K_TRAIN = {"unet": 5.0e-8, "rrdb_sr": 7.0e-7, "ldm": 2.5e-7}
#: families not measured yet borrow a measured family's constant (x a factor)
K_BORROWED = {"vae": ("unet", 1.5), "vae-gen": ("ldm", 0.5), "pix2pix": ("unet", 2.0),
              "cyclegan": ("unet", 4.0)}
#: seconds of the other step kinds on the bundled sample data (shipped pipelines, 2-core CPU)
TYPICAL = {"sample-data": 2.5, "deid": 3.0, "manifest": 3.0, "degrade": 8.5, "denoise": 26.0,
           "upscale": 22.0, "translate": 26.0, "synthesize": 22.0, "evaluate": 1.0, "audit": 10.0}


def _width(model) -> int:
    for attr in ("features", "channels", "ae_channels"):
        v = getattr(model, attr, None)
        if isinstance(v, int):
            return v
        if isinstance(v, (list, tuple)) and v:
            return int(v[0])
    return 16


def train_estimate(cfg) -> tuple[float, str]:
    """(seconds, basis) of a training run from its config."""
    name = str(cfg.model.name)
    k, note = K_TRAIN.get(name), ""
    if k is None:
        ref, factor = K_BORROWED.get(name, ("unet", 2.0))
        k, note = K_TRAIN[ref] * factor, f"; {name} not measured, {factor:g}x {ref}'s constant"
    voxels = math.prod(cfg.data.patch_size)
    work = cfg.optim.max_steps * cfg.data.batch_size * voxels * _width(cfg.model) ** 2
    secs = START + work * k
    basis = (f"{cfg.optim.max_steps} steps x batch {cfg.data.batch_size} x "
             f"{'x'.join(map(str, cfg.data.patch_size))} patch, width {_width(cfg.model)}, "
             f"{name} on CPU{note}")
    budget = cfg.optim.time_budget_s
    if budget is not None and budget + START < secs:
        secs, basis = budget + START, f"optim.time_budget_s {budget:g} s + start-up"
    return secs, basis


def estimate(kind: str, spec: dict[str, Any], detail: Any = None) -> tuple[float | None, str]:
    """(seconds, basis) of one step; ``detail`` is the loaded TrainConfig for train steps."""
    if kind == "train" and detail is not None:
        return train_estimate(detail)
    if kind in TYPICAL:
        return TYPICAL[kind], "typical on the bundled sample data (2-core CPU)"
    return None, "no estimate"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"~{s:.0f} s"
    if s < 5400:
        return f"~{s / 60:.0f} min"
    return f"~{s / 3600:.1f} h"


__all__ = ["estimate", "fmt_seconds", "train_estimate"]
