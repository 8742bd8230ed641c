"""Grids of volumes: scaled output grids, resampling onto another grid, grids for a spacing.

All grids follow :class:`medgen.io.volume.Volume`'s convention (``affine`` maps ``(i, j, k, 1)`` to
LPS millimetres). A grid is ``(shape, affine)``.

* :func:`scaled_geometry` - the output grid of a model with a per-axis scale factor: the same
  world *box* (voxel edges kept), ``shape * scale`` voxels. Super-resolution, denoising (scale 1)
  and translation share it.
* :func:`grid_for_spacing` - a grid over the same box with (about) a given spacing.
* :func:`resample_onto` - linear resampling (SimpleITK) of a scalar volume onto a grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medgen.io.volume import Volume

__all__ = ["grid_for_spacing", "per_axis", "resample_onto", "scaled_geometry"]


def per_axis(scale: float | Sequence[float], n: int = 3) -> tuple[float, ...]:
    """A scalar or per-axis scale factor as an ``n``-tuple of floats."""
    if isinstance(scale, (int, float, np.integer, np.floating)):
        return (float(scale),) * n
    s = tuple(float(v) for v in scale)
    if len(s) != n:
        raise ValueError(f"scale factor {s} must have {n} entries")
    return s


def scaled_geometry(shape: Sequence[int], affine: np.ndarray, scale: float | Sequence[float]
                    ) -> tuple[tuple[int, ...], np.ndarray]:
    """Output grid of a model with scale factor ``scale``: same world extent, finer voxels.

    Voxel *edges* are kept: the input's box (from half a voxel before the first centre to half a
    voxel after the last, along every axis) is the output's box. With ``f = out_n / in_n`` per
    axis, the spacing becomes ``spacing / f`` and the first centre moves by ``(1/f - 1) / 2``
    input voxels. ``scale == 1`` returns the input grid unchanged.

    Parameters
    ----------
    shape : sequence of int
        Input spatial shape ``(I, J, K)``.
    affine : (4, 4) array
        Input voxel-to-LPS affine.
    scale : float or sequence of float
        Per-axis factor (``(1, 1, 4)`` for 4x through-plane super-resolution).

    Returns
    -------
    (shape, affine)
    """
    shape = tuple(int(s) for s in shape)
    s = per_axis(scale, len(shape))
    out = tuple(max(1, int(round(n * f))) for n, f in zip(shape, s))
    if out == shape:
        return shape, np.asarray(affine, dtype=np.float64).copy()
    f = np.array(out, dtype=np.float64) / np.array(shape, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    new = np.eye(4)
    new[:3, :3] = a[:3, :3] @ np.diag(1.0 / f)
    new[:3, 3] = a[:3, 3] + a[:3, :3] @ ((1.0 / f - 1.0) / 2.0)
    return out, new


def _sitk_grid(shape: Sequence[int], affine: np.ndarray):
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    v = Volume(np.zeros((1, 1, 1), np.float32), affine)
    ref.SetSpacing([float(x) for x in v.spacing])
    ref.SetOrigin([float(x) for x in v.origin])
    ref.SetDirection([float(x) for x in v.direction.flatten()])
    return ref


def resample_onto(vol: Volume, shape: Sequence[int], affine: np.ndarray) -> Volume:
    """Linear resampling of a scalar volume onto another grid (SimpleITK; edges extrapolated)."""
    import SimpleITK as sitk

    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(_sitk_grid(shape, affine))
    f.SetInterpolator(sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    src = Volume(vol.array.astype(np.float32), vol.affine, vol.meta)
    out = Volume.from_sitk(f.Execute(src.to_sitk()), vol.meta)
    return Volume(out.array.astype(np.float32), out.affine, dict(vol.meta))


def grid_for_spacing(vol: Volume, spacing: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid over the same world extent as ``vol`` with (about) the given spacing."""
    sp = np.asarray(list(spacing) + list(vol.spacing[len(spacing):]), dtype=np.float64)
    scale = vol.spacing / sp
    return scaled_geometry(vol.shape, vol.affine, tuple(scale))
