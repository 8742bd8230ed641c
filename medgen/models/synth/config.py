"""Configs of the synthesis families (torch-free): ``vae-gen`` and ``ldm``.

Both configs hold two kinds of fields:

* **architecture** (what a ``configs/model/*.yaml`` file sets): widths, depths, latent size;
* **sampling facts** (``conditions``, ``label_channels``, ``image_size``, ``spacing_mm``,
  ``diffusion``): what a checkpoint needs to generate on its own. They are normally left unset in
  the model YAML and filled in by the ``synth`` training task from the training config's
  ``synth:`` section and the training data, so ``config.json`` of a checkpoint is complete.

Conditioning is one vector per sample: ``[present, one-hot(class condition 1), ...,
scalar 1 scaled to [-1, 1], ...]``; the all-zero vector means "no condition" (classifier-free
guidance). :meth:`ConditionSpec` lists how each condition is read from a manifest record's
``labels`` and encoded.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from medgen.config import StrictModel
from medgen.models.base import BaseModelConfig


class ConditionSpec(StrictModel):
    """One condition: a class label (``kind: class``) or a scalar attribute (``kind: scalar``).

    Attributes
    ----------
    name : str
        What ``medgen synthesize --condition NAME=VALUE`` calls it.
    kind : {"class", "scalar"}
    key : str, optional
        Key in each manifest record's ``labels`` (default: ``name``).
    classes : list of str
        Class values (as strings), in embedding order; filled from the training records when empty.
    range : [lo, hi], optional
        Scalar range mapped to [-1, 1]; filled from the training records when unset.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    kind: Literal["class", "scalar"] = "class"
    key: str | None = None
    classes: list[str] = Field(default_factory=list)
    range: list[float] | None = None

    @property
    def label_key(self) -> str:
        return self.key or self.name

    def width(self) -> int:
        return len(self.classes) if self.kind == "class" else 1

    def encode(self, value: Any) -> list[float]:
        """Encode one value (a manifest label or a ``--condition`` string) as floats.

        Raises
        ------
        ValueError
            Unknown class or a non-numeric scalar (the message names the condition).
        """
        if self.kind == "class":
            v = _class_str(value)
            if v not in self.classes:
                raise ValueError(f"condition '{self.name}': unknown class '{v}' "
                                 f"(known: {', '.join(self.classes)})")
            return [1.0 if c == v else 0.0 for c in self.classes]
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"condition '{self.name}': '{value}' is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"condition '{self.name}': value must be finite")
        lo, hi = self.range or (0.0, 1.0)
        return [2.0 * (x - lo) / ((hi - lo) or 1.0) - 1.0]

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "scalar" and self.classes:
            raise ValueError(f"condition '{self.name}': a scalar has no classes")
        if self.kind == "class" and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"condition '{self.name}': duplicate classes")
        if self.range is not None and (len(self.range) != 2 or not self.range[0] < self.range[1]):
            raise ValueError(f"condition '{self.name}': range must be [lo, hi] with lo < hi")
        return self


def _class_str(value: Any) -> str:
    """Class values compare as strings (``1``, ``1.0`` and ``"1"`` are the same class)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def condition_width(conditions: list[ConditionSpec]) -> int:
    """Length of the conditioning vector (0 when unconditional)."""
    return 0 if not conditions else 1 + sum(c.width() for c in conditions)


def encode_conditions(conditions: list[ConditionSpec], values: dict[str, Any] | None
                      ) -> list[float]:
    """The conditioning vector for ``values`` (name -> value); ``None`` gives the null vector.

    Raises
    ------
    ValueError
        A missing or unknown condition, or a bad value.
    """
    if not conditions:
        if values:
            raise ValueError(f"this model is unconditional; got conditions {sorted(values)}")
        return []
    if values is None:
        return [0.0] * condition_width(conditions)
    known = {c.name for c in conditions}
    stray = sorted(set(values) - known)
    if stray:
        raise ValueError(f"unknown condition '{stray[0]}' (known: {', '.join(sorted(known))})")
    vec = [1.0]
    for c in conditions:
        if c.name not in values:
            raise ValueError(f"condition '{c.name}' needs a value (--condition {c.name}=...)")
        vec += c.encode(values[c.name])
    return vec


class DiffusionSettings(StrictModel):
    """Noise schedule, training objective and default sampler of a latent diffusion model.

    ``objective: ddpm`` trains epsilon prediction (MONAI ``DDPMScheduler``) and samples with
    ``ddpm`` (ancestral, every training step) or ``ddim`` (deterministic with ``eta: 0``, any
    number of steps); ``objective: rflow`` trains velocity prediction on the rectified-flow path
    (MONAI ``RFlowScheduler``) and samples with ``rflow`` (Euler steps).
    """

    num_train_timesteps: int = Field(1000, ge=10, le=10000,
                                     description="T; linear betas are for T=1000, scaled by 1000/T")
    schedule: Literal["scaled_linear_beta", "linear_beta", "cosine"] = "scaled_linear_beta"
    beta_start: float = Field(0.0015, gt=0, lt=1)
    beta_end: float = Field(0.0195, gt=0, lt=1)
    objective: Literal["ddpm", "rflow"] = "ddpm"
    sampler: Literal["ddpm", "ddim", "rflow"] | None = Field(
        None, description="default sampler; None: ddim for ddpm, rflow for rflow")
    inference_steps: int = Field(50, ge=1, le=10000)
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM stochasticity (0: deterministic)")
    guidance_scale: float = Field(1.0, ge=0.0, le=50.0, description="classifier-free guidance")

    def default_sampler(self) -> str:
        return self.sampler or ("ddim" if self.objective == "ddpm" else "rflow")

    def check_sampler(self, sampler: str) -> None:
        ok = {"ddpm": ("ddpm", "ddim"), "rflow": ("rflow",)}[self.objective]
        if sampler not in ok:
            raise ValueError(f"sampler '{sampler}' does not fit objective '{self.objective}' "
                             f"(use {' or '.join(ok)})")

    @model_validator(mode="after")
    def _check(self):
        self.check_sampler(self.default_sampler())
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must be > beta_start")
        return self


class _SynthFields(BaseModelConfig):
    """Sampling facts shared by the synthesis families (see the module docstring)."""

    conditions: list[ConditionSpec] = Field(default_factory=list)
    label_channels: int = Field(0, ge=0, le=32, description="one-hot label-map classes (0: none)")
    image_size: list[int] | None = Field(None, description="generated size (one per spatial dim)")
    spacing_mm: list[float] | None = Field(None, description="voxel spacing of generated volumes")
    modality: str = Field("MR", pattern=r"^([A-Z]{2,4}|OT)$")
    fit: Literal["resize", "crop"] = Field("resize", description="how training volumes were fitted")
    slice_range: list[float] = Field(default_factory=lambda: [0.3, 0.7],
                                     description="2D: axial slice fractions used in training")

    def cond_dim(self) -> int:
        return condition_width(self.conditions)

    def image_channels(self) -> int:
        """Intensity channels (``in_channels`` minus the label-map channels)."""
        return self.in_channels - self.label_channels

    def _check_synth(self):
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("conditions: names must be unique")
        if self.in_channels != self.out_channels:
            raise ValueError("synthesis models need in_channels == out_channels")
        if self.label_channels and self.in_channels != 1 + self.label_channels:
            raise ValueError(f"label_channels: {self.label_channels} needs in_channels = "
                             f"out_channels = {1 + self.label_channels} (image + one-hot labels)")
        if self.label_channels == 1:
            raise ValueError("label_channels counts classes including background: >= 2")
        if self.image_size is not None:
            self.check_patch_size(self.image_size)
        if self.spacing_mm is not None and (len(self.spacing_mm) != 3
                                            or any(s <= 0 for s in self.spacing_mm)):
            raise ValueError("spacing_mm: three positive entries (i, j, k)")
        return self


class GenVAEConfig(_SynthFields):
    """Generative VAE on MONAI's ``AutoencoderKL``, sampled from its prior.

    Conditional when ``conditions`` is not empty: the encoder sees the conditioning vector as
    constant extra input channels and the decoder gets ``z + W c`` (``W c``: one latent map per
    condition vector) - the same as a learned condition-dependent prior mean
    ``p(z | c) = N(W c, I)``.
    """

    name: Literal["vae-gen"] = "vae-gen"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1, max_length=6)
    num_res_blocks: int = Field(1, ge=1, le=4)
    latent_channels: int = Field(4, ge=1, le=64)
    norm_num_groups: int = Field(8, ge=1)

    def size_divisor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @model_validator(mode="after")
    def _check(self):
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"channels {self.channels}: each must be divisible by "
                             f"norm_num_groups={self.norm_num_groups}")
        return self._check_synth()


class LDMConfig(_SynthFields):
    """Latent diffusion: MONAI ``AutoencoderKL`` (first stage) + ``DiffusionModelUNet``.

    The latent grid is ``image_size / 2**(len(ae_channels) - 1)`` and must itself be divisible by
    ``2**(len(unet_channels) - 1)``. Conditioning vectors are embedded by a small MLP and added
    to the UNet's timestep embedding (the way MONAI adds class embeddings), and mapped to a
    learned latent-sized map concatenated to the UNet input; classes and scalars share one
    mechanism and no cross-attention is needed.
    """

    name: Literal["ldm"] = "ldm"
    ae_channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1, max_length=5)
    ae_num_res_blocks: int = Field(1, ge=1, le=4)
    latent_channels: int = Field(3, ge=1, le=64)
    ae_norm_num_groups: int = Field(8, ge=1)
    unet_channels: list[int] = Field(default_factory=lambda: [64, 128, 128], min_length=1,
                                     max_length=5)
    unet_attention_levels: list[bool] | None = None
    unet_num_res_blocks: int = Field(1, ge=1, le=4)
    unet_norm_num_groups: int = Field(16, ge=1)
    num_head_channels: int = Field(16, ge=1)
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)

    def ae_divisor(self) -> int:
        return 2 ** (len(self.ae_channels) - 1)

    def size_divisor(self) -> int:
        return self.ae_divisor() * 2 ** (len(self.unet_channels) - 1)

    def attention(self) -> list[bool]:
        return (list(self.unet_attention_levels) if self.unet_attention_levels
                else [False] * len(self.unet_channels))

    @model_validator(mode="after")
    def _check(self):
        if any(c % self.ae_norm_num_groups for c in self.ae_channels):
            raise ValueError(f"ae_channels {self.ae_channels}: each must be divisible by "
                             f"ae_norm_num_groups={self.ae_norm_num_groups}")
        if any(c % self.unet_norm_num_groups for c in self.unet_channels):
            raise ValueError(f"unet_channels {self.unet_channels}: each must be divisible by "
                             f"unet_norm_num_groups={self.unet_norm_num_groups}")
        if len(self.attention()) != len(self.unet_channels):
            raise ValueError("unet_attention_levels needs one entry per unet_channels entry")
        if any(c % self.num_head_channels for c in self.unet_channels):
            raise ValueError(f"unet_channels {self.unet_channels}: each must be divisible by "
                             f"num_head_channels={self.num_head_channels}")
        return self._check_synth()


SynthModelConfig = GenVAEConfig | LDMConfig
