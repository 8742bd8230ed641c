"""Configs of the denoising model families, their losses and blind-spot masking (torch-free)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from medgen.config import StrictModel
from medgen.models.base import BaseModelConfig


class VAEConfig(BaseModelConfig):
    """Denoising VAE on MONAI's ``AutoencoderKL``.

    ``channels`` lists the feature width per resolution level; the latent grid is
    ``spatial / 2**(len(channels) - 1)``. ``residual: true`` makes the decoder predict the corruption
    and returns ``input - corruption`` (needs ``in_channels == out_channels``); the decoder's last
    conv then starts at zero so an untrained model is the identity. Only for low-frequency,
    structured corruptions: white noise cannot pass the bottleneck (measured, docs/models.md).
    ``posterior_logvar_init`` starts the encoder's log-variance head at this constant (default -6,
    sigma ~ 0.05) instead of ~0 (sigma ~ 1): with sigma ~ 1 the sampled latent is mostly noise and the
    denoiser needs many steps to learn to shrink it; ``null`` keeps MONAI's initialisation.
    """

    name: Literal["vae"] = "vae"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1, max_length=6)
    num_res_blocks: int | list[int] = 1
    attention_levels: list[bool] | None = None
    latent_channels: int = Field(4, ge=1, le=64)
    norm_num_groups: int = Field(8, ge=1)
    with_nonlocal_attn: bool = False
    residual: bool = False
    use_checkpoint: bool = False
    posterior_logvar_init: float | None = Field(-6.0, ge=-20.0, le=2.0)

    def size_divisor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def res_blocks(self) -> list[int]:
        if isinstance(self.num_res_blocks, int):
            return [self.num_res_blocks] * len(self.channels)
        return list(self.num_res_blocks)

    def attention(self) -> list[bool]:
        return list(self.attention_levels) if self.attention_levels else [False] * len(self.channels)

    @model_validator(mode="after")
    def _check(self):
        n = len(self.channels)
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels {self.channels}: every entry must be >= 1")
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"channels {self.channels}: each must be divisible by "
                             f"norm_num_groups={self.norm_num_groups} (GroupNorm)")
        if len(self.res_blocks()) != n:
            raise ValueError(f"num_res_blocks has {len(self.res_blocks())} entries, channels has {n}")
        if any(r < 1 for r in self.res_blocks()):
            raise ValueError("num_res_blocks entries must be >= 1")
        if len(self.attention()) != n:
            raise ValueError(f"attention_levels has {len(self.attention())} entries, channels has {n}")
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError("residual: true needs in_channels == out_channels")
        return self


class UNetConfig(BaseModelConfig):
    """Residual UNet denoiser on MONAI's ``UNet`` (residual units), optionally ``out = x + f(x)``.

    ``channels`` lists widths per level, ``strides`` the downsampling between levels (default 2
    everywhere, ``len(channels) - 1`` entries).
    """

    name: Literal["unet"] = "unet"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=2,
                                max_length=7)
    strides: list[int] | None = None
    num_res_units: int = Field(2, ge=0, le=8)
    kernel_size: int = Field(3, ge=1)
    norm: Literal["instance", "batch", "none"] = "instance"
    act: Literal["prelu", "relu", "leakyrelu"] = "prelu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    residual: bool = True
    res_gain_init: float = Field(0.1, ge=0.0, le=1.0,
                                 description="ReZero gain g at init (out = x + g*f(x))")

    def stride_list(self) -> list[int]:
        return list(self.strides) if self.strides is not None else [2] * (len(self.channels) - 1)

    def size_divisor(self) -> int:
        return math.prod(self.stride_list())

    @model_validator(mode="after")
    def _check(self):
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels {self.channels}: every entry must be >= 1")
        if len(self.stride_list()) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries, "
                             f"got {len(self.stride_list())}")
        if any(s < 1 for s in self.stride_list()):
            raise ValueError("strides must be >= 1")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError("residual: true needs in_channels == out_channels")
        return self


class PatchDiscriminatorConfig(StrictModel):
    """MONAI ``PatchDiscriminator`` sizes (used by the VAE's optional adversarial term)."""

    channels: int = Field(32, ge=1)
    num_layers_d: int = Field(3, ge=1, le=6)
    norm: Literal["batch", "instance"] = "instance"


class VAELossConfig(StrictModel):
    """Loss of the denoisers: reconstruction (``recon``, also the ``unet``'s whole loss) +, for the
    VAE, ``kl_weight`` * KL (+ adversarial). ``l2`` optimises PSNR directly; ``l1`` is more robust
    to outliers and heavy-tailed noise.

    ``adv_weight > 0`` enables the adversarial term with a PatchDiscriminator; the trainer then
    steps :meth:`medgen.models.denoise.losses.DenoiseVAELoss.discriminator_loss` too.
    """

    recon: Literal["l1", "l2"] = "l1"
    kl_weight: float = Field(1e-6, ge=0.0)
    adv_weight: float = Field(0.0, ge=0.0)
    adv_criterion: Literal["least_squares", "hinge", "bce"] = "least_squares"
    discriminator: PatchDiscriminatorConfig = Field(default_factory=PatchDiscriminatorConfig)


class BlindSpotConfig(StrictModel):
    """Self-supervised blind-spot masking (Noise2Void / Noise2Self) for data without clean targets.

    ``fraction`` of voxels is masked on a stratified grid (one voxel per cell of side
    ``round(fraction ** (-1/d))``), each replaced by a random neighbour within ``radius``
    (``neighbour``, Noise2Void) or by the mean of its neighbourhood without the centre
    (``mean``, Noise2Self's donut interpolation).
    """

    enabled: bool = False
    fraction: float = Field(0.02, gt=0.0, le=0.5)
    mode: Literal["neighbour", "mean"] = "neighbour"
    radius: int = Field(2, ge=1, le=5)
    loss: Literal["l1", "l2"] = "l2"
