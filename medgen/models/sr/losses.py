"""Losses of the SR GAN: L1, FFT-magnitude (frequency) L1, adversarial (LSGAN / hinge) with MONAI's
PatchDiscriminator (optionally at several input scales), and a perceptual loss on *local* weights only.

Why no MONAI ``PerceptualLoss``: every network it offers is fetched at run time (torch.hub code for
MedicalNet / RadImageNet, lpips or torchvision for 2D), and nothing may be downloaded here.
:class:`LocalPerceptualLoss` takes a user-supplied ``.safetensors`` of a MONAI ResNet-10 (the
MedicalNet architecture: ``shortcut_type="A"``, no downsample bias) and compares features of its
first three stages.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medgen.models.sr.config import SRDiscriminatorConfig


def frequency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance of the (orthonormal) FFT magnitudes over the spatial axes.

    Penalises missing high frequencies that a pixel L1 averages away (Jiang et al., "Focal
    frequency loss", ICCV 2021, without the focal weighting).
    """
    dims = tuple(range(2, pred.ndim))
    fp = torch.fft.rfftn(pred.float(), dim=dims, norm="ortho")
    ft = torch.fft.rfftn(target.float(), dim=dims, norm="ortho")
    return (fp.abs() - ft.abs()).abs().mean()


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD-style multi-scale critic: MONAI ``PatchDiscriminator`` s at the input resolution
    and at 1/2, 1/4... (average-pooled input).

    Why not MONAI's ``MultiScalePatchDiscriminator``: its scales *deepen* the network (scale ``i``
    has ``num_layers_d * (i + 1)`` strided layers) instead of downsampling the input, so a 32-voxel
    training patch collapses to one voxel at the second scale and instance norm fails.
    """

    def __init__(self, cfg: SRDiscriminatorConfig, spatial_dims: int, in_channels: int = 1) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.spatial_dims = spatial_dims
        self.nets = nn.ModuleList(
            PatchDiscriminator(spatial_dims=spatial_dims, channels=cfg.channels,
                               in_channels=in_channels, out_channels=1,
                               num_layers_d=cfg.num_layers_d, norm=cfg.norm.upper())
            for _ in range(cfg.scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pool = F.avg_pool3d if self.spatial_dims == 3 else F.avg_pool2d
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = pool(x, 2, ceil_mode=True)
            out.append(net(x)[-1])
        return out


def build_discriminator(cfg: SRDiscriminatorConfig, spatial_dims: int, in_channels: int = 1
                        ) -> nn.Module:
    """:class:`MultiScaleDiscriminator` with ``cfg.scales`` MONAI ``PatchDiscriminator`` s."""
    return MultiScaleDiscriminator(cfg, spatial_dims, in_channels)


def discriminator_logits(disc: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The final patch logits of every scale."""
    out = disc(x.contiguous().float())
    return list(out) if isinstance(out, list) else [out[-1]]


class AdversarialLoss(nn.Module):
    """MONAI ``PatchAdversarialLoss`` summed over discriminator scales."""

    def __init__(self, criterion: str = "least_squares") -> None:
        super().__init__()
        from monai.losses import PatchAdversarialLoss

        self.fn = PatchAdversarialLoss(criterion=criterion)

    def generator(self, disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        logits = discriminator_logits(disc, fake)
        return sum(self.fn(lg, target_is_real=True, for_discriminator=False) for lg in logits) / len(logits)

    def discriminator(self, disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        lf = discriminator_logits(disc, fake.detach())
        lr = discriminator_logits(disc, real)
        n = len(lf)
        fake_l = sum(self.fn(x, target_is_real=False, for_discriminator=True) for x in lf) / n
        real_l = sum(self.fn(x, target_is_real=True, for_discriminator=True) for x in lr) / n
        return 0.5 * (fake_l + real_l)


class LocalPerceptualLoss(nn.Module):
    """Feature L1 of a frozen MONAI ResNet-10 whose weights come from a local safetensors file.

    Parameters
    ----------
    weights : path
        ``.safetensors`` state_dict of ``monai.networks.nets.resnet10(spatial_dims=...,
        n_input_channels=1, shortcut_type="A", bias_downsample=False, feed_forward=False)``
        (MedicalNet's ResNet-10 converted by the user). Read with safetensors; never unpickled.
    spatial_dims : int

    Raises
    ------
    medgen.errors.ReadError
        Missing file, or keys that do not fit the network.
    """

    def __init__(self, weights: str | Path, spatial_dims: int = 3) -> None:
        super().__init__()
        from monai.networks.nets import resnet10

        from medgen.errors import ReadError
        from medgen.models.checkpoint import read_state_dict

        path = Path(weights)
        if not path.is_file():
            raise ReadError(path.name, "perceptual weights not found (nothing is downloaded)")
        net = resnet10(spatial_dims=spatial_dims, n_input_channels=1, shortcut_type="A",
                       bias_downsample=False, feed_forward=False)
        sd = read_state_dict(path)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ReadError(path.name, f"does not fit a ResNet-10 (missing {len(missing)}, "
                            f"unexpected {len(unexpected)} keys)")
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net

    def train(self, mode: bool = True):  # the feature network stays in eval mode (frozen BN)
        super().train(mode)
        self.net.eval()
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x = (x - x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)) / (
            x.std(dim=tuple(range(1, x.ndim)), keepdim=True) + 1e-6)  # MedicalNet's z-score input
        x = n.act(n.bn1(n.conv1(x)))
        if not n.no_max_pool:
            x = n.maxpool(x)
        out = []
        for layer in (n.layer1, n.layer2, n.layer3):
            x = layer(x)
            out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp, ft = self._features(pred.float()), self._features(target.float())
        return sum(F.l1_loss(a, b) for a, b in zip(fp, ft)) / len(fp)
