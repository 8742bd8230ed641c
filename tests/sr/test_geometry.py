"""Output geometry of super-resolution: same world extent and orientation, checked with SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medgen.infer.sr import permute_volume, upsampled_geometry
from medgen.io import Volume


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


GRIDS = {
    # name: (spacing, direction, origin)
    "axial": ([0.8, 0.8, 4.0], np.eye(3), [-100.0, -120.0, 30.0]),
    # sagittal stack: slices along L-R (LPS x); in-plane rows/cols along P and S
    "sagittal": ([1.0, 1.0, 3.0], np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float), [-60.0, -90.0, 80.0]),
    "coronal": ([0.9, 0.9, 5.0], np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float), [-90.0, 20.0, 70.0]),
    "oblique": ([0.7, 0.9, 3.3], _rotation(0.3, -0.2, 0.5), [12.5, -7.25, 3.0]),
    "flipped": ([1.1, 1.2, 2.5], np.diag([-1.0, 1.0, -1.0]), [5.0, 5.0, 5.0]),
}


def _corners(img: sitk.Image) -> np.ndarray:
    """World positions of the 8 corners of the voxel *box* (centres +- half a voxel)."""
    size = img.GetSize()
    pts = []
    for c in np.ndindex(2, 2, 2):
        idx = [-0.5 if b == 0 else n - 0.5 for b, n in zip(c, size)]
        pts.append(img.TransformContinuousIndexToPhysicalPoint(idx))
    return np.array(pts)


@pytest.mark.parametrize("name", sorted(GRIDS))
@pytest.mark.parametrize("factors", [(1, 1, 2), (1, 1, 4), (2, 2, 1), (3, 1, 2)])
def test_world_extent_and_orientation_preserved(name, factors):
    spacing, direction, origin = GRIDS[name]
    shape = (7, 6, 5)
    aff = Volume.make_affine(spacing, direction, origin)
    new_shape, new_aff = upsampled_geometry(aff, shape, factors)
    assert new_shape == tuple(n * f for n, f in zip(shape, factors))
    src = Volume(np.zeros(shape, np.float32), aff).to_sitk()
    dst = Volume(np.zeros(new_shape, np.float32), new_aff).to_sitk()
    # same box in world space (SimpleITK's own index -> physical mapping)
    np.testing.assert_allclose(_corners(dst), _corners(src), atol=1e-9)
    # same orientation, spacing divided by the factors
    np.testing.assert_allclose(dst.GetDirection(), src.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(np.array(dst.GetSpacing()) * factors, src.GetSpacing(), atol=1e-12)
    # input voxel n's centre is the mean of its f output centres (symmetric subdivision)
    for ax, f in enumerate(factors):
        n = 2
        idx_in = [1, 1, 1]
        idx_in[ax] = n
        centre = np.array(src.TransformIndexToPhysicalPoint(idx_in))
        subs = []
        for r in range(f):
            idx = [i * g for i, g in zip(idx_in, factors)]
            idx = [i + (g - 1) / 2 for i, g in zip(idx, factors)]  # other axes: their centres
            idx[ax] = n * f + r
            subs.append(dst.TransformContinuousIndexToPhysicalPoint(idx))
        np.testing.assert_allclose(np.mean(subs, axis=0), centre, atol=1e-9)


def test_matches_inference_core_and_degradation_geometry():
    """upsampled_geometry inverts the thick-slice record's geometry and agrees with the core."""
    import torch

    from medgen.io.geometry import scaled_geometry
    from medgen.models.sr.degrade import make_lr
    from medgen.transforms import apply_geometry

    spacing, direction, origin = GRIDS["oblique"]
    hr_aff = Volume.make_affine(spacing[:2] + [1.1], direction, origin)
    hr = torch.rand(1, 8, 6, 16)
    for factors in ([1, 1, 2], [1, 1, 4], [2, 2, 1]):
        kspace = [0, 1] if factors[0] > 1 else []
        lr, records = make_lr(hr, factors, kspace_axes=kspace)
        lr_aff = hr_aff
        for rec in records:
            lr_aff = apply_geometry(lr_aff, rec["geometry"])
        shape, aff = upsampled_geometry(lr_aff, lr.shape[1:], factors)
        assert shape == tuple(hr.shape[1:])
        np.testing.assert_allclose(aff, hr_aff, atol=1e-9)
        core_shape, core_aff = scaled_geometry(lr.shape[1:], lr_aff, factors)
        assert core_shape == shape
        np.testing.assert_allclose(core_aff, aff, atol=1e-9)


def test_permute_volume_keeps_world_positions():
    spacing, direction, origin = GRIDS["oblique"]
    vol = Volume(np.random.rand(4, 5, 6).astype(np.float32), Volume.make_affine(spacing, direction, origin))
    p = permute_volume(vol, [2, 0, 1])
    assert p.shape == (6, 4, 5)
    for ijk in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        pijk = (ijk[2], ijk[0], ijk[1])
        assert p.array[pijk] == vol.array[ijk]
        np.testing.assert_allclose(p.world(pijk), vol.world(ijk), atol=1e-12)


def test_bad_factors_rejected():
    with pytest.raises(ValueError, match="integers"):
        upsampled_geometry(np.eye(4), (4, 4, 4), (1, 2))
    with pytest.raises(ValueError, match="integers"):
        upsampled_geometry(np.eye(4), (4, 4, 4), (1, 1, 1.5))
