"""Choice of sliding window and batch: a pure function of what the predictor measured.

The predictor (:class:`medgen.infer.predictor.VolumePredictor`) supplies a :class:`Probe` - the
device, the model's own window and size divisor, channels, scale, the activation memory per window
voxel and (CUDA) the free memory - and :func:`plan` decides; nothing here touches torch or a model.

**Window.** The cost of sliding-window inference is the voxels the network computes: every voxel
covered by several overlapping windows is computed several times, and per voxel a big window is
cheaper than a small one (measured on CPU: 0.67 s/Mvox at 64^3, 0.29 s/Mvox at 128^3 for a
1.2 M-parameter residual UNet). So, unless ``--roi`` fixes it, the planner picks the window - per
axis at least the model's own window (or the volume) - that computes the fewest voxels (windows
padded to the size divisor, plus a fixed per-window overhead) among those whose activations fit
the memory budget: one window over the whole volume when it fits.

* CPU: the budget is ``window_memory_gb`` (a fixed figure, default 4 GiB, not the machine's free
  memory, so every node - and every engine - picks the same window and writes the same bytes);
  the activation memory per voxel is an architecture figure (the outputs of every layer at a small
  probe window), the same everywhere. One window per forward (see docs/inference.md).
* CUDA: the budget is ``memory_fraction`` of the free memory (``torch.cuda.mem_get_info``) minus
  the stitched output when it is kept on the GPU (when the volume's buffers take less than a third
  of the free memory; otherwise stitching is in host memory, ``sw_device=cuda, device=cpu``); the
  activation memory per voxel is measured by one probe forward (``max_memory_allocated``). The
  rest of the budget is filled with windows per forward (at most 32).

**Out of memory.** :func:`step_down` halves the batch, then the window (down to 16 per axis or the
size divisor), then moves stitching to the CPU; only when nothing is left does the item fail
(retryable). The predictor keeps the last successful step-down as a cap (:func:`apply_cap`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

MAX_BATCH = 32
MIN_ROI = 16
STITCH_ON_GPU_SHARE = 1 / 3
WINDOW_OVERHEAD_VOXELS = 32**3  # per-window cost (padding, blending, call) in voxel equivalents
MAX_WINDOWS_PER_AXIS = 64


@dataclass(frozen=True)
class Plan:
    """How one volume goes through sliding-window inference."""

    roi: tuple[int, ...]
    sw_batch_size: int
    sw_device: str  # where windows are computed
    device: str  # where the stitched output is accumulated
    channels_last: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roi"] = list(self.roi)
        return d

    def short(self) -> str:
        return (f"roi {'x'.join(map(str, self.roi))} batch {self.sw_batch_size} "
                f"stitch on {self.device}")


@dataclass(frozen=True)
class Probe:
    """What the predictor knows or measured; :func:`plan` decides from this alone.

    Attributes
    ----------
    device : str
        ``cpu`` or ``cuda:N``.
    base_roi : tuple of int
        The model's own window (the card's patch size; ``(h, w, 1)`` for slice-wise models).
    divisor : int
        Window sizes the model needs a multiple of (windows are padded to it).
    in_channels, out_channels : int
    scale : float
        Output voxels per input voxel (product of the per-axis scale factors).
    bytes_per_voxel : float
        Activation memory per window voxel.
    free_bytes : int, optional
        Free GPU memory (CUDA only).
    channels_last : bool
        Use channels-last-3d (CUDA; measured faster by the predictor).
    """

    device: str
    base_roi: tuple[int, ...]
    divisor: int = 1
    in_channels: int = 1
    out_channels: int = 1
    scale: float = 1.0
    bytes_per_voxel: float = 1.0
    free_bytes: int | None = None
    channels_last: bool = False


def n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI will use (same arithmetic as ``_get_scan_interval``)."""
    n = 1
    for s, r in zip(shape, roi):
        n *= _axis_windows(int(s), min(int(r), int(s)) if s > 0 else int(r), overlap)
    return n


def _axis_windows(s: int, r: int, overlap: float) -> int:
    if r >= s:
        return 1
    interval = max(int(r * (1 - overlap)), 1)
    return math.ceil((s - r) / interval) + 1


def _pad(r: int, divisor: int) -> int:
    return -(-r // divisor) * divisor


def _axis_candidates(s: int, lo: int, divisor: int, overlap: float) -> list[tuple[int, int]]:
    """(window, windows along the axis): for each window count the smallest window that gives it
    (no other window can be cheaper), from one window over the whole axis down to ``lo``."""
    best: dict[int, int] = {}
    sizes = {s} | set(range(_pad(max(lo, 1), divisor), s, divisor))
    for r in sorted(sizes):
        if r < lo:
            continue
        n = _axis_windows(s, r, overlap)
        if n <= MAX_WINDOWS_PER_AXIS and n not in best:
            best[n] = r
    return sorted((r, n) for n, r in best.items())


def best_window(shape: Sequence[int], base: Sequence[int], max_voxels: float, divisor: int,
                overlap: float) -> tuple[int, ...]:
    """The window (per axis >= the model's window, clipped to the volume) with the fewest computed
    voxels whose padded size fits ``max_voxels``; the model's window when none does."""
    shape = [int(s) for s in shape]
    lows = [min(int(b), s) for b, s in zip(base, shape)]
    per_axis = [[(1, s)] if int(b) == 1 else _axis_candidates(s, lo, divisor, overlap)
                for s, lo, b in zip(shape, lows, base)]  # a slice-wise model stays 1 deep
    best: tuple[float, int, tuple[int, ...]] | None = None
    for combo in itertools.product(*per_axis):
        roi = tuple(r for r, _ in combo)
        vox = math.prod(_pad(r, divisor) if r > 1 else 1 for r in roi)
        if vox > max_voxels:
            continue
        n = math.prod(k for _, k in combo)
        key = (n * (vox + WINDOW_OVERHEAD_VOXELS), -vox, roi)
        if best is None or key < best:
            best = key
    return best[2] if best is not None else tuple(lows)


def plan(shape: Sequence[int], probe: Probe, *, roi_size: Sequence[int] | None, overlap: float,
         sw_batch_size: int | None, window_memory_gb: float, memory_fraction: float) -> Plan:
    """The plan for a volume of spatial ``shape`` (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    fixed = _clip(roi_size, shape) if roi_size else None
    bpv = max(float(probe.bytes_per_voxel), 1e-3)
    if probe.device == "cpu":
        budget = window_memory_gb * 2**30
        roi = fixed or best_window(shape, probe.base_roi, budget / bpv, probe.divisor, overlap)
        why = "cpu: --roi" if fixed else (f"cpu: fewest computed voxels within "
                                          f"{window_memory_gb:g} GiB ({bpv:.0f} B/voxel)")
        return Plan(roi, sw_batch_size or 1, "cpu", "cpu", False, why)
    free = int(probe.free_bytes or 0)
    nvox = math.prod(shape)
    stitch_bytes = 4 * nvox * (probe.in_channels + probe.scale * (probe.out_channels + 1))
    on_gpu = stitch_bytes < STITCH_ON_GPU_SHARE * free
    budget = memory_fraction * free - (stitch_bytes if on_gpu else 0)
    roi = fixed or best_window(shape, probe.base_roi, budget / bpv, probe.divisor, overlap)
    if not fixed:
        while bpv * math.prod(roi) > budget and (smaller := halve(roi, probe.divisor)) != roi:
            roi = smaller  # not even the model's window fits: shrink
    per_window = bpv * math.prod(roi)
    bs = sw_batch_size or max(1, min(MAX_BATCH, int(budget // max(per_window, 1)),
                                     n_windows(shape, roi, overlap)))
    stitch = probe.device if on_gpu else "cpu"
    return Plan(roi, bs, probe.device, stitch, probe.channels_last,
                f"free {free / 2**30:.1f} GiB, {bpv:.0f} B/voxel, stitch on {stitch}")


def _clip(roi: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(1, min(int(r), int(s))) for r, s in zip(roi, shape))


def _round(v: float, divisor: int) -> int:
    return max(divisor, int(v) // divisor * divisor)


def halve(roi: Sequence[int], divisor: int) -> tuple[int, ...]:
    """Every axis above the minimum halved (rounded to the divisor)."""
    lo = max(MIN_ROI, divisor)
    return tuple(r if r <= lo else max(lo, _round(r / 2, divisor)) for r in roi)


def step_down(plan_: Plan, divisor: int) -> Plan | None:
    """The next smaller plan after an out-of-memory error, or None when none is left."""
    if plan_.sw_batch_size > 1:
        return replace(plan_, sw_batch_size=max(1, plan_.sw_batch_size // 2),
                       reason="OOM: batch halved")
    smaller = halve(plan_.roi, divisor)
    if smaller != tuple(plan_.roi):
        return replace(plan_, roi=smaller, reason="OOM: window halved")
    if plan_.device != "cpu":
        return replace(plan_, device="cpu", reason="OOM: stitching on CPU")
    return None


def apply_cap(plan_: Plan, cap: Plan | None) -> Plan:
    """``plan_`` no bigger than ``cap`` (the last plan known to fit after an out-of-memory error)."""
    if cap is None:
        return plan_
    roi = tuple(min(a, b) for a, b in zip(plan_.roi, cap.roi))
    device = "cpu" if cap.device == "cpu" else plan_.device
    return replace(plan_, roi=roi, sw_batch_size=min(plan_.sw_batch_size, cap.sw_batch_size),
                   device=device, reason=plan_.reason + " (capped after OOM)")
