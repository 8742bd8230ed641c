"""Blind-spot masking for self-supervised denoising (Noise2Void / Noise2Self family).

With no clean target, the network sees the noisy image with a sparse set of voxels hidden and is
trained to predict the *noisy* value of exactly those voxels. Because the noise is independent
between voxels, the only information about a hidden voxel's value is its neighbourhood's signal,
so the minimiser is the clean signal (Krull et al., "Noise2Void", CVPR 2019; Batson & Royer,
"Noise2Self", ICML 2019).

Selection is stratified: the volume is tiled in cells of side ``cell = max(2, round(fraction **
(-1/d)))`` and one voxel is drawn uniformly inside each cell (so the masked set is spread evenly and
its fraction is ``1 / cell**d``, exactly for sizes divisible by ``cell``). All randomness comes from
a ``torch.Generator`` (CPU) so a seed replays the same masks on any device.

Written here rather than taken from MONAI: MONAI has no blind-spot transform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medgen.models.denoise.config import BlindSpotConfig


def blindspot_cell(fraction: float, spatial_dims: int) -> int:
    """Side of the stratification cell for a requested ``fraction`` (at least 2)."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    return max(2, round(fraction ** (-1.0 / spatial_dims)))


def blindspot_mask(x: torch.Tensor, fraction: float = 0.02, *, mode: str = "neighbour",
                   radius: int = 2, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a stratified random subset of voxels of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``, 2 or 3 spatial dims. Not modified.
    fraction : float
        Requested masked fraction; the actual one is ``1 / blindspot_cell(fraction, d) ** d``.
    mode : {"neighbour", "mean"}
        ``neighbour`` (Noise2Void): each hidden voxel takes the value of a random voxel within
        ``radius`` (never itself; reflected at the borders). ``mean`` (Noise2Self): the mean of the
        ``(2 radius + 1)**d`` neighbourhood without the centre (replicate padding).
    radius : int
        Neighbourhood radius in voxels.
    generator : torch.Generator, optional
        CPU generator; the same seed gives the same mask and replacements.

    Returns
    -------
    masked : torch.Tensor
        Copy of ``x`` with the hidden voxels replaced (all channels of a voxel hidden together).
    mask : torch.Tensor
        Bool, shape of ``x``, True where hidden; compute the loss there only
        (:func:`masked_loss`).
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(x.shape)}")
    if mode not in ("neighbour", "mean"):
        raise ValueError(f"unknown blind-spot mode '{mode}' (neighbour, mean)")
    if radius < 1:
        raise ValueError("radius must be >= 1")
    b, c = x.shape[:2]
    sizes = list(x.shape[2:])
    d = len(sizes)
    cell = blindspot_cell(fraction, d)
    n_cells = [math.ceil(s / cell) for s in sizes]
    g = generator
    offsets = torch.randint(0, cell, (b, *n_cells, d), generator=g)
    base = torch.stack(torch.meshgrid(*[torch.arange(n) * cell for n in n_cells], indexing="ij"),
                       dim=-1)
    coords = (base.unsqueeze(0) + offsets).reshape(b, -1, d)
    size_t = torch.tensor(sizes)
    valid = (coords < size_t).all(-1)
    b_idx = torch.arange(b).unsqueeze(1).expand_as(valid)[valid]
    pts = coords[valid]  # (M, d)

    mask_vox = torch.zeros((b, *sizes), dtype=torch.bool)
    mask_vox[(b_idx, *pts.unbind(-1))] = True
    mask_vox = mask_vox.to(x.device)
    mask = mask_vox.unsqueeze(1).expand_as(x)

    if mode == "neighbour":
        m = pts.shape[0]
        disp = torch.randint(-radius, radius + 1, (m, d), generator=g)
        axis = torch.randint(0, d, (m,), generator=g)
        sign = torch.randint(0, 2, (m,), generator=g) * 2 - 1
        zero = (disp == 0).all(-1)
        disp[zero, axis[zero]] = sign[zero]
        nb = pts + disp
        outside = (nb < 0) | (nb >= size_t)
        nb = torch.where(outside, pts - disp, nb).clamp(min=torch.zeros(d, dtype=torch.long),
                                                         max=size_t - 1)
        dev = x.device
        bi, ci, ni = b_idx.to(dev), pts.to(dev).unbind(-1), nb.to(dev).unbind(-1)
        masked = x.clone()
        masked[(bi, slice(None), *ci)] = x[(bi, slice(None), *ni)]
    else:
        k = 2 * radius + 1
        kernel = torch.ones((k,) * d, dtype=x.dtype, device=x.device)
        kernel[(radius,) * d] = 0
        kernel = (kernel / kernel.sum()).expand(c, 1, *(k,) * d).contiguous()
        pad = [radius] * (2 * d)
        xp = F.pad(x, pad, mode="replicate")
        conv = F.conv3d if d == 3 else F.conv2d
        local = conv(xp, kernel, groups=c)
        masked = torch.where(mask, local, x)
    return masked, mask


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                kind: str = "l2") -> torch.Tensor:
    """Mean L1/L2 over the masked voxels only (0 with a zero gradient if the mask is empty)."""
    mask = mask.expand_as(pred)
    n = mask.sum()
    if int(n) == 0:
        return (pred * 0).sum()
    diff = (pred - target)[mask]
    if kind == "l2":
        return diff.pow(2).mean()
    if kind == "l1":
        return diff.abs().mean()
    raise ValueError(f"unknown loss '{kind}' (l1, l2)")


class BlindSpotMasker:
    """Callable wrapper of :func:`blindspot_mask` configured by :class:`BlindSpotConfig`.

    ``masker(noisy, generator) -> (masked_input, mask)``; train with
    ``masker.loss(predict_fn_output, noisy, mask)``.
    """

    def __init__(self, config: BlindSpotConfig) -> None:
        self.config = config

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return blindspot_mask(x, self.config.fraction, mode=self.config.mode,
                              radius=self.config.radius, generator=generator)

    def loss(self, pred: torch.Tensor, noisy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_loss(pred, noisy, mask, self.config.loss)
