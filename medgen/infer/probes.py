"""What a predictor measures for the planner (:func:`probe` fills a :class:`~.planner.Probe`).

* CPU: the activation memory per window voxel is a figure of the *architecture*: the bytes of
  every layer's output for a forward at a small probe window (32 per axis, rounded to the size
  divisor), divided by the window's voxels. It is the same on every node, so the planned window
  - and with it the output bytes - is too. Measured for a 1.2 M-parameter residual UNet: 217
  B/voxel by this count vs 104-267 B/voxel peak RSS growth for real forwards (32^3-128^3).
* CUDA: one probe forward at the model's window measures ``max_memory_allocated`` (at the AMP
  dtype and memory format that will be used); with ``--channels-last auto`` channels-last-3d is
  timed against contiguous and kept only when 5 % faster; ``torch.cuda.mem_get_info`` gives the
  free memory.

The predictor is duck-typed here (``model``, ``device``, ``network``, ``stats``, ``settings``,
``base_roi()``, ``scale_factor()``, ``probe_cache``) so this module does not import it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from medgen.infer.planner import Probe

log = logging.getLogger("medgen.infer")

PROBE_SIDE = 32


def _divisor(p: Any) -> int:
    return int(getattr(p.model, "size_divisor", 1) or 1)


def cpu_activation_bytes(p: Any) -> float:
    """Bytes of every layer output per window voxel at the probe window (cached)."""
    key = ("cpu-activations",)
    if key in p.probe_cache:
        return p.probe_cache[key]
    import torch

    div = _divisor(p)
    roi = tuple(1 if b == 1 else max(div, PROBE_SIDE // div * div) for b in p.base_roi())
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in p.model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    saved = (p.stats.forward_seconds, p.stats.windows)
    try:
        with torch.inference_mode():
            p.network(torch.zeros((1, p.in_channels, *roi)))
    finally:
        for h in handles:
            h.remove()
        p.stats.forward_seconds, p.stats.windows = saved
    p.probe_cache[key] = max(total[0], 1) / float(math.prod(roi))
    return p.probe_cache[key]


def cuda_probe(p: Any, roi: tuple[int, ...], channels_last: bool) -> tuple[float, float]:
    """(activation bytes per input voxel, seconds per window) at ``roi``, batch 1, on CUDA."""
    key = (roi, channels_last)
    if key in p.probe_cache:
        return p.probe_cache[key]
    import torch

    dev = p.device
    p.model.to(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    p.channels_last = channels_last
    x = torch.zeros((1, p.in_channels, *roi), device=dev)
    saved = (p.stats.forward_seconds, p.stats.windows)
    with torch.inference_mode():
        p.network(x)  # warm-up (cuDNN autotuning, lazy init)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        t0 = time.perf_counter()
        p.network(x)
        torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) - base
    p.stats.forward_seconds, p.stats.windows = saved
    del x
    torch.cuda.empty_cache()
    p.probe_cache[key] = (max(peak, 1) / float(math.prod(roi)), dt)
    return p.probe_cache[key]


def channels_last(p: Any, base: tuple[int, ...]) -> bool:
    """Use channels-last-3d? ``auto``: measured (>= 5 % faster); ``on`` / ``off``: forced."""
    key = ("channels-last",)
    if key not in p.probe_cache:
        if p.settings.channels_last == "auto" and p.spatial_dims == 3:
            _, t_cf = cuda_probe(p, base, False)
            _, t_cl = cuda_probe(p, base, True)
            p.probe_cache[key] = t_cl < 0.95 * t_cf
            log.info("channels-last-3d %.1f ms vs contiguous %.1f ms per window: %s",
                     1e3 * t_cl, 1e3 * t_cf, "on" if p.probe_cache[key] else "off")
        else:
            p.probe_cache[key] = p.settings.channels_last == "on"
    return p.probe_cache[key]


def probe(p: Any, shape: Sequence[int]) -> Probe:
    """What the planner decides from, for a volume of spatial ``shape``."""
    base = p.base_roi()
    common = {"base_roi": base, "divisor": _divisor(p), "in_channels": p.in_channels,
              "scale": math.prod(p.scale_factor()),
              "out_channels": int(getattr(p.config, "out_channels", p.in_channels) or p.in_channels)}
    if p.device.type != "cuda":  # --roi fixes the window: nothing to measure
        bpv = cpu_activation_bytes(p) if p.settings.roi_size is None else 1.0
        return Probe("cpu", bytes_per_voxel=bpv, **common)
    import torch

    clipped = tuple(min(b, int(s)) for b, s in zip(base, shape))
    cl = channels_last(p, clipped)
    bpv, _ = cuda_probe(p, clipped, cl)
    free, _total = torch.cuda.mem_get_info(p.device)
    return Probe(str(p.device), bytes_per_voxel=bpv, free_bytes=int(free), channels_last=cl,
                 **common)
