"""The training config tree (pydantic v2, versioned, strict).

``task`` is a discriminated union on ``task.name`` (CAREamics' ``algorithm_config``): each task
carries exactly its own settings, so a key of another task is an "unknown key" error and no
section is optional-and-ignored. Shared sections (``model``, ``data``, ``optim``, ...) stay at the
top. Version 1 files (``task: sr`` plus an ``sr:`` section, top-level ``mode``/``loss``/
``blindspot``/``degradation``) are read through :func:`_v1_to_v2` with a one-line deprecation
note; see ``docs/configuration.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, WrapValidator, model_validator

from medgen.config.base import StrictModel
from medgen.config.fields import Device, check_choice, choice
from medgen.config.supported import SupportedAmp, SupportedTask, TrainMode
from medgen.config.versions import Migration
from medgen.models import BlindSpotConfig, IntensityNorm, ModelConfig, VAELossConfig
from medgen.models.sr.config import SRTrainConfig
from medgen.models.translate.config import TranslateTrainConfig
from medgen.registry import suggest
from medgen.synth.config import SynthTrainConfig
from medgen.transforms.catalog import GEOMETRIC
from medgen.transforms.presets import PresetRef, check_preset

#: Supervised denoising without an explicit ``task.degradation`` simulates this noise.
DEFAULT_DENOISE_PRESET = "mri-rician-mild"


class DataConfig(StrictModel):
    manifest: str = Field(description="manifest (.jsonl) with a split per record")
    root: str | None = Field(None, description="root of the record paths (default: from the summary)")
    train_split: str = "train"
    val_split: str | None = "val"
    patch_size: list[int] = Field(default_factory=lambda: [32, 32, 32])
    foreground_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of patches centred on a foreground voxel (above 10% of the volume's "
                    "0.5-99.5 percentile range; nnU-Net-style oversampling), the rest uniform. "
                    "Off by default: on the MNI152 denoise bench 0.5 and 0.9 did not help")
    batch_size: int = Field(4, ge=1)
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: str | None = None
    max_volumes: int | None = Field(None, ge=1)
    allow_uneven: bool = False


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    max_steps: int = Field(200, ge=1)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine floor as a fraction of lr")
    time_budget_s: float | None = Field(
        None, gt=0, description="stop (and checkpoint) after this many training seconds in all "
                                "(resumed parts included); the cosine schedule then anneals over it")


class ValConfig(StrictModel):
    every_steps: int = Field(50, ge=1)
    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1)
    max_volumes: int | None = Field(4, ge=1)
    images: bool = True


class TrackConfig(StrictModel):
    enabled: bool = True
    experiment: str = "medgen-train"
    run_name: str | None = None
    tracking_uri: str | None = None


class CardConfig(StrictModel):
    intended_use: str = "research denoising of medical volumes; not for clinical use"
    modality: str = "MR"
    limitations: list[str] = Field(default_factory=lambda: [
        "trained on the data in its manifest only; validate on your own scanner before use"])


# --- the tasks -------------------------------------------------------------------------------------
class _TaskHooks:
    """What every task section offers the tree: cross-checks against the whole config, tags."""

    def check(self, cfg: TrainConfig) -> None:
        """Raise ``ValueError`` unless this task fits the rest of ``cfg``."""

    def tags(self) -> dict[str, str]:
        return {}

    def data_label_key(self) -> str | None:
        """Key of ``record.labels`` holding a label map to load with each volume (or None)."""
        return None

    def input_paths(self, cfg: TrainConfig) -> list[tuple[str, str | None, str]]:
        """``(key, path, kind)`` of the files this task reads; kind: manifest, checkpoint, file
        (checked by :func:`medgen.train.preflight.preflight` before any work starts)."""
        return []

    def input_splits(self, cfg: TrainConfig) -> tuple[str | None, str | None, tuple[str, str, str]]:
        """Train and val split of the task's own manifest (``kind: manifest``) and their keys."""
        raise NotImplementedError

    def input_root(self, key: str) -> str | None:
        """The root folder of the task's own manifest named by ``key`` (None: its summary's)."""
        return None


def _check_noise_modality(preset: str | None, modality: str, key: str) -> None:
    """A preset written for another modality (an MR Rician preset on a CT model) is refused."""
    if not preset:
        return
    p = check_preset(preset)
    if p.modality != "any" and p.modality.upper() != str(modality).upper():
        raise ValueError(f"{key} '{preset}' is a {p.modality} preset but card.modality is "
                         f"{modality}; pick a {modality} preset or set card.modality")


class DenoiseTask(_TaskHooks, StrictModel):
    """``task: {name: denoise}`` - noisy -> clean.

    ``mode: supervised`` simulates noise on clean volumes with ``degradation`` (default
    ``mri-rician-mild``); ``mode: self-supervised`` trains a blind-spot denoiser on the noisy data
    as it is (Noise2Void/Noise2Self) and adds no synthetic noise unless ``degradation`` is set.
    """

    name: Literal[SupportedTask.DENOISE] = SupportedTask.DENOISE
    mode: choice(TrainMode, "training mode") = TrainMode.SUPERVISED
    degradation: PresetRef | None = Field(None, description="preset (name or YAML path) of the "
                                          "simulated noise; default per mode (see above)")
    loss: VAELossConfig = Field(default_factory=VAELossConfig)
    blindspot: BlindSpotConfig = Field(default_factory=BlindSpotConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_degradation(cls, data: Any) -> Any:
        if isinstance(data, dict) and "degradation" not in data:
            try:
                mode = check_choice(data.get("mode", TrainMode.SUPERVISED), TrainMode, "mode")
            except ValueError:
                return data  # the field check reports it
            if mode == TrainMode.SUPERVISED:
                data = {**data, "degradation": DEFAULT_DENOISE_PRESET}
        return data

    @model_validator(mode="after")
    def _mode(self):
        if self.mode == TrainMode.SELF_SUPERVISED and not self.blindspot.enabled:
            self.blindspot.enabled = True
        if self.blindspot.enabled and self.mode != TrainMode.SELF_SUPERVISED:
            raise ValueError("blindspot.enabled needs mode: self-supervised")
        if self.mode == TrainMode.SUPERVISED and not self.degradation:
            raise ValueError("supervised denoising needs task.degradation (the noise to learn to "
                             "remove); for noisy data without clean targets use mode: self-supervised")
        return self

    def check(self, cfg: TrainConfig) -> None:
        _check_noise_modality(self.degradation, cfg.card.modality, "task.degradation")

    def tags(self) -> dict[str, str]:
        return {"medgen.mode": str(self.mode)}


class SRTask(SRTrainConfig, _TaskHooks):
    """``task: {name: sr}`` - super-resolution pairs made on the fly (see SRTrainConfig);
    ``degradation`` is optional noise on the low-resolution input only."""

    name: Literal[SupportedTask.SR] = SupportedTask.SR
    degradation: PresetRef | None = Field(None, description="noise preset applied to LR inputs")

    @model_validator(mode="after")
    def _noise_only(self):
        if self.degradation:
            geo = check_preset(self.degradation).names() & GEOMETRIC
            if geo:
                raise ValueError(f"task.degradation '{self.degradation}' changes the grid "
                                 f"({', '.join(sorted(geo))}); with task sr it is only the noise "
                                 "added to LR inputs - set task.factors")
        return self

    def check(self, cfg: TrainConfig) -> None:
        self.check_model(cfg.model, cfg.data.patch_size)
        _check_noise_modality(self.degradation, cfg.card.modality, "task.degradation")

    def input_paths(self, cfg: TrainConfig) -> list[tuple[str, str | None, str]]:
        return [("task.init_from", self.init_from, "checkpoint"),
                ("task.perceptual_weights", self.perceptual_weights, "file")]


class SynthTask(SynthTrainConfig, _TaskHooks):
    """``task: {name: synth}`` - generators (vae-gen, ldm); see SynthTrainConfig."""

    name: Literal[SupportedTask.SYNTH] = SupportedTask.SYNTH

    def check(self, cfg: TrainConfig) -> None:
        self.check_train(cfg)

    def data_label_key(self) -> str | None:
        return self.label_map_key if self.label_channels else None

    def input_paths(self, cfg: TrainConfig) -> list[tuple[str, str | None, str]]:
        return [("task.autoencoder_checkpoint", self.autoencoder_checkpoint, "checkpoint")]


class TranslateTask(TranslateTrainConfig, _TaskHooks):
    """``task: {name: translate}`` - domain A -> B (pix2pix, cyclegan); see TranslateTrainConfig."""

    name: Literal[SupportedTask.TRANSLATE] = SupportedTask.TRANSLATE

    def check(self, cfg: TrainConfig) -> None:
        self.check_train(cfg)

    def input_paths(self, cfg: TrainConfig) -> list[tuple[str, str | None, str]]:
        return [("task.target_manifest", self.target_manifest, "manifest")]

    def input_root(self, key: str) -> str | None:
        return self.target_root

    def input_splits(self, cfg: TrainConfig) -> tuple[str | None, str | None, tuple[str, str, str]]:
        keys = ("task.target_manifest", "task.target_split", "task.target_val_split")
        if self.paired:  # partners are looked up among all of domain B's records
            return None, None, keys
        return (self.target_split or cfg.data.train_split,
                self.target_val_split or cfg.data.val_split, keys)


def _task_wrap(value: Any, handler):
    """An unknown ``task.name`` gets "did you mean"; a bare string is read as ``{name: ...}`` and
    a mapping without ``name`` is the default task (denoise), as a missing ``task`` is."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" not in value:
        value = {"name": SupportedTask.DENOISE.value, **value}
    if isinstance(value, dict) and "name" in value:
        names = [t.value for t in SupportedTask]
        if str(value["name"]) not in names:
            raise ValueError(f"unknown task '{value['name']}'{suggest(str(value['name']), names)}; "
                             f"options: {', '.join(names)}")
    return handler(value)


TaskConfig = Annotated[
    Union[DenoiseTask, SRTask, SynthTask, TranslateTask],  # noqa: UP007 - explicit for the discriminator
    Field(discriminator="name"),
    WrapValidator(_task_wrap),
]


# --- the tree --------------------------------------------------------------------------------------
class TrainConfig(StrictModel):
    """``medgen train CONFIG.yaml``: one task, one model, the data and the loop's settings."""

    version: Literal[2] = 2
    task: TaskConfig = Field(default_factory=DenoiseTask)
    seed: int = 0
    deterministic: bool = Field(False, description="same seed + data on CPU -> identical weights")
    device: Device = "auto"
    amp: choice(SupportedAmp, "amp") = SupportedAmp.AUTO
    output_dir: str = "runs"
    checkpoint_every: int = Field(50, ge=1)
    model: ModelConfig
    data: DataConfig
    intensity: IntensityNorm = Field(default_factory=lambda: IntensityNorm(mode="percentile", lower=0.5, upper=99.5))
    optim: OptimConfig = Field(default_factory=OptimConfig)
    val: ValConfig = Field(default_factory=ValConfig)
    tracking: TrackConfig = Field(default_factory=TrackConfig)
    card: CardConfig = Field(default_factory=CardConfig)

    MIGRATIONS: ClassVar[tuple[Migration, ...]] = ()  # set below (the functions need the tree)

    @model_validator(mode="after")
    def _cross_check(self) -> TrainConfig:
        from medgen.models import model_spec

        d = self.model.spatial_dims
        p = self.data.patch_size
        if len(p) != d:
            raise ValueError(f"data.patch_size has {len(p)} dims but model.spatial_dims is {d}")
        div = self.model.size_divisor()
        bad = [s for s in p if s % div]
        if bad:
            raise ValueError(f"data.patch_size {p} must be divisible by {div} (the model's depth)")
        self.task.check(self)  # the task's own (more specific) checks first
        tasks = model_spec(self.model).tasks
        if self.task.name not in tasks:
            raise ValueError(f"model '{self.model.name}' is not trained by task "
                             f"'{self.task.name}' (it is for: {', '.join(tasks)})")
        return self

    @classmethod
    def guess_version(cls, data: dict[str, Any]) -> int:
        """Files without ``version``: version 1 if they have its shape, else the current one."""
        old = isinstance(data.get("task"), str) or any(k in data for k in _V1_SECTIONS)
        return 1 if old else 2


# --- version 1 -> 2 --------------------------------------------------------------------------------
_V1_SECTIONS = ("mode", "loss", "blindspot", "degradation", "sr", "synth", "translate")


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """``task: sr`` + ``sr: {...}`` -> ``task: {name: sr, ...}``; ``mode``/``loss``/``blindspot``
    move into the denoise task; ``degradation.preset`` becomes ``task.degradation`` (dropped for
    synth and translate, which never used it). What version 1 refused stays refused: a section
    of another task lands in ``task`` and is reported there as an unknown key."""
    name = str(data.pop("task", None) or "denoise")
    task: dict[str, Any] = {"name": name}
    for section in ("sr", "synth", "translate"):
        body = data.pop(section, None)
        if body is None:
            continue
        if section == name and isinstance(body, dict):
            task.update(body)
        else:
            task[section] = body
    defaults = {"mode": "supervised", "loss": VAELossConfig().model_dump(mode="json"),
                "blindspot": BlindSpotConfig().model_dump(mode="json")}
    for key, default in defaults.items():
        if key not in data:
            continue
        value = data.pop(key)
        trivial = value == default or (isinstance(value, dict) and {**default, **value} == default)
        if name == "denoise" or not trivial:
            task[key] = value
    deg = data.pop("degradation", None)
    if isinstance(deg, dict) and "preset" in deg and name in ("denoise", "sr"):
        task["degradation"] = deg["preset"]
    data["task"] = task
    return data


def _v1_key(parts: list[str]) -> list[str] | None:
    """A ``--set`` key of version 1 -> version 2 (None: unchanged)."""
    head = parts[0]
    if head == "task" and len(parts) == 1:
        return ["task", "name"]
    if head in ("sr", "synth", "translate"):
        return ["task", *parts[1:]]
    if head in ("mode", "loss", "blindspot"):
        return ["task", *parts]
    if parts == ["degradation", "preset"]:
        return ["task", "degradation"]
    return None


TrainConfig.MIGRATIONS = (Migration(
    1, _v1_to_v2, _v1_key,
    "task: NAME + NAME: {...} -> task: {name: NAME, ...}; mode/loss/blindspot and "
    "degradation.preset -> task.mode/loss/blindspot/degradation"),)

__all__ = ["DEFAULT_DENOISE_PRESET", "CardConfig", "DataConfig", "DenoiseTask", "OptimConfig",
           "SRTask", "SynthTask", "TaskConfig", "TrackConfig", "TrainConfig", "TranslateTask",
           "ValConfig"]
