"""The synthesis task of a training config (``task: {name: synth, ...}``; torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from medgen.config.base import StrictModel
from medgen.config.fields import Device, choice
from medgen.config.supported import SupportedAmp, SupportedModel, SupportedSampler
from medgen.errors import ConfigError
from medgen.models.synth.config import ConditionSpec, DiffusionSettings

SYNTH_MODELS = (SupportedModel.VAE_GEN, SupportedModel.LDM)


class SynthTrainConfig(StrictModel):
    """How the ``synth`` task trains a generator.

    Attributes
    ----------
    conditions : list of ConditionSpec
        Class labels / scalar attributes read from each manifest record's ``labels`` (by
        ``key``); empty: unconditional. Class lists and scalar ranges left empty are filled from
        the training records and saved in the checkpoint's ``config.json``.
    label_channels : int
        Paired image + label-map synthesis: number of label classes (incl. background); the
        label map of each record is read from ``labels[label_map_key]`` (a path relative to the
        manifest root, same grid as the image) and fed as one-hot channels.
    fit : {"resize", "crop"}
        ``resize``: each whole volume (2D: each axial slice) is resampled to ``data.patch_size``,
        the generated size; ``crop``: random crops of that size (a crop generator).
    slice_range : [lo, hi]
        2D models: axial slices between these fractions of the volume are used.
    diffusion : DiffusionSettings
        ``ldm`` only: schedule, objective (ddpm / rflow), default sampler and steps.
    autoencoder_checkpoint : str, optional
        ``ldm``: load the first stage from this checkpoint folder (an ``ldm``, ``vae-gen`` or
        denoising ``vae`` with the same autoencoder shape) and train the diffusion UNet only.
    autoencoder_steps : int
        ``ldm`` without ``autoencoder_checkpoint``: the first N steps train the autoencoder
        (two-stage training in one run), the rest the UNet.
    kl_weight, recon : autoencoder loss (reconstruction + ``kl_weight`` * KL); the default KL
        weight is 1e-3 for ``vae-gen`` (its prior is sampled: the posterior must stay close to
        it) and 1e-6 for ``ldm`` (the latents must keep the image; the latent scale normalises
        them), as in MONAI's latent diffusion tutorials.
    cond_drop_prob : float
        ``ldm``: probability of dropping the condition (classifier-free guidance training).
    ema_decay : float, optional
        EMA of the generator's weights (used for sampling when present).
    autoencoder_lr : float, optional
        Learning rate of the autoencoder phase (default ``optim.lr``).
    val_sample_steps : int
        Sampling steps of the validation sample grid (``ldm``).
    """

    conditions: list[ConditionSpec] = Field(default_factory=list)
    label_channels: int = Field(0, ge=0, le=32)
    label_map_key: str = "label_map"
    fit: Literal["resize", "crop"] = "resize"
    slice_range: list[float] = Field(default_factory=lambda: [0.3, 0.7])
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)
    autoencoder_checkpoint: str | None = None
    autoencoder_steps: int = Field(0, ge=0)
    kl_weight: float | None = Field(None, ge=0.0, description="None: 1e-3 (vae-gen), 1e-6 (ldm)")
    recon: Literal["l1", "l2"] = "l1"
    cond_drop_prob: float = Field(0.1, ge=0.0, lt=1.0)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    autoencoder_lr: float | None = Field(None, gt=0)
    val_sample_steps: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self):
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("task.conditions: names must be unique")
        lo, hi = (self.slice_range + [None, None])[:2]
        if len(self.slice_range) != 2 or not 0 <= lo < hi <= 1:
            raise ValueError("task.slice_range: [lo, hi] with 0 <= lo < hi <= 1")
        if self.label_channels == 1:
            raise ValueError("task.label_channels counts classes including background: >= 2")
        if self.autoencoder_checkpoint and self.autoencoder_steps:
            raise ValueError("task.autoencoder_checkpoint and task.autoencoder_steps exclude each other")
        return self

    def kl(self, model_name: str) -> float:
        if self.kl_weight is not None:
            return self.kl_weight
        return 1e-6 if model_name == "ldm" else 1e-3

    def check_train(self, cfg: Any) -> None:
        """Cross-field checks against the whole TrainConfig (raises ValueError)."""
        m = cfg.model
        if m.name not in SYNTH_MODELS:
            raise ValueError(f"task synth trains {' or '.join(SYNTH_MODELS)} (model.name is "
                             f"'{m.name}')")
        # sampling facts live in synth:, the task writes them into the saved model config
        defaults = type(m)(name=m.name)
        for f in ("conditions", "label_channels", "image_size", "spacing_mm"):
            if getattr(m, f) != getattr(defaults, f):
                raise ValueError(f"task synth: set model.{f} through the task: section / "
                                 "data.patch_size, not model:")
        if m.name == "ldm":
            if m.diffusion != defaults.diffusion:
                raise ValueError("task synth: set diffusion settings in task.diffusion")
            if not self.autoencoder_checkpoint:
                if self.autoencoder_steps < 1:
                    raise ValueError("ldm needs task.autoencoder_steps > 0 (two-stage training) "
                                     "or task.autoencoder_checkpoint")
                if self.autoencoder_steps >= cfg.optim.max_steps:
                    raise ValueError(f"task.autoencoder_steps ({self.autoencoder_steps}) must "
                                     f"be < optim.max_steps ({cfg.optim.max_steps})")
        elif self.autoencoder_checkpoint or self.autoencoder_steps:
            raise ValueError("task.autoencoder_checkpoint / autoencoder_steps are for ldm only")
        if self.fit == "resize" and m.spatial_dims == 3 and cfg.data.patch_size is None:
            raise ValueError("task synth: data.patch_size is the generated size")


def parse_conditions(items: Sequence[str] | dict[str, Any] | None) -> dict[str, str]:
    """``["tissue=bright", "age=40"]`` -> ``{"tissue": "bright", "age": "40"}``."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k): v for k, v in items.items()}
    out = {}
    for it in items:
        k, sep, v = str(it).partition("=")
        if not sep or not k.strip():
            raise ConfigError("--condition", f"'{it}' is not NAME=VALUE")
        out[k.strip()] = v.strip()
    return out



class SynthesisSettings(StrictModel):
    """What ``medgen synthesize`` is asked to do, validated before the model is loaded.

    The fields are the command's options; :meth:`check_inputs` then reads the checkpoint's
    ``config.json``/``card.json`` (no torch) to check that it is a synthesis model, that the
    conditions name its conditions with valid values, that the sampler suits it, and that the
    memorization check has a training manifest with the splits it needs. Errors are one line
    naming the option.
    """

    model: str
    n: int = Field(ge=1)
    conditions: list[str] = Field(default_factory=list)
    seed: int = 0
    batch: int = Field(4, ge=1)
    fmt: Literal["nifti", "dicom"] = "nifti"
    indices: list[int] | None = None
    sampler: choice(SupportedSampler, "sampler") | None = None
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    device: Device = "auto"
    amp: choice(SupportedAmp, "amp") = SupportedAmp.AUTO
    train_manifest: str | None = None
    manifest_root: str | None = None
    train_split: str = "train"
    heldout_splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    memorization: bool = True
    keep_flagged: bool = False
    memorization_percentile: float = Field(5.0, gt=0, lt=100)
    memorization_margin: float = Field(0.5, ge=0)
    memorization_rule: Literal["both", "either"] = "both"
    embedding: Literal["random", "autoencoder"] = "random"

    @model_validator(mode="after")
    def _check(self):
        bad = [i for i in self.indices or [] if not 0 <= i < self.n]
        if bad:
            raise ValueError(f"indices: {bad[0]} is outside 0..{self.n - 1}")
        if self.keep_flagged and not self.memorization:
            raise ValueError("keep_flagged: needs the memorization check (it keeps what it flags)")
        if self.memorization and self.train_manifest is None:
            raise ValueError("train_manifest: the memorization check needs the model's training "
                             "manifest (or --no-memorization-check to skip it, recorded)")
        return self

    #: command-line spelling of the fields whose option is not ``--field-name``
    OPTIONS: ClassVar[dict[str, str]] = {
        "n": "-n", "fmt": "--format", "indices": "--index", "conditions": "--condition",
        "manifest_root": "--root", "heldout_splits": "--heldout-split",
        "memorization": "--no-memorization-check"}

    @classmethod
    def from_cli(cls, **options: Any) -> SynthesisSettings:
        """Validate the command's options; a ConfigError naming the option (``--format: ...``)."""
        from pydantic import ValidationError

        from medgen.config.base import format_error

        try:
            return cls.model_validate(options)
        except ValidationError as err:
            e = err.errors()[0]
            msg = format_error(e, cls)
            key = msg.split(":", 1)[0]
            if key in cls.model_fields:
                opt = cls.OPTIONS.get(key, "--" + key.replace("_", "-"))
                raise ConfigError(opt, msg.split(":", 1)[1].strip()) from None
            raise ConfigError(None, msg) from None

    def check_inputs(self) -> None:
        """Check the checkpoint, conditions, sampler and manifest (torch-free); ConfigError."""
        import json
        from pathlib import Path

        from medgen.models import parse_model_config
        from medgen.models.synth.config import encode_conditions

        p = Path(self.model)
        if not (p / "config.json").is_file() or not (p / "card.json").is_file():
            raise ConfigError("--model", f"'{p.name}' is not a checkpoint folder (config.json, "
                              "card.json)")
        try:
            cfg = parse_model_config(json.loads((p / "config.json").read_text()))
            task = json.loads((p / "card.json").read_text()).get("task")
        except ValueError as exc:
            raise ConfigError("--model", f"{p.name}: {getattr(exc, 'reason', exc)}") from None
        if cfg.name not in SYNTH_MODELS or task != "synth":
            raise ConfigError("--model", f"'{p.name}' is not a synthesis model ({cfg.name}, task "
                              f"{task}); synthesis models: {', '.join(SYNTH_MODELS)}")
        try:
            encode_conditions(cfg.conditions, parse_conditions(self.conditions))
        except ValueError as exc:
            raise ConfigError("--condition", str(exc)) from None
        self._check_sampler(cfg)
        if self.memorization:
            from medgen.train.preflight import check_splits, load_manifest

            m = load_manifest("--train-manifest", self.train_manifest, self.manifest_root)
            check_splits(m, self.train_split, None,
                         ("--train-manifest", "--train-split", "--heldout-split"))

    def _check_sampler(self, cfg) -> None:

        given = {k: v for k, v in (("--sampler", self.sampler), ("--steps", self.steps),
                                   ("--guidance", self.guidance)) if v is not None}
        if cfg.name != SupportedModel.LDM:
            if given:
                from pathlib import Path

                raise ConfigError(next(iter(given)), f"is for ldm models ('{Path(self.model).name}'"
                                  f" is {cfg.name}, sampled from its prior)")
            return
        try:
            cfg.diffusion.check_sampler(self.sampler or cfg.diffusion.default_sampler())
        except ValueError as exc:
            raise ConfigError("--sampler", str(exc)) from None
