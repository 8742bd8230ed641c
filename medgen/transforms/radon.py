"""Parallel-beam Radon transform and filtered back-projection in torch.

Written here rather than taken from scikit-image (``skimage.transform.radon/iradon``) so that the
low-dose CT simulation needs no extra dependency, runs on the tensor's device (GPU when there is
one) and handles a whole stack of slices per call. The conventions follow scikit-image: angles in
radians over [0, pi), a square image whose side equals the number of detector bins, the Ram-Lak
ramp filter built from its spatial-domain definition (no DC offset, Kak & Slaney 1988, eq. 61) and
the ``pi / (2 * n_angles)`` back-projection weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["radon", "fbp", "default_angles", "ramp_filter"]

_CHUNK_BYTES = 192 * 1024 * 1024


def default_angles(n_angles: int, device=None) -> torch.Tensor:
    """``n_angles`` equally spaced projection angles over [0, pi) (radians, float32)."""
    return torch.arange(n_angles, device=device, dtype=torch.float32) * (math.pi / n_angles)


def _pixel_centres(d: int, device) -> torch.Tensor:
    # normalised coordinates of pixel centres for align_corners=False
    return (torch.arange(d, device=device, dtype=torch.float32) * 2 + 1) / d - 1


def _chunk(n_angles: int, b: int, d: int) -> int:
    return max(1, min(n_angles, _CHUNK_BYTES // max(1, b * d * d * 4)))


def radon(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Line integrals of a stack of square images.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, D, D)`` float tensor; values outside the inscribed circle should be zero.
    angles : torch.Tensor
        ``(A,)`` projection angles in radians.

    Returns
    -------
    torch.Tensor
        Sinograms ``(B, A, D)`` in pixel units (sum of pixel values along each ray).
    """
    b, d, d2 = images.shape
    if d != d2:
        raise ValueError("radon expects square images")
    dev = images.device
    x = _pixel_centres(d, dev)
    yy, xx = torch.meshgrid(x, x, indexing="ij")  # rows = s (along the ray), cols = t (detector)
    out = []
    src = images.to(torch.float32).unsqueeze(0)  # (1, B, D, D)
    step = _chunk(len(angles), b, d)
    for a0 in range(0, len(angles), step):
        th = angles[a0:a0 + step].to(dev, torch.float32)
        c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        # point at detector position t=xx and ray position s=yy: (t cos - s sin, t sin + s cos)
        gx = xx * c - yy * s
        gy = xx * s + yy * c
        grid = torch.stack([gx, gy], dim=-1)  # (a, D, D, 2)
        rot = F.grid_sample(src.expand(len(th), -1, -1, -1), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # (a, B, D, D)
        out.append(rot.sum(dim=2))  # integrate along s -> (a, B, D)
    return torch.cat(out, dim=0).permute(1, 0, 2).contiguous()


def ramp_filter(size: int, device=None) -> torch.Tensor:
    """Ram-Lak filter of length ``size`` in the frequency domain (spatial-domain construction)."""
    n = torch.cat([torch.arange(1, size // 2 + 1, 2), torch.arange(size // 2 - 1, 0, -2)]).to(
        torch.float64)
    f = torch.zeros(size, dtype=torch.float64)
    f[0] = 0.25
    f[1::2] = -1.0 / (math.pi * n) ** 2
    return (2 * torch.fft.fft(f).real).to(device=device, dtype=torch.float32)


def fbp(sinograms: torch.Tensor, angles: torch.Tensor,
        region: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Filtered back-projection of ``(B, A, D)`` sinograms onto ``(B, D, D)`` images.

    Inverse of :func:`radon` for images supported inside the inscribed circle. ``region``
    ``(row0, row1, col0, col1)`` reconstructs only that window of the ``D x D`` grid (cheaper
    when the rest would be thrown away).
    """
    b, a, d = sinograms.shape
    dev = sinograms.device
    size = max(64, 1 << math.ceil(math.log2(2 * d)))
    filt = ramp_filter(size, dev)
    padded = F.pad(sinograms.to(torch.float32), (0, size - d))
    q = torch.fft.ifft(torch.fft.fft(padded, dim=-1) * filt, dim=-1).real[..., :d]  # (B, A, D)
    x = _pixel_centres(d, dev)
    r0, r1, c0, c1 = region if region is not None else (0, d, 0, d)
    yy, xx = torch.meshgrid(x[r0:r1], x[c0:c1], indexing="ij")
    recon = torch.zeros(b, r1 - r0, c1 - c0, device=dev, dtype=torch.float32)
    step = _chunk(a, b, d)
    for a0 in range(0, a, step):
        th = angles[a0:a0 + step].to(dev, torch.float32)
        c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        t = xx * c + yy * s  # detector coordinate of each pixel, (a, rows, cols)
        grid = torch.stack([t, torch.zeros_like(t)], dim=-1)
        qa = q[:, a0:a0 + step, :].permute(1, 0, 2).unsqueeze(2)  # (a, B, 1, D)
        vals = F.grid_sample(qa, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        recon += vals.sum(dim=0)
    return recon * (math.pi / (2 * a))
