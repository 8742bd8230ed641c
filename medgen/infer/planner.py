"""Memory-aware choice of sliding window and batch, and the step-down ladder on out-of-memory.

CPU: the window is the model card's patch size (or ``--roi``), clipped to the volume, one window
per forward (see :class:`medgen.infer.predictor.InferenceSettings` for why).

CUDA: one probe forward at the card's window measures the model's activation memory per voxel
(``torch.cuda.max_memory_allocated`` around it, at the AMP dtype and memory format that will be
used) and, with ``--channels-last auto``, times channels-last-3d against contiguous and keeps the
faster. From ``torch.cuda.mem_get_info`` and that figure the planner then

1. decides where the stitched output lives: on the GPU when the volume's input, output and
   weight buffers take less than a third of the free memory, else in host memory (MONAI's
   ``sw_device=cuda, device=cpu``: windows go to the GPU, the blend is accumulated on the CPU);
2. picks the largest window (the card's, times 4, 3, 2, 1.5 or 1 per axis, clipped to the
   volume) whose batch of one fits in ``memory_fraction`` of what is left (unless ``--roi``
   fixes it);
3. fills the rest with windows per forward (at most 32, at most the number of windows).

On ``torch.cuda.OutOfMemoryError`` :meth:`Planner.step_down` halves the batch, then the window
(down to 16 per axis or the model's size divisor), then moves stitching to the CPU; only when
nothing is left does the item fail (with a retryable error). Successful step-downs are remembered
as a cap for the next items.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.predictor import VolumePredictor

log = logging.getLogger("medgen.infer")

MAX_BATCH = 32
MIN_ROI = 16
ROI_GROWTH = (4.0, 3.0, 2.0, 1.5, 1.0)
STITCH_ON_GPU_SHARE = 1 / 3


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


def n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI will use (same arithmetic as ``_get_scan_interval``)."""
    n = 1
    for s, r in zip(shape, roi):
        r = min(r, s) if s > 0 else r
        if r >= s:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        n *= math.ceil((s - r) / interval) + 1
    return n


def _clip(roi: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(1, min(int(r), int(s))) for r, s in zip(roi, shape))


def _round(v: float, divisor: int) -> int:
    return max(divisor, int(v) // divisor * divisor)


class Planner:
    """Plans for one predictor (holds its probe results and the step-down cap).

    Parameters
    ----------
    predictor : VolumePredictor
        Gives the device, base window, size divisor, settings and ``network`` for probes.
    mem_info : callable, optional
        ``() -> (free_bytes, total_bytes)``; default ``torch.cuda.mem_get_info(device)``.
        Injectable so the planning arithmetic is testable without a GPU.
    probe : callable, optional
        ``(roi, channels_last) -> (bytes_per_voxel, seconds)``; default a real forward.
    """

    def __init__(self, predictor: VolumePredictor, *, mem_info: Callable[[], tuple[int, int]] | None = None,
                 probe: Callable[[tuple[int, ...], bool], tuple[float, float]] | None = None):
        self.p = predictor
        self._mem_info = mem_info
        self._probe = probe
        self._probes: dict[tuple, tuple[float, float]] = {}
        self.cap: Plan | None = None  # largest plan known to fit after an OOM
        self.channels_last: bool | None = None

    # ---------------------------------------------------------------- helpers
    @property
    def divisor(self) -> int:
        return int(getattr(self.p.model, "size_divisor", 1) or 1)

    def _is_cuda(self) -> bool:
        return self.p.device.type == "cuda"

    def mem_info(self) -> tuple[int, int]:
        if self._mem_info is not None:
            return self._mem_info()
        import torch

        return torch.cuda.mem_get_info(self.p.device)

    def probe(self, roi: tuple[int, ...], channels_last: bool) -> tuple[float, float]:
        """(activation bytes per input voxel, seconds per window) at ``roi``, batch 1."""
        key = (roi, channels_last)
        if key in self._probes:
            return self._probes[key]
        if self._probe is not None:
            res = self._probe(roi, channels_last)
        else:
            res = self._real_probe(roi, channels_last)
        self._probes[key] = res
        return res

    def _real_probe(self, roi: tuple[int, ...], channels_last: bool) -> tuple[float, float]:
        import torch

        dev = self.p.device
        self.p.model.to(memory_format=torch.channels_last_3d if channels_last
                        else torch.contiguous_format)
        self.p.channels_last = channels_last
        x = torch.zeros((1, self.p.in_channels, *roi), device=dev)
        saved = (self.p.stats.forward_seconds, self.p.stats.windows)
        with torch.inference_mode():
            self.p.network(x)  # warm-up (cuDNN autotuning, lazy init)
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            t0 = time.perf_counter()
            self.p.network(x)
            torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) - base
        self.p.stats.forward_seconds, self.p.stats.windows = saved
        del x
        torch.cuda.empty_cache()
        return max(peak, 1) / float(math.prod(roi)), dt

    # ---------------------------------------------------------------- planning
    def plan(self, shape: Sequence[int], in_channels: int, out_channels: int | None = None) -> Plan:
        """The plan for a volume of spatial ``shape``."""
        shape = tuple(int(s) for s in shape)
        st = self.p.settings
        base = _clip(self.p.base_roi(), shape)
        if not self._is_cuda():
            plan = Plan(base, st.sw_batch_size or 1, "cpu", "cpu", False, "cpu: card window")
            return self._apply_cap(plan, shape)
        dev = str(self.p.device)
        out_channels = out_channels or int(getattr(getattr(self.p, "config", None), "out_channels",
                                                   in_channels) or in_channels)
        scale = math.prod(self.p.scale_factor())
        # channels-last: measured, never assumed
        if self.channels_last is None:
            if st.channels_last == "auto" and len(base) == 3 and self.p.spatial_dims == 3:
                b_cf, t_cf = self.probe(base, False)
                b_cl, t_cl = self.probe(base, True)
                self.channels_last = t_cl < 0.95 * t_cf
                log.info("channels-last-3d %.1f ms vs contiguous %.1f ms per window: %s",
                         1e3 * t_cl, 1e3 * t_cf, "on" if self.channels_last else "off")
            else:
                self.channels_last = st.channels_last == "on"
        cl = bool(self.channels_last)
        bpv, _ = self.probe(base, cl)
        free, _total = self.mem_info()
        nvox = math.prod(shape)
        stitch_bytes = 4 * nvox * (in_channels + scale * (out_channels + 1))
        on_gpu = stitch_bytes < STITCH_ON_GPU_SHARE * free
        budget = st.memory_fraction * free - (stitch_bytes if on_gpu else 0)
        stitch = dev if on_gpu else "cpu"
        if st.roi_size is not None:
            candidates = [base]
        else:
            candidates = []
            for g in ROI_GROWTH:
                r = _clip([_round(b * g, self.divisor) if b > 1 else 1 for b in self.p.base_roi()], shape)
                if r not in candidates:
                    candidates.append(r)
        roi = None
        for r in candidates:
            if bpv * math.prod(r) <= budget:
                roi = r
                break
        if roi is None:  # not even the card's window: shrink until it fits
            roi = base
            while bpv * math.prod(roi) > budget:
                smaller = self._halve(roi)
                if smaller == roi:
                    break
                roi = smaller
        per_window = bpv * math.prod(roi)
        bs = st.sw_batch_size or max(1, min(MAX_BATCH, int(budget // max(per_window, 1)),
                                            n_windows(shape, roi, st.overlap)))
        plan = Plan(roi, bs, dev, stitch, cl,
                    f"free {free / 2**30:.1f} GiB, {bpv:.0f} B/voxel, stitch on {stitch}")
        return self._apply_cap(plan, shape)

    def _apply_cap(self, plan: Plan, shape: Sequence[int]) -> Plan:
        c = self.cap
        if c is None:
            return plan
        roi = tuple(min(a, b) for a, b in zip(plan.roi, c.roi))
        device = "cpu" if c.device == "cpu" else plan.device
        return replace(plan, roi=roi, sw_batch_size=min(plan.sw_batch_size, c.sw_batch_size),
                       device=device, reason=plan.reason + " (capped after OOM)")

    def _halve(self, roi: tuple[int, ...]) -> tuple[int, ...]:
        lo = max(MIN_ROI, self.divisor)
        return tuple(r if r <= lo else max(lo, _round(r / 2, self.divisor)) for r in roi)

    def step_down(self, plan: Plan, shape: Sequence[int]) -> Plan | None:
        """The next smaller plan after an out-of-memory error, or None when none is left."""
        if plan.sw_batch_size > 1:
            nxt = replace(plan, sw_batch_size=max(1, plan.sw_batch_size // 2), reason="OOM: batch halved")
        else:
            smaller = self._halve(plan.roi)
            if smaller != plan.roi:
                nxt = replace(plan, roi=smaller, reason="OOM: window halved")
            elif plan.device != "cpu":
                nxt = replace(plan, device="cpu", reason="OOM: stitching on CPU")
            else:
                return None
        self.cap = nxt
        return nxt
