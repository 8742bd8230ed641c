"""Typed settings of batch inference: checked before any work or heavy set-up starts.

Two pydantic models (the house pattern, :class:`medgen.config.base.StrictModel`):

* :class:`InferenceSettings` - how one volume goes through the model (window, overlap, blending,
  device, AMP...). Frozen and picklable: Dask workers and GPU processes rebuild the predictor
  from it. :meth:`InferenceSettings.output_fields` is what changes output voxels (hashed into the
  job digest).
* :class:`JobSettings` - a whole job: model, SRC, DST, output format, engine and its options,
  retries, plus the :class:`InferenceSettings`.

:func:`job_settings` builds them from command-line values and turns every validation error into
ONE :class:`~medgen.errors.ConfigError` line naming the option (``--roi: ...``), so the command
exits 2 before it imports torch, resolves a model or reads an input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from medgen.config.base import StrictModel
from medgen.errors import ConfigError
from medgen.utils.device import check_device_text

DEFAULT_OVERLAP = 0.25
DEFAULT_WINDOW_MEMORY_GB = 4.0
PLANNER_VERSION = 2  # bump when the automatic window choice changes (it is in the job digest)

# option names as the command line spells them (for one-line errors)
FLAGS = {"roi_size": "--roi", "sw_batch_size": "--sw-batch-size", "src": "SRC", "dst": "DST"}


class InferenceSettings(StrictModel):
    """How each volume goes through the model (CLI options; hashed into the job digest).

    Attributes
    ----------
    roi_size : tuple of int, optional
        Sliding window (1 entry = cube, 2 for 2D models, 3). Default: planned (CPU: the largest
        window within ``window_memory_gb`` that computes the fewest voxels; CUDA: from free memory).
    overlap : float
        Window overlap in [0, 1).
    sw_batch_size : int, optional
        Windows per forward; default 1 on CPU, planned from free memory on CUDA.
    mode, sigma_scale, padding_mode
        Blending (``gaussian``) and padding of windows that stick out of the volume.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    amp : str
        ``auto`` (bf16 where supported, else fp16; CUDA only), ``bf16``, ``fp16`` or ``off``.
    channels_last : str
        ``auto`` (measured on CUDA), ``on`` or ``off``.
    spacing_tol : float
        Relative spacing difference to ``card.expected_spacing_mm`` that triggers the warning.
    resample : bool
        Resample to the expected spacing and back instead of warning.
    weights : str
        ``auto`` (EMA when the checkpoint has it), ``model`` or ``ema``.
    threads : int, optional
        torch intra-op threads on CPU (default: torch's).
    memory_fraction : float
        Share of free GPU memory the planner may plan for.
    window_memory_gb : float
        CPU: activation memory one window may take (the planner's automatic window; a fixed
        figure, not the machine's free memory, so the window - and the output bytes - are the
        same on every node).
    profile : bool
        Synchronise CUDA around each forward so forward times are exact (benchmarks).
    """

    model_config = ConfigDict(**StrictModel.model_config, frozen=True)

    roi_size: tuple[int, ...] | None = None
    overlap: float = Field(DEFAULT_OVERLAP, ge=0.0, lt=1.0)
    sw_batch_size: int | None = Field(None, ge=1)
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = Field(0.125, gt=0.0)
    padding_mode: Literal["replicate", "constant", "reflect", "circular"] = "replicate"
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    spacing_tol: float = Field(0.2, ge=0.0)
    resample: bool = False
    weights: Literal["auto", "model", "ema"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    memory_fraction: float = Field(0.8, gt=0.0, le=1.0)
    window_memory_gb: float = Field(DEFAULT_WINDOW_MEMORY_GB, gt=0.0, le=4096.0)
    profile: bool = False

    @field_validator("roi_size", mode="before")
    @classmethod
    def _roi(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if isinstance(v, str):
            return parse_roi(v)
        if isinstance(v, int):
            return (v,) * 3
        return v

    @field_validator("roi_size")
    @classmethod
    def _roi_values(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not 1 <= len(v) <= 3:
            raise ValueError("one, two (2D models) or three window sizes")
        if any(r < 1 or r > 65536 for r in v):
            raise ValueError("window sizes must be between 1 and 65536")
        return (v[0],) * 3 if len(v) == 1 else tuple(v)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> str:
        try:
            return check_device_text(str(v) if v is not None else None)
        except ConfigError as exc:
            raise ValueError(exc.reason) from None

    def output_fields(self) -> dict[str, Any]:
        """The settings that change output voxels (hashed into the job digest). The device and
        thread count are not among them: a job may resume on another node."""
        return {"roi_size": list(self.roi_size) if self.roi_size else "auto",
                "overlap": self.overlap, "sw_batch_size": self.sw_batch_size or "auto",
                "mode": self.mode, "sigma_scale": self.sigma_scale,
                "padding_mode": self.padding_mode, "amp": self.amp, "resample": self.resample,
                "spacing_tol": self.spacing_tol if self.resample else None,
                "weights": self.weights,
                "planner": None if self.roi_size else
                {"version": PLANNER_VERSION, "window_memory_gb": self.window_memory_gb}}

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["roi_size"] = list(self.roi_size) if self.roi_size else None
        return d

    def replace(self, **changes: Any) -> InferenceSettings:
        """A copy with ``changes`` applied and validated."""
        return type(self).model_validate({**self.model_dump(), **changes})


def parse_roi(text: str) -> tuple[int, ...]:
    """``"96"`` -> ``(96, 96, 96)``; ``"96,96,64"`` / ``"96x96x64"`` -> ``(96, 96, 64)``."""
    parts = [p for p in str(text).lower().replace("x", ",").split(",") if p.strip()]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"'{text}': integers like 96 or 96,96,64") from None
    if not vals:
        raise ValueError(f"'{text}': integers like 96 or 96,96,64")
    return vals * 3 if len(vals) == 1 else vals


class JobSettings(StrictModel):
    """A batch-inference job as the command line describes it (validated up front)."""

    model_config = ConfigDict(**StrictModel.model_config, frozen=True)

    model: str
    src: Path
    dst: Path
    output_format: Literal["auto", "nifti", "dicom"] = "auto"
    overwrite: bool = False
    retries: int = Field(2, ge=0, le=20)
    retry_delay: float = Field(1.0, ge=0.0, le=3600.0)
    engine: str = "local"
    workers: int | None = Field(None, ge=1, le=4096)
    scheduler: str | None = None
    dask_processes: bool = True
    prefetch: int = Field(2, ge=1, le=64)
    root: Path | None = None
    predictor: InferenceSettings = Field(default_factory=InferenceSettings)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from medgen.track.models import check_model_text

        try:
            return check_model_text(v)
        except ConfigError as exc:
            raise ValueError(exc.reason) from None

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        from medgen.infer.engines.registry import check_engine_name

        try:
            return check_engine_name(v)
        except ConfigError as exc:
            raise ValueError(exc.reason) from None

    @field_validator("src")
    @classmethod
    def _src(cls, v: Path) -> Path:
        if not v.exists():
            raise ValueError("not found")
        if not (v.is_dir() or v.is_file()):
            raise ValueError("not a folder, NIfTI file or manifest (.jsonl)")
        return v

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if "://" not in v or not v.split("://", 1)[1]:
            raise ValueError(f"'{v}': a scheduler address like tcp://HOST:PORT")
        return v

    @model_validator(mode="after")
    def _cross(self) -> JobSettings:
        if self.scheduler and self.engine != "dask":
            raise ValueError("--scheduler joins a Dask cluster: use it with --engine dask")
        if self.scheduler and self.workers:
            raise ValueError("give either --scheduler (join) or --workers (start), not both")
        if self.root is not None and not str(self.src).lower().endswith(".jsonl"):
            raise ValueError("--root is the root of a manifest's files: SRC must be a manifest")
        return self


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if str(p) != "predictor"]
    name = parts[0] if parts else ""
    return FLAGS.get(name, "--" + name.replace("_", "-")) if name else "settings"


def _one_line(err: ValidationError) -> ConfigError:
    """Every validation error of ``err`` on one line: ``--roi: ...; --overlap: ...``."""
    parts: list[tuple[str | None, str]] = []
    for e in err.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown setting"
        where = _where(tuple(e.get("loc", ())))
        parts.append((None if where == "settings" else where, msg))
    rest = "; ".join(f"{w}: {m}" if w else m for w, m in parts[1:])
    where, msg = parts[0]
    return ConfigError(where, f"{msg}; {rest}" if rest else msg)


def job_settings(**values: Any) -> JobSettings:
    """:class:`JobSettings` from keyword values (``predictor`` a dict or settings); bad values
    raise ONE :class:`ConfigError` line naming each option."""
    try:
        return JobSettings.model_validate(values)
    except ValidationError as err:
        raise _one_line(err) from None


def inference_settings(**values: Any) -> InferenceSettings:
    """:class:`InferenceSettings` with the same one-line errors as :func:`job_settings`."""
    try:
        return InferenceSettings.model_validate(values)
    except ValidationError as err:
        raise _one_line(err) from None
