"""Configs of the translation generators and of translation training (torch-free).

* :class:`Pix2PixConfig` (``name: pix2pix``) - one UNet generator A -> B (Isola et al. 2017).
* :class:`CycleGANConfig` (``name: cyclegan``) - two UNet generators A -> B and B -> A in one
  module (Zhu et al. 2017); inference picks the direction.
* :class:`TranslateTrainConfig` - the ``translate:`` section of a training config
  (``task: translate``): paired vs unpaired data, loss weights, adversarial criterion, label
  smoothing, spectral norm, image pool, mode-collapse threshold.

The generators map *normalised* domain-A intensities to *normalised* domain-B intensities.
Domain A is normalised with the training config's ``intensity`` (saved in the model card);
domain B with the model's ``intensity_b`` (saved in ``config.json``, so inference can map outputs
back to physical units, e.g. Hounsfield units for a synthetic CT: ``{mode: window, center: 500,
width: 3000}``). ``intensity_b: null`` means "same as domain A".
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from medgen.config import StrictModel
from medgen.models.base import BaseModelConfig
from medgen.models.card import IntensityNorm


class _TranslateGenerator(BaseModelConfig):
    """MONAI ``UNet`` generator (residual units, skip connections; the U-Net of Pix2Pix).

    ``channels`` are the widths per level, ``strides`` the downsampling between levels (default 2).
    ``intensity_b`` is the normalisation of the output domain (see the module doc).
    """

    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=2, max_length=7)
    strides: list[int] | None = None
    num_res_units: int = Field(2, ge=0, le=8)
    norm: Literal["instance", "batch", "none"] = "instance"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Pix2Pix's noise source (eval: off)")
    intensity_b: IntensityNorm | None = Field(None, description="normalisation of domain B "
                                              "(None: the card's, same as domain A)")
    modality_b: str | None = Field(None, pattern=r"^[A-Z]{2,4}$", description="DICOM modality of "
                                   "domain B (e.g. CT for a synthetic CT; None: same as the input)")

    def stride_list(self) -> list[int]:
        return list(self.strides) if self.strides is not None else [2] * (len(self.channels) - 1)

    def size_divisor(self) -> int:
        return math.prod(self.stride_list())

    @model_validator(mode="after")
    def _check_gen(self):
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels {self.channels}: every entry must be >= 1")
        if len(self.stride_list()) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries")
        if any(s < 1 for s in self.stride_list()):
            raise ValueError("strides must be >= 1")
        return self


class Pix2PixConfig(_TranslateGenerator):
    """Paired translation generator A -> B (``name: pix2pix``)."""

    name: Literal["pix2pix"] = "pix2pix"


class CycleGANConfig(_TranslateGenerator):
    """Unpaired translation: generators A -> B and B -> A in one module (``name: cyclegan``).

    Both generators share the architecture fields; ``in_channels == out_channels`` is required
    (each generator's output is the other's input).
    """

    name: Literal["cyclegan"] = "cyclegan"

    @model_validator(mode="after")
    def _check_cycle(self):
        if self.in_channels != self.out_channels:
            raise ValueError("cyclegan needs in_channels == out_channels (B -> A takes A -> B's output)")
        return self


class TranslateDiscriminatorConfig(StrictModel):
    """MONAI ``PatchDiscriminator`` (PatchGAN) sizes; ``spectral_norm`` wraps every convolution in
    ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et al. 2018)."""

    channels: int = Field(32, ge=1)
    num_layers_d: int = Field(3, ge=1, le=6)
    norm: Literal["batch", "instance"] = "instance"
    spectral_norm: bool = False


class TranslateTrainConfig(StrictModel):
    """The ``translate:`` section of a training config (``task: translate``).

    Data
    ----
    Domain A is ``data.manifest`` (its ``train``/``val`` splits). Domain B is ``target_manifest``.

    * ``paired: true`` (Pix2Pix, or a CycleGAN trained on pairs): every domain-A record is paired
      with the domain-B record that has the same ``pair_by`` value - ``subject`` (the record's
      keyed subject hash), ``labels.<key>`` or ``extra.<key>``; it must be unique within each
      manifest. The pair must be rigidly registered and resampled onto the same voxel grid:
      same shape and affines within ``pair_tolerance_mm`` (checked when loading; a pair that fails
      is an error naming the record ids).
    * ``paired: false`` (CycleGAN): domain-B patches are drawn independently from
      ``target_manifest``'s ``target_split`` (default: the same split names as domain A).

    Losses
    ------
    Pix2Pix: ``l1_weight * L1(G(a), b) + adv_weight * adversarial``.
    CycleGAN: ``adv_weight * (adv_A + adv_B) + cycle_weight * (|F(G(a)) - a| + |G(F(b)) - b|) +
    identity_weight * (|G(b) - b| + |F(a) - a|)`` (+ ``l1_weight * L1`` when paired).
    ``adv_criterion``: ``least_squares`` (LSGAN), ``bce`` (with one-sided ``label_smoothing`` of the
    real label, Salimans et al. 2016) or ``hinge``. Discriminators see fakes drawn from an image
    pool of ``pool_size`` past generator outputs (Shrivastava et al. 2017; 0: no pool).

    Mode collapse
    -------------
    Validation compares the diversity (mean pairwise L1 between the translated validation volumes)
    with the real target domain's; ``val/collapse_ratio`` below ``collapse_threshold`` sets
    ``val/mode_collapse = 1`` and logs a warning.
    """

    paired: bool = True
    target_manifest: str = Field(description="manifest (.jsonl) of domain B")
    target_root: str | None = None
    target_split: str | None = Field(None, description="domain-B split for training (default: data.train_split)")
    target_val_split: str | None = Field(None, description="domain-B split for validation (default: data.val_split)")
    pair_by: str = Field("subject", description="subject, labels.<key> or extra.<key>")
    pair_tolerance_mm: float = Field(1e-3, gt=0)
    l1_weight: float = Field(100.0, ge=0, description="paired L1 (Pix2Pix: 100)")
    adv_weight: float = Field(1.0, ge=0, description="0: no discriminator (L1-only ablation)")
    cycle_weight: float = Field(10.0, ge=0)
    identity_weight: float = Field(5.0, ge=0, description="CycleGAN: 0.5 * cycle_weight")
    adv_criterion: Literal["least_squares", "bce", "hinge"] = "least_squares"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="bce: real label 1 - smoothing")
    warmup_steps: int = Field(0, ge=0, description="steps without the adversarial term")
    pool_size: int = Field(50, ge=0)
    d_lr: float | None = Field(None, gt=0, description="discriminator learning rate (default optim.lr)")
    discriminator: TranslateDiscriminatorConfig = Field(default_factory=TranslateDiscriminatorConfig)
    collapse_threshold: float = Field(0.2, ge=0, le=1, description="flag mode collapse when the "
                                      "outputs' diversity is below this fraction of the target's")

    @model_validator(mode="after")
    def _check(self):
        ok = self.pair_by == "subject" or (self.pair_by.startswith(("labels.", "extra."))
                                           and len(self.pair_by.split(".", 1)[1]) > 0)
        if not ok:
            raise ValueError(f"task.pair_by '{self.pair_by}': subject, labels.<key> or extra.<key>")
        if self.label_smoothing and self.adv_criterion != "bce":
            raise ValueError("task.label_smoothing applies to adv_criterion: bce only")
        return self

    def check_train(self, cfg) -> None:
        """Raise ``ValueError`` unless the model and the patch size fit this section."""
        name = getattr(cfg.model, "name", None)
        if name not in ("pix2pix", "cyclegan"):
            raise ValueError(f"task translate needs model.name pix2pix or cyclegan, got '{name}'")
        if name == "pix2pix" and not self.paired:
            raise ValueError("pix2pix needs paired data (task.paired: true); use cyclegan")
        if name == "pix2pix" and self.l1_weight == 0 and self.adv_weight == 0:
            raise ValueError("pix2pix with l1_weight 0 and adv_weight 0 learns nothing")
        if self.adv_weight > 0:
            need = 2 ** (self.discriminator.num_layers_d + 2)  # >= 2 voxels before the last norm
            if min(cfg.data.patch_size) < need:
                raise ValueError(f"data.patch_size {cfg.data.patch_size} is too small for a "
                                 f"discriminator with num_layers_d={self.discriminator.num_layers_d} "
                                 f"(needs >= {need} per side)")
