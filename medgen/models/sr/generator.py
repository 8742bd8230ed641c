"""RRDB super-resolution generator (2D/3D) with per-axis (anisotropic) sub-pixel upsampling.

ESRGAN's generator (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial
Networks", ECCV workshops 2018): residual-in-residual dense blocks without batch norm, residual
scaling ``beta``, then upsampling and two convolutions at the output resolution. Written for
``spatial_dims`` 2 or 3 and for a *different* factor per axis.

Why our own shuffle: MONAI's ``SubpixelUpsample`` / ``pixelshuffle`` take one integer factor for
every spatial axis; thick-slice SR needs 1x1x4 (only the slice axis grows). A 1x1x4 sub-pixel conv
with MONAI would have to shuffle by 4 along every axis (64x the channels) and then discard most of
it. :func:`axis_shuffle` moves ``f`` channel groups into one spatial axis; factors that are powers of
two go in stages of 2 (one conv each, as ESRGAN does for x4), others in one stage.

Global skip: the input interpolated onto the output grid is added to the network's output. The
interpolation is cell-centred: output voxel ``m`` sits at input index ``(m + 1/2) / f - 1/2`` - the
same convention as the thick-slice degradation (thick slice ``n`` is centred at thin index
``n f + (f - 1)/2``) and as :func:`medgen.infer.sr.upsampled_geometry` (same world extent). It is
linear (``F.interpolate``, ``align_corners=False``), Keys cubic, or a *learned* polyphase filter
initialised at cubic (:class:`PolyphaseSkip`), so the generator starts at plain interpolation and
learns the correction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medgen.models.module import MedgenModule
from medgen.models.sr.config import SRGeneratorConfig


def _conv(dims: int, cin: int, cout: int, k: int = 3) -> nn.Module:
    cls = nn.Conv3d if dims == 3 else nn.Conv2d
    return cls(cin, cout, k, padding=k // 2)


def axis_shuffle(x: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """Sub-pixel shuffle along one spatial axis: ``(B, C*f, ..., n, ...) -> (B, C, ..., n*f, ...)``.

    Channel ``c * f + r`` becomes sub-position ``r`` of voxel ``n`` (output index ``n * f + r``).
    ``axis`` counts spatial axes from 0.
    """
    if factor == 1:
        return x
    b, cf = x.shape[:2]
    spatial = list(x.shape[2:])
    c = cf // factor
    y = x.reshape(b, c, factor, *spatial)
    # move the factor dim right after the chosen spatial axis, then merge them
    d = 3 + axis  # position of the spatial axis in y
    y = y.movedim(2, d)  # (B, C, s0..s_axis, f, ...)
    spatial[axis] *= factor
    return y.reshape(b, c, *spatial)


def icnr_(weight: torch.Tensor, factor: int) -> None:
    """ICNR init (Aitken et al. 2017) for :func:`axis_shuffle`: every sub-position starts with the
    same kernel, so the initial upsampling is nearest-neighbour (no checkerboard)."""
    cout = weight.shape[0] // factor
    sub = torch.empty(cout, *weight.shape[1:])
    nn.init.kaiming_normal_(sub, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(factor, dim=0))


class ResidualDenseBlock(nn.Module):
    """``L`` densely connected convs (growth ``g``); the last maps back to ``nf``; ``x + beta * out``."""

    def __init__(self, dims: int, nf: int, gc: int, layers: int, beta: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(dims, nf + i * gc, gc) for i in range(layers - 1))
        self.last = _conv(dims, nf + (layers - 1) * gc, nf)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.beta = beta
        for m in [*self.convs, self.last]:  # ESRGAN: kaiming init scaled by 0.1 in the trunk
            nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            m.weight.data.mul_(0.1)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + self.beta * self.last(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: ``x + beta * RDB(RDB(RDB(x)))``."""

    def __init__(self, dims: int, nf: int, gc: int, blocks: int, layers: int, beta: float) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ResidualDenseBlock(dims, nf, gc, layers, beta)
                                    for _ in range(blocks)])
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.beta * self.body(x)


def _stages(factor: int) -> list[int]:
    """Split an axis factor into upsampling stages (powers of two in steps of 2)."""
    if factor > 1 and factor & (factor - 1) == 0:
        return [2] * int(math.log2(factor))
    return [factor] if factor > 1 else []


class UpsampleStage(nn.Module):
    """One per-axis upsampling stage: sub-pixel conv + shuffle, or nearest + conv; LeakyReLU."""

    def __init__(self, dims: int, nf: int, axis: int, factor: int, mode: str) -> None:
        super().__init__()
        self.axis, self.factor, self.mode, self.dims = axis, factor, mode, dims
        if mode == "pixelshuffle":
            self.conv = _conv(dims, nf, nf * factor)
            icnr_(self.conv.weight, factor)
        else:
            self.conv = _conv(dims, nf, nf)
        nn.init.zeros_(self.conv.bias)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixelshuffle":
            return self.act(axis_shuffle(self.conv(x), self.axis, self.factor))
        scale = [1] * self.dims
        scale[self.axis] = self.factor
        return self.act(self.conv(F.interpolate(x, scale_factor=tuple(float(s) for s in scale),
                                                mode="nearest")))


def keys_cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel (Keys 1981; ``a = -0.5``: Catmull-Rom)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def cubic_phase_taps(factor: int, taps: int) -> torch.Tensor:
    """``(factor, taps)`` weights: output phase ``r`` of input voxel ``n`` is
    ``sum_j w[r, j] x[n + j - taps // 2]``, cubic interpolation at the cell-centred position
    ``n + (r + 1/2)/f - 1/2``. Rows sum to 1."""
    half = taps // 2
    w = torch.zeros(factor, taps, dtype=torch.float64)
    for r in range(factor):
        delta = (r + 0.5) / factor - 0.5
        for j in range(taps):
            w[r, j] = keys_cubic((j - half) - delta)
    return (w / w.sum(1, keepdim=True)).float()


class PolyphaseSkip(nn.Module):
    """Separable polyphase upsampling filter, one 1D stage per upsampled axis: replicate-pad,
    depthwise conv with ``f`` output phases per channel, :func:`axis_shuffle`.

    ``learnable=False`` keeps the cubic taps fixed (a buffer); ``True`` learns them (one filter
    bank per axis shared by all channels, initialised at cubic)."""

    def __init__(self, dims: int, channels: int, factors: tuple[int, ...], taps: int,
                 learnable: bool) -> None:
        super().__init__()
        self.dims, self.channels, self.taps = dims, channels, taps
        self.axes = [(a, int(f)) for a, f in enumerate(factors) if f > 1]
        for a, f in self.axes:
            w = cubic_phase_taps(f, taps)
            if learnable:
                self.register_parameter(f"taps{a}", nn.Parameter(w))
            else:
                self.register_buffer(f"taps{a}", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv3d if self.dims == 3 else F.conv2d
        c = x.shape[1]
        for a, f in self.axes:
            w = getattr(self, f"taps{a}").to(x.dtype)  # (f, taps)
            shape = [1] * self.dims
            shape[a] = self.taps
            kernel = w.repeat(c, 1).reshape(c * f, 1, *shape)  # channel c -> outputs c*f + r
            pad: list[int] = []
            for ax in reversed(range(self.dims)):
                p = self.taps // 2 if ax == a else 0
                pad += [p, p]
            x = axis_shuffle(conv(F.pad(x, pad, mode="replicate"), kernel, groups=c), a, f)
        return x


class RRDBGenerator(MedgenModule):
    """SR generator: ``forward(x) -> (B, out_channels, *spatial * scale_factors)``.

    Attributes
    ----------
    scale_factors : tuple of int
        Per spatial axis of the model's input (what :func:`medgen.models.predict` and the
        inference core read).
    scale_factor : tuple of int
        Same tuple (the inference core accepts an int or a per-axis sequence here).
    """

    def __init__(self, config: SRGeneratorConfig) -> None:
        super().__init__(config)
        d = config.spatial_dims
        nf, gc = config.features, config.growth
        self.scale_factors = tuple(int(f) for f in config.scale_factors)
        self.scale_factor = self.scale_factors  # type: ignore[assignment]
        self.conv_first = _conv(d, config.in_channels, nf)
        self.trunk = nn.Sequential(*[RRDB(d, nf, gc, config.dense_blocks, config.dense_layers,
                                          config.residual_scale) for _ in range(config.num_blocks)])
        self.conv_body = _conv(d, nf, nf)
        self.up = nn.Sequential(*[UpsampleStage(d, nf, axis, s, config.upsample)
                                  for axis, f in enumerate(self.scale_factors) for s in _stages(f)])
        self.conv_hr = _conv(d, nf, nf)
        self.conv_last = _conv(d, nf, config.out_channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.skip_mode = config.skip
        self.poly = None
        if self.skip_mode in ("cubic", "learned"):
            self.poly = PolyphaseSkip(d, config.in_channels, self.scale_factors, config.skip_taps,
                                      learnable=self.skip_mode == "learned")
        if self.skip_mode != "none":
            # small output at init: the model starts at the skip's interpolation
            self.conv_last.weight.data.mul_(0.1)
            nn.init.zeros_(self.conv_last.bias)
        self._interp = "trilinear" if d == 3 else "bilinear"

    def interpolate(self, x: torch.Tensor) -> torch.Tensor:
        """Cell-centred (bi/tri)linear interpolation of ``x`` onto the output grid."""
        size = [s * f for s, f in zip(x.shape[2:], self.scale_factors)]
        return F.interpolate(x, size=size, mode=self._interp, align_corners=False)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The global skip of ``x`` on the output grid (see ``config.skip``)."""
        if self.poly is not None:
            return self.poly(x)
        return self.interpolate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.trunk(feat))
        feat = self.up(feat)
        out = self.conv_last(self.act(self.conv_hr(feat)))
        if self.skip_mode != "none":
            skip = self.skip(x)
            if skip.shape[1] == out.shape[1]:
                out = out + skip
            else:  # channel mismatch: skip the mean intensity image to every output channel
                out = out + skip.mean(1, keepdim=True)
        return out

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def build_rrdb_sr(config: SRGeneratorConfig) -> RRDBGenerator:
    """Registry builder for ``name: rrdb_sr``."""
    return RRDBGenerator(config)
