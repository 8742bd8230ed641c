"""Configs of the super-resolution generator and of SR training (torch-free).

* :class:`SRGeneratorConfig` (``name: rrdb_sr``) - the generator in the model registry.
* :class:`SRTrainConfig` - the ``sr:`` section of a training config (``task: sr``): the degradation
  model that makes the LR/HR pairs on the fly, the loss weights of the two phases, EMA and the
  discriminator.

Factors are integers per spatial axis of the *volume* ``(i, j, k)``: ``[1, 1, 4]`` turns
1x1x4 mm into 1x1x1 mm (through-plane), ``[2, 2, 1]`` doubles the in-plane matrix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medgen.config import StrictModel
from medgen.config.fields import choice
from medgen.config.supported import PROFILE_ALIASES, SupportedProfile
from medgen.models.base import BaseModelConfig

_MAX_FACTOR = 8


def _check_factors(f: list[int], where: str) -> None:
    if any(int(v) < 1 or int(v) > _MAX_FACTOR for v in f):
        raise ValueError(f"{where} {f}: every entry must be an integer in 1..{_MAX_FACTOR}")
    if all(int(v) == 1 for v in f):
        raise ValueError(f"{where} {f}: at least one axis must have a factor > 1")


class SRGeneratorConfig(BaseModelConfig):
    """3D (or 2D) residual-in-residual dense block generator (ESRGAN's RRDB, Wang et al. 2018).

    ``conv -> num_blocks x RRDB -> conv (+ skip) -> per-axis upsampling -> 2 convs``, plus a
    global skip: the input interpolated (linear, cell-centred) onto the output grid, so the
    network only learns the correction to plain interpolation.

    Attributes
    ----------
    scale_factors : list of int
        Upsampling per spatial axis of the model's input (``spatial_dims`` entries).
    features, growth : int
        Trunk width and dense-layer growth (ESRGAN: 64 and 32).
    num_blocks : int
        RRDBs in the trunk (ESRGAN: 23).
    dense_blocks, dense_layers : int
        Residual dense blocks per RRDB (ESRGAN: 3) and conv layers per dense block (ESRGAN: 5,
        the last of which maps back to ``features``).
    residual_scale : float
        beta of the residual scaling inside dense blocks and RRDBs (ESRGAN: 0.2).
    upsample : {"pixelshuffle", "interp_conv"}
        Sub-pixel convolution with a per-axis shuffle (ICNR-initialised), or nearest-neighbour
        interpolation followed by a convolution.
    skip : {"learned", "cubic", "linear", "none"}
        The global skip added to the network's output: the input interpolated onto the output
        grid (cell-centred). ``linear``: (bi/tri)linear; ``cubic``: Keys cubic convolution
        (a = -0.5) as a fixed separable polyphase filter; ``learned``: the same polyphase filter
        with ``skip_taps`` learnable taps per output phase and axis, initialised at cubic - a
        linear deblur-and-interpolate stage that converges in a few hundred steps, leaving the
        RRDB trunk the non-linear part.
    skip_taps : int
        Taps (odd) of the cubic / learned polyphase filters.
    slice_axis : {0, 1, 2}
        2D models only: the volume axis *across* which slices are taken (2: planes ``(i, j)``;
        1: planes ``(i, k)``, for through-plane SR of axial stacks with a 2D model).
    """

    name: Literal["rrdb_sr"] = "rrdb_sr"
    scale_factors: list[int] = Field(default_factory=lambda: [1, 1, 2], min_length=2, max_length=3)
    features: int = Field(32, ge=4, le=256)
    growth: int = Field(16, ge=2, le=128)
    num_blocks: int = Field(4, ge=1, le=64)
    dense_blocks: int = Field(3, ge=1, le=8)
    dense_layers: int = Field(5, ge=2, le=8)
    residual_scale: float = Field(0.2, gt=0.0, le=1.0)
    upsample: Literal["pixelshuffle", "interp_conv"] = "pixelshuffle"
    skip: Literal["learned", "cubic", "linear", "none"] = "learned"
    skip_taps: int = Field(7, ge=5, le=15)
    slice_axis: Literal[0, 1, 2] = 2

    def size_divisor(self) -> int:
        return 1  # fully convolutional, no downsampling

    def volume_factors(self) -> list[int]:
        """Factors per *volume* axis ``(i, j, k)`` (2D models: 1 across ``slice_axis``)."""
        if self.spatial_dims == 3:
            return list(self.scale_factors)
        f = list(self.scale_factors)
        f.insert(self.slice_axis, 1)
        return f

    @model_validator(mode="after")
    def _check(self):
        if len(self.scale_factors) != self.spatial_dims:
            raise ValueError(f"scale_factors {self.scale_factors} needs {self.spatial_dims} entries "
                             f"(spatial_dims is {self.spatial_dims})")
        _check_factors(self.scale_factors, "scale_factors")
        if self.skip_taps % 2 == 0:
            raise ValueError(f"skip_taps {self.skip_taps} must be odd")
        return self


class SRDiscriminatorConfig(StrictModel):
    """MONAI ``PatchDiscriminator`` (``scales: 1``) or ``MultiScalePatchDiscriminator``."""

    channels: int = Field(32, ge=1)
    num_layers_d: int = Field(3, ge=1, le=6)
    norm: Literal["batch", "instance"] = "instance"
    scales: int = Field(1, ge=1, le=4, description="number of discriminators at halved resolutions")


class SRTrainConfig(StrictModel):
    """The ``sr:`` section of a training config (``task: sr``).

    Pairs are made on the fly from each HR patch (see ``docs/super_resolution.md``):
    slice-profile averaging then resampling onto the thick grid along every axis with a factor > 1
    (``medgen.transforms`` ``thick_slice``), except the ``kspace_axes`` (MR in-plane), which keep
    the central ``1/f`` of k-space (``kspace_truncation``, crop). The optional noise is the
    SR task's ``degradation`` preset, applied to the LR input.

    Loss: phase 1 (``step < warmup_steps``) ``l1_weight * L1 + freq_weight * FFT-magnitude L1``;
    phase 2 adds ``adv_weight * adversarial`` (LSGAN or hinge, discriminator stepped too) and
    ``perceptual_weight * feature L1`` when ``perceptual_weights`` names a local file.
    ``adv_weight: 0`` trains the L1-only generator (the ablation). ``init_from`` starts the
    generator (and its EMA) from another checkpoint's EMA weights - ESRGAN's two-stage recipe
    (a PSNR-oriented L1 model, then the GAN from it, ``warmup_steps: 0``).
    """

    factors: list[int] = Field(default_factory=lambda: [1, 1, 2], min_length=3, max_length=3,
                               description="upsampling per volume axis (i, j, k)")
    profile: choice(SupportedProfile, "slice profile", PROFILE_ALIASES) = SupportedProfile.GAUSSIAN
    kspace_axes: list[int] = Field(default_factory=list,
                                   description="axes degraded by k-space truncation (MR in-plane)")
    context: int = Field(2, ge=0, le=16, description="LR voxels of context degraded around a patch "
                         "and cut off (no edge effects from the patch border)")
    warmup_steps: int = Field(100, ge=0, description="L1-only steps before the adversarial phase")
    l1_weight: float = Field(1.0, ge=0)
    freq_weight: float = Field(0.05, ge=0, description="L1 of FFT magnitudes")
    adv_weight: float = Field(0.005, ge=0, description="0: no discriminator (L1-only ablation)")
    adv_criterion: Literal["least_squares", "hinge"] = "least_squares"
    perceptual_weight: float = Field(0.0, ge=0)
    perceptual_weights: str | None = Field(None, description="local .safetensors of a MONAI "
                                           "ResNet-10 feature network; nothing is downloaded")
    init_from: str | None = Field(None, description="checkpoint folder of a generator with the "
                                  "same config (e.g. the L1 model) to start from; ESRGAN's recipe")
    skip_lr_mult: float = Field(10.0, gt=0, description="learning-rate multiplier of the learned "
                                "skip's few polyphase taps (they converge in tens of steps)")
    ema_decay: float = Field(0.999, gt=0, lt=1)
    d_lr: float | None = Field(None, gt=0, description="discriminator learning rate (default optim.lr)")
    discriminator: SRDiscriminatorConfig = Field(default_factory=SRDiscriminatorConfig)

    @model_validator(mode="after")
    def _check(self):
        _check_factors(self.factors, "task.factors")
        bad = [a for a in self.kspace_axes if a not in (0, 1, 2)]
        if bad:
            raise ValueError(f"task.kspace_axes {self.kspace_axes}: axes are 0, 1, 2")
        flat = [a for a in self.kspace_axes if self.factors[a] == 1]
        if flat:
            raise ValueError(f"task.kspace_axes {self.kspace_axes}: axis {flat[0]} has factor 1")
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ValueError("task.perceptual_weight > 0 needs task.perceptual_weights (a local "
                             "weights file; nothing is downloaded)")
        return self

    def thick_axes(self) -> list[int]:
        """Axes degraded by slice-profile averaging."""
        return [a for a in range(3) if self.factors[a] > 1 and a not in self.kspace_axes]

    def check_model(self, model: BaseModelConfig, patch_size: list[int]) -> None:
        """Raise ``ValueError`` unless the generator and ``data.patch_size`` fit these factors."""
        if getattr(model, "name", None) != "rrdb_sr":
            raise ValueError(f"task sr needs an SR generator (model.name: rrdb_sr), got '{model.name}'")
        vf = model.volume_factors()  # type: ignore[attr-defined]
        if list(vf) != list(self.factors):
            raise ValueError(f"task.factors {self.factors} differ from the model's per-axis factors "
                             f"{vf} (model.scale_factors, slice_axis)")
        if model.spatial_dims == 2:
            axes = [a for a in range(3) if a != model.slice_axis]  # type: ignore[attr-defined]
        else:
            axes = [0, 1, 2]
        for p, a in zip(patch_size, axes):
            if p % self.factors[a]:
                raise ValueError(f"data.patch_size {patch_size} (HR) must be divisible by the "
                                 f"factor {self.factors[a]} of axis {a}")
        if self.adv_weight > 0:
            d = self.discriminator
            need = 2 ** (d.num_layers_d + 1 + d.scales)
            if min(patch_size) < need:  # MONAI's PatchDiscriminator needs >= 2 output voxels
                raise ValueError(f"data.patch_size {patch_size} is too small for a discriminator "
                                 f"with num_layers_d={d.num_layers_d} and scales={d.scales} "
                                 f"(needs >= {need} per side; lower task.discriminator.num_layers_d)")
