"""Residual UNet denoiser (quality baseline): MONAI ``UNet`` with residual units and, by default,
a global residual connection ``out = x + f(x)`` so an untrained network starts at the identity
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
            # start near the identity: the last conv's output is scaled down so f(x) ~ 0 at init
            with torch.no_grad():
                last = [m for m in self.net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)][-1]
                last.weight.mul_(0.1)
                if last.bias is not None:
                    last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, sizes = pad_to_multiple(x, self.size_divisor)
        y = self.net(xp)
        if self.residual:
            y = xp + y
        return crop_to(y, sizes)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def build_unet(config: UNetConfig) -> ResidualUNet:
    """Registry builder for ``name: unet``."""
    return ResidualUNet(config)
