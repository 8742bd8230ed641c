"""One volume in, one volume out: the per-item "predict" step of every batch-inference command.

:class:`VolumePredictor` is a small strategy class. The default implementation is the denoiser:

1. intensity normalisation from the model card (the record is computed on the input, as in
   training, and inverted afterwards with :func:`medgen.transforms.intensity.denormalize`);
2. spacing check against ``card.expected_spacing_mm`` (warn, or resample with ``resample=True``);
3. MONAI ``sliding_window_inference`` with Gaussian blending under ``torch.inference_mode``; on CUDA
   AMP (bf16 where supported, else fp16) inside each window, channels-last-3d when the planner
   measured it faster, window/batch from :class:`medgen.infer.planner.Planner` with step-down on
   out-of-memory;
4. output geometry from the model's per-axis scale factor
   (:func:`medgen.io.geometry.scaled_geometry`): same world extent, ``shape * scale`` voxels - so
   super-resolution reuses all of it.

What goes in is checked first (:meth:`VolumePredictor.check_input`): channels, voxel type, a 2D
image through a 3D model and a 4D series through a single-volume model are refused by name (the
item is quarantined with that one line), never silently run as ``64x64x1``.

The window is planned by :func:`medgen.infer.planner.plan` from a :class:`~medgen.infer.planner.Probe`
this class fills in (model window, divisor, activation memory per voxel, free GPU memory); the
planner itself never touches torch.

Other tasks subclass it and override only what differs::

    class UpscalePredictor(VolumePredictor):
        task, verb = "upscale", "upscaled"
        def scale_factor(self):            # e.g. (1, 1, 4) from the model or --factor
            return (1.0, 1.0, float(self.options.get("factor", 4)))

    class TranslatePredictor(VolumePredictor):
        task, verb = "translate", "translated"
        def predict_fn(self, x):           # pick the generator for the direction
            g = self.model.g_ab if self.options["direction"] == "a2b" else self.model.g_ba
            return g(x)
        def output_meta(self, vol):        # outputs are marked synthetic in their headers
            return {"synthetic": True}

and hand ``PredictorSpec(ckpt_dir, settings, factory="pkg.mod:UpscalePredictor",
options={"factor": 4})`` to :class:`medgen.infer.job.Job`.
"""
from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import ConfigError, ReadError
from medgen.infer import planner, probes
from medgen.infer.errors import TransientInferenceError, UnsuitableInputError
from medgen.infer.settings import InferenceSettings
from medgen.io.geometry import grid_for_spacing, per_axis, resample_onto, scaled_geometry
from medgen.io.volume import Volume
from medgen.utils.device import autocast, resolve_amp, resolve_device
from medgen.utils.hashing import sha256_json

__all__ = ["InferenceSettings", "ItemNotes", "PredictorSpec", "PredictorStats",
           "TransientInferenceError", "UnsuitableInputError", "VolumePredictor"]

log = logging.getLogger("medgen.infer")

DEFAULT_ROI = 96


@dataclass
class PredictorStats:
    """Running totals (forward time is what the benchmark compares end-to-end time with)."""

    forward_seconds: float = 0.0
    windows: int = 0
    volumes: int = 0
    voxels: int = 0
    oom_stepdowns: int = 0


@dataclass
class ItemNotes:
    """What happened to the last volume (recorded in the ledger)."""

    plan: dict[str, Any] = field(default_factory=dict)
    spacing_mismatch: bool = False
    resampled: bool = False
    cuda_max_allocated_mb: float | None = None
    threads: int | None = None


class VolumePredictor:
    """Denoising predictor; subclass to plug in another per-item predict step (see module doc).

    Parameters
    ----------
    model : torch.nn.Module
        A medgen model (``predict(model, x)`` contract) or any module mapping
        ``(B, C, *roi)`` to ``(B, C', *roi * scale)``.
    card : ModelCard
        Intensity normalisation, expected spacing and patch size come from here.
    settings : InferenceSettings
    weights_sha256 : str, optional
        Digest of the weights loaded (job digest, tracking).
    options : mapping, optional
        Task options (e.g. ``factor``, ``direction``) for subclasses; hashed into the job digest.
    """

    task: str = "denoise"
    verb: str = "denoised"

    def __init__(self, model, card, settings: InferenceSettings | None = None, *,
                 weights_sha256: str | None = None, options: Mapping[str, Any] | None = None):
        import torch

        self.settings = settings or InferenceSettings()
        self.card = card
        self.options = dict(options or {})
        self.device = resolve_device(self.settings.device)
        if self.device.type == "cpu" and self.settings.threads:
            torch.set_num_threads(int(self.settings.threads))
        self.model = model.to(self.device).eval()
        self.config = getattr(model, "config", None)
        self.spatial_dims = int(getattr(self.config, "spatial_dims", 3))
        self.in_channels = int(getattr(self.config, "in_channels", 1))
        self.weights_sha256 = weights_sha256 or (card.weights_sha256 if card is not None else None)
        self.amp_dtype = resolve_amp(self.settings.amp, self.device)
        self.channels_last = False
        self.stats = PredictorStats()
        self.notes = ItemNotes()
        self.cap: planner.Plan | None = None  # the largest plan known to fit after an OOM
        self.probe_cache: dict[tuple, Any] = {}  # medgen.infer.probes keeps its figures here

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, settings: InferenceSettings | None = None,
                        *, options: Mapping[str, Any] | None = None) -> VolumePredictor:
        """Load ``ckpt_dir`` (safetensors + config.json + card.json, digests verified)."""
        from medgen.models.checkpoint import load_checkpoint

        settings = settings or InferenceSettings()
        model, _cfg, card = load_checkpoint(ckpt_dir, "cpu", weights=settings.weights)
        ema = settings.weights == "ema" or (settings.weights == "auto"
                                             and (Path(ckpt_dir) / "ema.safetensors").exists())
        wsha = card.ema_weights_sha256 if ema else card.weights_sha256
        return cls(model, card, settings, weights_sha256=wsha, options=options)

    # ------------------------------------------------------------------ strategy hooks
    def predict_fn(self, x):
        """The network on one batch of windows: ``(B, C, *roi)`` -> ``(B, C', *roi * scale)``."""
        from medgen.models.module import predict

        return predict(self.model, x)

    def scale_factor(self) -> tuple[float, float, float]:
        """Output voxels per input voxel along (i, j, k); from ``model.scale_factor`` (an int or a
        per-axis sequence). A 2D (slice-wise) model never changes the slice axis."""
        s = getattr(self.model, "scale_factor", 1)
        if self.spatial_dims == 2:
            s2 = per_axis(s, 2)
            return (s2[0], s2[1], 1.0)
        return per_axis(s, 3)  # type: ignore[return-value]

    def output_geometry(self, shape: Sequence[int], affine: np.ndarray
                        ) -> tuple[tuple[int, ...], np.ndarray]:
        """Output ``(shape, affine)`` for an input grid (see :func:`scaled_geometry`)."""
        return scaled_geometry(shape, affine, self.scale_factor())

    def normalise(self, x):
        """``(C, *spatial)`` physical units -> normalised tensor and the record to invert it."""
        from medgen.transforms.intensity import normalize

        rec = self.card.intensity.transform("image").compute(x)
        return normalize(x, rec), rec

    def denormalise(self, y, record: Mapping[str, Any]):
        from medgen.transforms.intensity import denormalize

        return denormalize(y, record)

    def output_meta(self, vol: Volume) -> dict[str, Any]:
        """Metadata updates for the output volume (translate marks outputs synthetic)."""
        return {}

    def derivation(self) -> str:
        """DerivationDescription of derived DICOM series (no identifiers)."""
        name = getattr(self.card, "model_name", "model")
        w = (self.weights_sha256 or "")[:12]
        return f"{self.verb} by medgen {name} (weights sha256 {w})"

    def describe(self) -> dict[str, Any]:
        """Everything that determines the output voxels (hashed into the job digest)."""
        return {"task": self.task, "factory": f"{type(self).__module__}:{type(self).__qualname__}",
                "weights_sha256": self.weights_sha256,
                "config_sha256": getattr(self.card, "config_sha256", None),
                "intensity": self.card.intensity.model_dump(mode="json") if self.card else None,
                "scale_factor": list(self.scale_factor()), "options": self.options,
                "settings": self.settings.output_fields()}

    # ------------------------------------------------------------------ inputs
    def check_input(self, vol: Volume) -> None:
        """Refuse, by name, what this model cannot take (the item is quarantined):

        * a 4D series (time points, diffusion directions...) through a single-volume model;
        * a channel count other than the model's;
        * a 2D image (one slice) through a 3D model - its 3D context would be a replicated
          slice, a result no reader should trust; a slice-wise (2D) model takes it;
        * complex or non-numeric voxels.
        """
        arr = vol.array
        dims = "x".join(str(s) for s in arr.shape)
        chans = 1 if arr.ndim == 3 else int(arr.shape[3])
        if chans != self.in_channels:
            if self.in_channels == 1:
                raise UnsuitableInputError(None, f"4D input ({dims}): the model takes one 3D "
                                           "volume per item; split the series first")
            raise UnsuitableInputError(None, f"model takes {self.in_channels} channel(s), the "
                                       f"volume has {chans}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise UnsuitableInputError(None, f"unsupported voxel type {arr.dtype}")
        flat = [a for a, s in enumerate(vol.shape) if s == 1]
        if self.spatial_dims == 3 and flat:
            raise UnsuitableInputError(None, f"2D image ({dims}) refused: this is a 3D model "
                                       "and needs a volume; use a 2D (slice-wise) model")
        if self.spatial_dims == 2 and any(a != 2 for a in flat):
            raise UnsuitableInputError(None, f"single slice along axis {'ijk'[flat[0]]} ({dims}):"
                                       " a slice-wise model needs the slice in the i-j plane")

    def _check_spacing(self, vol: Volume) -> Volume | None:
        exp = self.card.expected_spacing_mm if self.card is not None else None
        if not exp:
            return None
        exp = [float(e) for e in exp]
        have = vol.spacing[: len(exp)]
        rel = float(np.max(np.abs(have - exp) / np.asarray(exp)))
        if rel <= self.settings.spacing_tol:
            return None
        self.notes.spacing_mismatch = True
        if self.settings.resample:
            shape, aff = grid_for_spacing(vol, exp)
            self.notes.resampled = True
            return resample_onto(vol, shape, aff)
        log.warning("spacing %s mm differs from the model's expected %s mm by %.0f%% "
                    "(use --resample to resample)", [round(float(s), 3) for s in vol.spacing],
                    exp, 100 * rel)
        return None

    # ------------------------------------------------------------------ machinery
    def base_roi(self) -> tuple[int, ...]:
        """The model's own window: the card's/config's patch size, else 96 (``--roi`` fixes the
        window separately, see :func:`medgen.infer.planner.plan`)."""
        roi = (self.card.patch_size if self.card else None) or getattr(self.config, "patch_size", None)
        if roi is None:
            roi = [DEFAULT_ROI] * self.spatial_dims
        roi = tuple(int(r) for r in roi)
        if self.spatial_dims == 2:
            roi = roi[:2] + (1,) if len(roi) >= 2 else (roi[0], roi[0], 1)
        if len(roi) != 3:
            raise ConfigError("--roi", f"window {list(roi)} needs 3 entries for a 3D model")
        return roi

    def _fixed_roi(self) -> tuple[int, ...] | None:
        roi = self.settings.roi_size
        if roi is None:
            return None
        if self.spatial_dims == 2:
            return tuple(roi[:2]) + (1,)
        if len(roi) != 3:
            raise ConfigError("--roi", f"window {list(roi)} needs 3 entries for a 3D model")
        return tuple(roi)

    def network(self, x):
        """The callable handed to ``sliding_window_inference``: 2D-model slicing, AMP,
        channels-last, float32 output, forward timing."""
        import torch

        t0 = time.perf_counter()
        two_d = self.spatial_dims == 2
        if two_d:  # slice-wise model: windows are (B, C, h, w, 1)
            x = x[..., 0]
        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(x.device, self.amp_dtype):
            y = self.predict_fn(x)
        y = y.float().contiguous()
        if two_d:
            y = y[..., None]
        if self.settings.profile and y.device.type == "cuda":
            torch.cuda.synchronize(y.device)
        self.stats.forward_seconds += time.perf_counter() - t0
        self.stats.windows += int(x.shape[0])
        return y

    def plan(self, shape: Sequence[int]) -> planner.Plan:
        st = self.settings
        p = planner.plan(shape, probes.probe(self, shape), roi_size=self._fixed_roi(), overlap=st.overlap,
                         sw_batch_size=st.sw_batch_size, window_memory_gb=st.window_memory_gb,
                         memory_fraction=st.memory_fraction)
        return planner.apply_cap(p, self.cap)

    # ------------------------------------------------------------------ running
    def _run_plan(self, x, plan: planner.Plan):
        import torch
        from monai.inferers import sliding_window_inference

        sx = self.scale_factor()
        if self.channels_last != plan.channels_last:
            self.model.to(memory_format=torch.channels_last_3d if plan.channels_last
                          else torch.contiguous_format)
            self.channels_last = plan.channels_last
        xin = x.to(plan.sw_device if plan.device != "cpu" else "cpu")
        with torch.inference_mode():
            y = sliding_window_inference(
                xin, roi_size=list(plan.roi), sw_batch_size=plan.sw_batch_size,
                predictor=self.network, overlap=self.settings.overlap, mode=self.settings.mode,
                sigma_scale=self.settings.sigma_scale, padding_mode=self.settings.padding_mode,
                sw_device=plan.sw_device, device=plan.device, progress=False)
        y = y.float().cpu()
        want = tuple(max(1, int(round(n * f))) for n, f in zip(x.shape[2:], sx))
        if tuple(y.shape[2:]) != want:  # MONAI rounds zoomed sizes; crop/pad to the exact grid
            raise UnsuitableInputError(None, f"model output {tuple(y.shape[2:])} does not match "
                                       f"the expected grid {want} (scale {sx})")
        return y

    def infer_tensor(self, x):
        """``(1, C, I, J, K)`` normalised -> ``(1, C', *shape * scale)`` on CPU, stepping down the
        plan on out-of-memory (batch, then window, then CPU stitching)."""
        import torch

        shape = tuple(x.shape[2:])
        plan = self.plan(shape)
        divisor = int(getattr(self.model, "size_divisor", 1) or 1)
        while True:
            try:
                y = self._run_plan(x, plan)
                self.notes.plan = plan.to_dict()
                return y
            except torch.cuda.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                nxt = planner.step_down(plan, divisor)
                self.stats.oom_stepdowns += 1
                if nxt is None:
                    raise TransientInferenceError(None, "out of GPU memory even with a 1-window batch, "
                                                  "the smallest window and CPU stitching") from None
                log.warning("out of GPU memory with %s; stepping down to %s", plan.short(), nxt.short())
                self.cap = plan = nxt

    def __call__(self, vol: Volume) -> Volume:
        """Predict one volume; returns a new :class:`Volume` on the output grid."""
        import torch

        self.notes = ItemNotes(threads=torch.get_num_threads() if self.device.type == "cpu" else None)
        self.check_input(vol)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        work = self._check_spacing(vol) or vol
        a = work.array.astype(np.float32, copy=False)
        x = torch.from_numpy(np.ascontiguousarray(a[None] if a.ndim == 3 else np.moveaxis(a, -1, 0)))
        xn, rec = self.normalise(x)
        y = self.denormalise(self.infer_tensor(xn[None])[0], rec)
        out = y.numpy().astype(np.float32, copy=False)
        out = out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)
        shape, aff = self.output_geometry(work.shape, work.affine)
        meta = dict(vol.meta)
        meta.update(self.output_meta(vol))
        res = Volume(np.ascontiguousarray(out), aff, meta)
        if self.notes.resampled:  # back onto the grid the input's own geometry asks for
            shape, aff = self.output_geometry(vol.shape, vol.affine)
            res = resample_onto(res, shape, aff)
            res.meta.update(meta)
        if not np.all(np.isfinite(res.array)):
            raise UnsuitableInputError(None, "model output has NaN or Inf voxels")
        if self.device.type == "cuda":
            self.notes.cuda_max_allocated_mb = round(
                torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        self.stats.volumes += 1
        self.stats.voxels += int(np.prod(vol.shape))
        return res


# --------------------------------------------------------------------------- spec (for workers)


def import_object(path: str):
    """``"package.module:Name"`` -> the object."""
    mod, _, attr = path.partition(":")
    if not mod or not attr:
        raise ConfigError("factory", f"'{path}' must look like package.module:Name")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class PredictorSpec:
    """Picklable recipe for a predictor, so Dask workers / GPU processes build their own.

    Attributes
    ----------
    ckpt_dir : str
        Local checkpoint folder (resolve MLflow URIs first with
        :func:`medgen.track.models.resolve_model`); on a cluster it must be visible to every
        worker (shared filesystem).
    settings : InferenceSettings
    factory : str
        ``"module:Class"`` of a :class:`VolumePredictor` subclass.
    options : tuple of (key, value)
        Task options (``factor``, ``direction``...), passed as ``options=dict(...)``.
    """

    ckpt_dir: str
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    factory: str = "medgen.infer.predictor:VolumePredictor"
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, ckpt_dir, settings=None, factory: str | None = None,
             options: Mapping[str, Any] | None = None) -> PredictorSpec:
        return cls(str(ckpt_dir), settings or InferenceSettings(),
                   factory or "medgen.infer.predictor:VolumePredictor",
                   tuple(sorted((options or {}).items())))

    def with_settings(self, **changes: Any) -> PredictorSpec:
        """The same recipe with some settings changed (e.g. ``device`` per worker process)."""
        import dataclasses

        return dataclasses.replace(self, settings=self.settings.replace(**changes))

    def with_device(self, device: str) -> PredictorSpec:
        return self.with_settings(device=device)

    def build(self) -> VolumePredictor:
        cls = import_object(self.factory)
        if not (isinstance(cls, type) and issubclass(cls, VolumePredictor)):
            raise ConfigError("factory", f"'{self.factory}' is not a VolumePredictor subclass")
        try:
            return cls.from_checkpoint(self.ckpt_dir, self.settings, options=dict(self.options))
        except ReadError:
            raise
        except FileNotFoundError:
            raise ReadError(Path(self.ckpt_dir).name, "checkpoint folder not found") from None

    def key(self) -> str:
        return sha256_json({"ckpt": self.ckpt_dir, "settings": self.settings.to_dict(),
                            "factory": self.factory, "options": [list(o) for o in self.options]})
