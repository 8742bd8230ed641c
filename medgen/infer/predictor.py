"""One volume in, one volume out: the per-item "predict" step of every batch-inference command.

:class:`VolumePredictor` is a small strategy class. The default implementation is the denoiser:

1. intensity normalisation from the model card (the record is computed on the input, as in
   training, and inverted afterwards with :func:`medgen.transforms.intensity.denormalize`);
2. spacing check against ``card.expected_spacing_mm`` (warn, or resample with ``resample=True``);
3. MONAI ``sliding_window_inference`` with Gaussian blending under ``torch.inference_mode``; on CUDA
   AMP (bf16 where supported, else fp16) inside each window, channels-last-3d when the planner
   measured it faster, window/batch from :class:`medgen.infer.planner.Planner` with step-down on
   out-of-memory;
4. output geometry from the model's per-axis scale factor (:func:`scaled_geometry`): same world
   extent, ``shape * scale`` voxels - so super-resolution reuses all of it.

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

import contextlib
import dataclasses
import hashlib
import importlib
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import ConfigError, MedgenError, ReadError
from medgen.io.volume import Volume
from medgen.utils.hashing import sha256_json

log = logging.getLogger("medgen.infer")

DEFAULT_OVERLAP = 0.25
DEFAULT_ROI = 96


class UnsuitableInputError(MedgenError):
    """The input cannot go through this model (channels, dimensions). Quarantined, not retried."""


class TransientInferenceError(MedgenError):
    """Out of memory even after every step-down; retried (memory may free up)."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class InferenceSettings:
    """What the user chose (CLI options); picklable, hashed into the job digest.

    Attributes
    ----------
    roi_size : tuple of int, optional
        Sliding window; default the card's patch size on CPU, the planner's choice on CUDA.
    overlap : float, optional
        Window overlap (default 0.25).
    sw_batch_size : int, optional
        Windows per forward; default 1 on CPU (identical bits whatever the thread count, so local
        and Dask engines agree byte for byte; batching gives no throughput on CPU), the planner's
        choice on CUDA.
    mode, sigma_scale, padding_mode
        Blending (``gaussian``) and padding of windows that stick out of the volume.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    amp : str
        ``auto`` (bf16 where supported, else fp16; CUDA only), ``bf16``, ``fp16`` or ``off``.
    channels_last : str
        ``auto`` (measured on CUDA), ``on`` or ``off``.
    spacing_tol : float
        Relative spacing difference to ``card.expected_spacing_mm`` above which we warn/resample.
    resample : bool
        Resample to the expected spacing and back instead of warning.
    weights : str
        ``auto`` (EMA when the checkpoint has it), ``model`` or ``ema``.
    threads : int, optional
        torch intra-op threads on CPU (default: torch's).
    memory_fraction : float
        Share of free GPU memory the planner may plan for.
    profile : bool
        Synchronise CUDA around each forward so ``stats.forward_seconds`` is exact (benchmarks).
    """

    roi_size: tuple[int, ...] | None = None
    overlap: float = DEFAULT_OVERLAP
    sw_batch_size: int | None = None
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    padding_mode: str = "replicate"
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    spacing_tol: float = 0.2
    resample: bool = False
    weights: str = "auto"
    threads: int | None = None
    memory_fraction: float = 0.8
    profile: bool = False

    def __post_init__(self):
        if self.roi_size is not None:
            object.__setattr__(self, "roi_size", tuple(int(r) for r in self.roi_size))
            if any(r < 1 for r in self.roi_size):
                raise ConfigError("--roi", "window sizes must be positive")
        if not 0 <= self.overlap < 1:
            raise ConfigError("--overlap", "must be in [0, 1)")
        if self.sw_batch_size is not None and self.sw_batch_size < 1:
            raise ConfigError("--sw-batch-size", "must be >= 1")
        if self.mode not in ("gaussian", "constant"):
            raise ConfigError("mode", "gaussian or constant")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError("--amp", "auto, bf16, fp16 or off")
        if self.channels_last not in ("auto", "on", "off"):
            raise ConfigError("--channels-last", "auto, on or off")
        if self.weights not in ("auto", "model", "ema"):
            raise ConfigError("--weights", "auto, model or ema")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError("memory_fraction", "must be in (0, 1]")

    def output_fields(self) -> dict[str, Any]:
        """The settings that change output voxels (hashed into the job digest). The device and
        thread count are not among them: a job may resume on another node."""
        return {"roi_size": list(self.roi_size) if self.roi_size else "auto",
                "overlap": self.overlap, "sw_batch_size": self.sw_batch_size or "auto",
                "mode": self.mode, "sigma_scale": self.sigma_scale,
                "padding_mode": self.padding_mode, "amp": self.amp, "resample": self.resample,
                "spacing_tol": self.spacing_tol if self.resample else None,
                "weights": self.weights}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["roi_size"] = list(self.roi_size) if self.roi_size else None
        return d


# --------------------------------------------------------------------------- geometry


def per_axis(scale: float | Sequence[float], n: int = 3) -> tuple[float, ...]:
    """A scalar or per-axis scale factor as an ``n``-tuple of floats."""
    if isinstance(scale, (int, float, np.integer, np.floating)):
        return (float(scale),) * n
    s = tuple(float(v) for v in scale)
    if len(s) != n:
        raise ValueError(f"scale factor {s} must have {n} entries")
    return s


def scaled_geometry(shape: Sequence[int], affine: np.ndarray, scale: float | Sequence[float]
                    ) -> tuple[tuple[int, ...], np.ndarray]:
    """Output grid of a model with scale factor ``scale``: same world extent, finer voxels.

    Voxel *edges* are kept: the input's box (from half a voxel before the first centre to half a
    voxel after the last, along every axis) is the output's box. With ``f = out_n / in_n`` per
    axis, the spacing becomes ``spacing / f`` and the first centre moves by ``(1/f - 1) / 2``
    input voxels. ``scale == 1`` returns the input grid unchanged.

    Parameters
    ----------
    shape : sequence of int
        Input spatial shape ``(I, J, K)``.
    affine : (4, 4) array
        Input voxel-to-LPS affine.
    scale : float or sequence of float
        Per-axis factor (``(1, 1, 4)`` for 4x through-plane super-resolution).

    Returns
    -------
    (shape, affine)
    """
    shape = tuple(int(s) for s in shape)
    s = per_axis(scale, len(shape))
    out = tuple(max(1, int(round(n * f))) for n, f in zip(shape, s))
    if out == shape:
        return shape, np.asarray(affine, dtype=np.float64).copy()
    f = np.array(out, dtype=np.float64) / np.array(shape, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    new = np.eye(4)
    new[:3, :3] = a[:3, :3] @ np.diag(1.0 / f)
    new[:3, 3] = a[:3, 3] + a[:3, :3] @ ((1.0 / f - 1.0) / 2.0)
    return out, new


def _sitk_grid(shape, affine):
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    v = Volume(np.zeros((1, 1, 1), np.float32), affine)
    ref.SetSpacing([float(x) for x in v.spacing])
    ref.SetOrigin([float(x) for x in v.origin])
    ref.SetDirection([float(x) for x in v.direction.flatten()])
    return ref


def resample_onto(vol: Volume, shape: Sequence[int], affine: np.ndarray) -> Volume:
    """Linear resampling of a scalar volume onto another grid (SimpleITK; edges extrapolated)."""
    import SimpleITK as sitk

    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(_sitk_grid(shape, affine))
    f.SetInterpolator(sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    src = Volume(vol.array.astype(np.float32), vol.affine, vol.meta)
    out = Volume.from_sitk(f.Execute(src.to_sitk()), vol.meta)
    return Volume(out.array.astype(np.float32), out.affine, dict(vol.meta))


def grid_for_spacing(vol: Volume, spacing: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid over the same world extent as ``vol`` with (about) the given spacing."""
    sp = np.asarray(list(spacing) + list(vol.spacing[len(spacing):]), dtype=np.float64)
    scale = vol.spacing / sp
    return scaled_geometry(vol.shape, vol.affine, tuple(scale))


# --------------------------------------------------------------------------- devices


def resolve_device(spec: str):
    """``auto`` -> ``cuda`` when available, else ``cpu``; checks ``cuda:N`` exists."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device", f"'{spec}' asked for but CUDA is not available "
                              "(use --device cpu or auto)")
        dev = torch.device(spec)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        if idx >= torch.cuda.device_count():
            raise ConfigError("--device", f"'{spec}': only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", idx)
    raise ConfigError("--device", f"'{spec}': use auto, cpu, cuda or cuda:N")


def resolve_amp(amp: str, device) -> Any:
    """The autocast dtype (None: full precision). AMP only on CUDA."""
    import torch

    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


# --------------------------------------------------------------------------- model resolution


def _cache_root() -> Path:
    root = os.environ.get("MEDGEN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "medgen"


def resolve_model(model: str, *, tracking_uri: str | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """A local checkpoint folder for ``model``.

    ``model`` is a checkpoint folder, ``runs:/<run_id>/<artifact path>`` (e.g.
    ``runs:/abc123/checkpoints/best``) or ``models:/<name>/<version or alias>``. MLflow URIs are
    downloaded once into ``cache_dir`` (default ``$MEDGEN_CACHE_DIR`` or ``~/.cache/medgen``)
    under a folder named by the URI's digest; the checkpoint's own digests are verified on load
    (nothing is unpickled: weights are safetensors).
    """
    if "://" not in model and not model.startswith(("runs:/", "models:/")):
        p = Path(model)
        if not (p / "config.json").is_file():
            raise ConfigError("--model", f"'{p.name}' is not a checkpoint folder (no config.json)")
        return p
    from medgen.track.store import ensure_store, telemetry_off
    from medgen.utils.atomic import atomic_dir

    telemetry_off()
    uri = ensure_store(tracking_uri)
    key = hashlib.sha256(f"{uri}\0{model}".encode()).hexdigest()[:24]
    dst = Path(cache_dir) if cache_dir else _cache_root() / "models"
    final = dst / key
    if (final / "config.json").is_file():
        return final
    from mlflow.artifacts import download_artifacts

    try:
        with atomic_dir(final) as tmp:
            stage = tmp / ".download"  # MLflow nests the artifact path under dst_path
            if model.startswith("runs:/"):
                run_id, _, path = model[len("runs:/"):].partition("/")
                if not run_id or not path:
                    raise ConfigError("--model", "runs:/ URIs look like runs:/<run_id>/checkpoints/best")
                got = Path(download_artifacts(run_id=run_id, artifact_path=path.strip("/"),
                                              dst_path=str(stage), tracking_uri=uri))
            else:
                got = Path(download_artifacts(artifact_uri=model, dst_path=str(stage),
                                              tracking_uri=uri))
            if not got.is_dir():
                raise ConfigError("--model", "the MLflow artifact is a file, not a checkpoint folder")
            for f in list(got.iterdir()):
                os.replace(f, tmp / f.name)
            shutil.rmtree(stage, ignore_errors=True)
            if not (tmp / "config.json").is_file():
                raise ConfigError("--model", "the MLflow artifact is not a medgen checkpoint "
                                  "(no config.json)")
    except MedgenError:
        raise
    except Exception as exc:  # mlflow raises its own exception types for unknown runs/models
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError("--model", f"could not fetch from MLflow: {msg}") from None
    return final


# --------------------------------------------------------------------------- predictor


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
        from medgen.infer.planner import Planner

        self.planner = Planner(self)

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

    # ------------------------------------------------------------------ machinery
    def base_roi(self) -> tuple[int, ...]:
        """The window from the settings, else the card's/config's patch size, else 96."""
        roi = self.settings.roi_size or (self.card.patch_size if self.card else None) \
            or getattr(self.config, "patch_size", None)
        if roi is None:
            roi = [DEFAULT_ROI] * self.spatial_dims
        roi = tuple(int(r) for r in roi)
        if self.spatial_dims == 2:
            roi = roi[:2] + (1,) if len(roi) >= 2 else (roi[0], roi[0], 1)
        if len(roi) != 3:
            raise ConfigError("--roi", f"window {list(roi)} needs 3 entries for a 3D model")
        return roi

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
        ctx = (torch.autocast(device_type="cuda", dtype=self.amp_dtype)
               if self.amp_dtype is not None and x.device.type == "cuda" else contextlib.nullcontext())
        with ctx:
            y = self.predict_fn(x)
        y = y.float().contiguous()
        if two_d:
            y = y[..., None]
        if self.settings.profile and y.device.type == "cuda":
            torch.cuda.synchronize(y.device)
        self.stats.forward_seconds += time.perf_counter() - t0
        self.stats.windows += int(x.shape[0])
        return y

    def _run_plan(self, x, plan):
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
        plan on CUDA out-of-memory (batch, then window, then CPU stitching)."""
        import torch

        plan = self.planner.plan(tuple(x.shape[2:]), int(x.shape[1]))
        while True:
            try:
                y = self._run_plan(x, plan)
                self.notes.plan = plan.to_dict()
                return y
            except torch.cuda.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                nxt = self.planner.step_down(plan, tuple(x.shape[2:]))
                self.stats.oom_stepdowns += 1
                if nxt is None:
                    raise TransientInferenceError(None, "out of GPU memory even with a 1-window batch, "
                                                  "the smallest window and CPU stitching") from None
                log.warning("out of GPU memory with %s; stepping down to %s", plan.short(), nxt.short())
                plan = nxt

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

    def __call__(self, vol: Volume) -> Volume:
        """Predict one volume; returns a new :class:`Volume` on the output grid."""
        import torch

        self.notes = ItemNotes()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        arr = vol.array
        if arr.ndim == 3:
            chans = 1
        else:
            chans = arr.shape[3]
        if chans != self.in_channels:
            raise UnsuitableInputError(None, f"model takes {self.in_channels} channel(s), "
                                       f"the volume has {chans}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise UnsuitableInputError(None, f"unsupported voxel type {arr.dtype}")
        work = self._check_spacing(vol) or vol
        a = work.array.astype(np.float32, copy=False)
        x = torch.from_numpy(np.ascontiguousarray(a[None] if a.ndim == 3 else np.moveaxis(a, -1, 0)))
        xn, rec = self.normalise(x)
        y = self.infer_tensor(xn[None])[0]
        y = self.denormalise(y, rec)
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
        Local checkpoint folder (resolve MLflow URIs first with :func:`resolve_model`); on a
        cluster it must be visible to every worker (shared filesystem).
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

    def with_device(self, device: str) -> PredictorSpec:
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, device=device))

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
