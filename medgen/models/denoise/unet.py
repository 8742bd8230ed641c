"""Residual UNet denoiser (quality baseline): MONAI ``UNet`` with residual units and, by default,
a global residual connection ``out = x + g * f(x)`` (learned gain ``g``, 0.1 at init) so an untrained network starts at the identity
direction and only has to learn the (small) correction.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from medgen.models.denoise.config import UNetConfig
from medgen.models.module import MedgenModule, crop_to, pad_to_multiple

_NORM = {"instance": ("instance", {"affine": True}), "batch": "batch", "none": None}
_ACT = {"prelu": "prelu", "relu": "relu", "leakyrelu": ("leakyrelu", {"negative_slope": 0.1})}


class ResidualUNet(MedgenModule):
    """``forward(x) -> x + f(x)`` (or ``f(x)`` with ``residual: false``), shape-preserving."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        self.net = UNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=tuple(config.channels),
            strides=tuple(config.stride_list()),
            kernel_size=config.kernel_size,
            up_kernel_size=config.kernel_size,
            num_res_units=config.num_res_units,
            act=_ACT[config.act],
            norm=_NORM[config.norm],
            dropout=config.dropout,
        )
        self.residual = bool(config.residual)
        if self.residual:
            # ReZero-style gain (Bachlechner et al. 2021): out = x + g * f(x), g = res_gain_init
            # (0.1 by default) at init,
            # so an untrained model is close to the identity and only learns the correction.
            # (Zeroing the last conv is not enough: MONAI's top ResidualUnit has an identity path.)
            self.res_gain = torch.nn.Parameter(torch.full((config.out_channels,), float(config.res_gain_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, sizes = pad_to_multiple(x, self.size_divisor)
        y = self.net(xp)
        if self.residual:
            y = xp + self.res_gain.view(1, -1, *([1] * (y.ndim - 2))) * y
        return crop_to(y, sizes)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def build_unet(config: UNetConfig) -> ResidualUNet:
    """Registry builder for ``name: unet``."""
    return ResidualUNet(config)
