"""The SR degradation model (HR -> LR) and the interpolation baselines.

HR -> LR, per volume axis with a factor ``f > 1``:

* **thick slices** (CT and MR through-plane): ``medgen.transforms`` ``thick_slice`` - the thin
  slices are averaged with the slice profile (Gaussian or rectangular, FWHM = ``f`` thin voxels,
  integrated exactly over each thin voxel), then sampled on the thick grid: thick slice ``m`` is
  centred at thin index ``m f + (f - 1)/2``. Not plain subsampling.
* **k-space truncation** (MR in-plane, ``kspace_axes``): ``kspace_truncation`` with ``mode=crop``
  keeps the central ``1/f`` of k-space and returns the smaller matrix. A DFT crop puts LR sample
  ``m`` at HR index ``m f``; a scanner reconstructing the coarser matrix over the same field of view
  puts it at ``m f + (f - 1)/2`` (pixel *edges* coincide). We shift the HR image by
  ``(f - 1)/2`` voxels (exact Fourier phase ramp) before the crop so both axes types follow the
  cell-centred convention of :func:`medgen.infer.sr.upsampled_geometry`.

Every degradation is a deterministic function of its inputs; noise (the training config's
``task.degradation``) is added by the task with a step-indexed seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["fourier_shift", "make_lr", "crop_to_factors", "interpolate_baseline"]


def fourier_shift(t: torch.Tensor, axis: int, shift: float) -> torch.Tensor:
    """``out[..., x, ...] = t[..., x + shift, ...]`` (periodic, band-limited) along spatial ``axis``
    of a channel-first tensor, via the DFT phase ramp; real output."""
    if shift == 0:
        return t
    dim = axis + 1
    n = t.shape[dim]
    k = torch.fft.fft(t.to(torch.complex64), dim=dim)
    freq = torch.fft.fftfreq(n, device=t.device).to(torch.float64)
    ramp = torch.exp(2j * torch.pi * freq * float(shift)).to(torch.complex64)
    shape = [1] * t.ndim
    shape[dim] = n
    return torch.fft.ifft(k * ramp.reshape(shape), dim=dim).real.to(torch.float32)


def make_lr(hr: torch.Tensor, factors: Sequence[int], *, profile: str = "gaussian",
            kspace_axes: Sequence[int] = ()) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Degrade a channel-first HR image ``(C, *spatial)`` to its LR counterpart.

    Parameters
    ----------
    hr : torch.Tensor
        ``(C, I, J, K)`` (or ``(C, H, W)``); every axis with ``factors[a] > 1`` must be a multiple
        of its factor (use :func:`crop_to_factors`).
    factors : sequence of int
        Per spatial axis.
    profile : {"gaussian", "rect"}
        Slice profile of the thick-slice axes.
    kspace_axes : sequence of int
        Axes degraded by k-space truncation instead.

    Returns
    -------
    lr : torch.Tensor
        ``(C, *[n // f])``.
    records : list of dict
        What was applied (``name``, ``params``, ``geometry``), JSON-able.
    """
    from medgen.transforms.functional import kspace_truncation, thick_slice

    t = hr.as_tensor() if hasattr(hr, "as_tensor") else hr
    t = t.to(torch.float32)
    records: list[dict[str, Any]] = []
    for a, f in enumerate(factors):
        f = int(f)
        if f == 1:
            continue
        n = t.shape[a + 1]
        if n % f:
            raise ValueError(f"axis {a} has {n} voxels, not a multiple of the factor {f}")
        if a in kspace_axes:
            shifted = fourier_shift(t, a, (f - 1) / 2)
            params = {"factor": float(f), "axes": [a], "mode": "crop"}
            t, geo = kspace_truncation(shifted, seed=0, **params)
            records.append({"name": "kspace_truncation", "params": params,
                            "geometry": {**geo, "index_offset": [
                                (f - 1) / 2 if i == a else 0.0 for i in range(len(factors))]}})
        else:
            params = {"factor": float(f), "axis": a, "profile": profile, "resample": "thick"}
            t, geo = thick_slice(t, seed=0, **params)
            records.append({"name": "thick_slice", "params": params, "geometry": geo})
    return t, records


def crop_to_factors(t: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of a channel-first tensor (at their high end) to multiples of
    ``factors``."""
    sl = (slice(None),) + tuple(slice(0, (n // int(f)) * int(f)) for n, f in zip(t.shape[1:], factors))
    return t[sl]


def interpolate_baseline(lr: np.ndarray, factors: Sequence[int], method: str = "bspline"
                         ) -> np.ndarray:
    """Interpolate an LR array onto the HR grid with SimpleITK (the benchmark's baselines).

    The LR grid is placed by the cell-centred convention (spacing ``f``, first centre at
    ``(f - 1)/2`` in HR voxel units), the HR grid has spacing 1 and origin 0, so both cover the
    same extent; points between the outermost LR centres and the box edge are extrapolated by the
    interpolator's boundary handling (ITK mirrors for B-splines).

    Parameters
    ----------
    lr : ndarray
        ``(I, J, K)`` or ``(H, W)`` (index order, as :class:`medgen.io.Volume`).
    factors : sequence of int
    method : {"bspline", "linear", "nearest"}
        ``bspline`` is SimpleITK's cubic ``sitkBSpline``.

    Returns
    -------
    ndarray
        ``lr.shape * factors``, float32.
    """
    import SimpleITK as sitk

    interp = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear,
              "nearest": sitk.sitkNearestNeighbor}[method]
    f = [float(v) for v in factors]
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(lr, np.float32).T))
    img.SetSpacing(f)
    img.SetOrigin([(v - 1) / 2 for v in f])
    size = [int(n * int(v)) for n, v in zip(lr.shape, factors)]
    res = sitk.Resample(img, size, sitk.Transform(), interp, [0.0] * len(f), [1.0] * len(f),
                        list(np.eye(len(f)).flatten()), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(res).T.copy()
