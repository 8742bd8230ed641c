"""Translation networks: UNet generators, PatchGAN discriminators (optional spectral norm), the
adversarial criteria (LSGAN, BCE with one-sided label smoothing, hinge), the image pool and the
diversity measure behind the mode-collapse check.

The generators are MONAI's ``UNet`` (residual units): Pix2Pix's U-Net generator with skip
connections. MONAI ships no CycleGAN/Pix2Pix wrapper, so the two-generator module, the pool and the
smoothed BCE are written here (a few lines each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from medgen.models.module import MedgenModule, crop_to, pad_to_multiple
from medgen.models.translate.config import (
    CycleGANConfig,
    Pix2PixConfig,
    TranslateDiscriminatorConfig,
)

_NORM = {"instance": ("instance", {"affine": True}), "batch": "batch", "none": None}
DIRECTIONS = ("a2b", "b2a")


def _unet(cfg) -> UNet:
    return UNet(spatial_dims=cfg.spatial_dims, in_channels=cfg.in_channels,
                out_channels=cfg.out_channels, channels=tuple(cfg.channels),
                strides=tuple(cfg.stride_list()), num_res_units=cfg.num_res_units,
                norm=_NORM[cfg.norm], dropout=cfg.dropout)


class _Padded(nn.Module):
    """A UNet that accepts any spatial size (replicate-padded to the size divisor, cropped back)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.net = _unet(cfg)
        self.div = int(cfg.size_divisor())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, sizes = pad_to_multiple(x, self.div)
        return crop_to(self.net(xp), sizes)


class Pix2PixGenerator(MedgenModule):
    """Pix2Pix generator A -> B (``name: pix2pix``); ``direction`` must stay ``a2b``."""

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        self.g_ab = _Padded(config)
        self.direction = "a2b"

    def generator(self, direction: str = "a2b") -> nn.Module:
        if direction != "a2b":
            raise ValueError("a pix2pix model translates a2b only")
        return self.g_ab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_ab(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.direction)(x)


class CycleGAN(MedgenModule):
    """Both CycleGAN generators (``g_ab``: A -> B, ``g_ba``: B -> A); ``direction`` picks the one
    :meth:`infer` runs (``a2b`` by default)."""

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__(config)
        self.g_ab = _Padded(config)
        self.g_ba = _Padded(config)
        self.direction = "a2b"

    def generator(self, direction: str = "a2b") -> nn.Module:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction '{direction}': a2b or b2a")
        return self.g_ab if direction == "a2b" else self.g_ba

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_ab(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.direction)(x)


def build_pix2pix(config: Pix2PixConfig) -> Pix2PixGenerator:
    """Registry builder for ``name: pix2pix``."""
    return Pix2PixGenerator(config)


def build_cyclegan(config: CycleGANConfig) -> CycleGAN:
    """Registry builder for ``name: cyclegan``."""
    return CycleGAN(config)


# --------------------------------------------------------------------------- discriminators


def build_discriminator(cfg: TranslateDiscriminatorConfig, spatial_dims: int, in_channels: int
                        ) -> nn.Module:
    """MONAI ``PatchDiscriminator``; every convolution spectrally normalised when asked."""
    from monai.networks.nets import PatchDiscriminator

    d = PatchDiscriminator(spatial_dims=spatial_dims, channels=cfg.channels,
                           in_channels=in_channels, out_channels=1, num_layers_d=cfg.num_layers_d,
                           norm=cfg.norm.upper())
    if cfg.spectral_norm:
        from torch.nn.utils.parametrizations import spectral_norm

        convs = [(name, m) for name, m in d.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        for name, m in convs:
            parent = d.get_submodule(name.rsplit(".", 1)[0]) if "." in name else d
            setattr(parent, name.rsplit(".", 1)[-1], spectral_norm(m))
    return d


def patch_logits(disc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final patch logits of a MONAI ``PatchDiscriminator`` (it returns every layer's output)."""
    out = disc(x.contiguous().float())
    return out[-1] if isinstance(out, (list, tuple)) else out


class GANCriterion(nn.Module):
    """Adversarial losses on patch logits.

    ``least_squares`` (LSGAN, Mao et al. 2017): ``(D - t)^2``; ``bce``: BCE-with-logits against a
    real label of ``1 - label_smoothing`` (one-sided smoothing, fakes stay 0); ``hinge``.
    """

    def __init__(self, criterion: str = "least_squares", label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion = criterion
        self.real_label = 1.0 - float(label_smoothing)

    def _loss(self, logits: torch.Tensor, real: bool, for_d: bool) -> torch.Tensor:
        if self.criterion == "hinge":
            if not for_d:
                return -logits.mean()
            return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
        target = (self.real_label if (real and for_d) else 1.0) if real else 0.0
        t = torch.full_like(logits, target)
        if self.criterion == "least_squares":
            return F.mse_loss(logits, t)
        return F.binary_cross_entropy_with_logits(logits, t)

    def generator(self, disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        return self._loss(patch_logits(disc, fake), True, False)

    def discriminator(self, disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self._loss(patch_logits(disc, fake.detach()), False, True)
                      + self._loss(patch_logits(disc, real), True, True))


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017, CycleGAN).

    Until full, every fake is stored and returned; then, with probability 1/2 a fake is swapped
    with a random stored one (the stored one is returned). Randomness comes from ``generator`` so
    that it is a function of the training step (exact resume re-fills the pool on CPU memory
    only: the pool is not saved; a resumed run starts with an empty pool, which CycleGAN's
    authors do too).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, fakes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for img in fakes.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand((), generator=generator)) < 0.5:
                i = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)


def diversity(volumes: list[torch.Tensor]) -> float:
    """Mean pairwise L1 distance between ``(C, *spatial)`` volumes (0 for fewer than two).

    The mode-collapse check compares this for the translated outputs with the real target
    domain's: a generator that maps every input to (nearly) the same image scores ~0.
    """
    n = len(volumes)
    if n < 2:
        return 0.0
    shapes = {tuple(v.shape) for v in volumes}
    if len(shapes) > 1:  # different grids (other subjects): resample to the smallest common size
        size = [min(s[d] for s in shapes) for d in range(1, len(next(iter(shapes))))]
        mode = "trilinear" if len(size) == 3 else "bilinear"
        volumes = [F.interpolate(v[None].float(), size=size, mode=mode, align_corners=False)[0]
                   for v in volumes]
    tot, k = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            tot += float((volumes[i].float() - volumes[j].float()).abs().mean())
            k += 1
    return tot / k


def collapse_check(outputs: list[torch.Tensor], targets: list[torch.Tensor], threshold: float
                   ) -> dict[str, float]:
    """``{"val/diversity_out", "val/diversity_target", "val/collapse_ratio", "val/mode_collapse"}``.

    ``mode_collapse`` is 1.0 when the outputs' diversity is below ``threshold`` times the
    target domain's (a ratio of 1 means as diverse as the real target data). With fewer than two
    target volumes the ratio is undefined: ``collapse_ratio`` is left out, the flag stays 0.
    """
    d_out, d_tgt = diversity(outputs), diversity(targets)
    m = {"val/diversity_out": d_out, "val/diversity_target": d_tgt, "val/mode_collapse": 0.0}
    if d_tgt > 0:  # needs two target volumes; no NaN is ever logged (MLflow, sealed runs)
        m["val/collapse_ratio"] = d_out / d_tgt
        m["val/mode_collapse"] = float(m["val/collapse_ratio"] < threshold)
    return m
