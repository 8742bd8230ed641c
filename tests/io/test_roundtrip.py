"""Geometry proof: DICOM->NIfTI->DICOM and NIfTI->DICOM->NIfTI keep every voxel's value (within the
rescale quantum) and world coordinate (to 1e-4 mm), checked against SimpleITK's own reading."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from medgen.io import Volume, read_volume, write_volume

TOL_MM = 1e-4


def sitk_read(path) -> Volume:
    if path.is_dir():
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(str(path)))
        return Volume.from_sitk(r.Execute())
    return Volume.from_sitk(sitk.ReadImage(str(path)))


def assert_same_voxels(a: Volume, b: Volume, value_tol: float):
    """Every voxel of ``a`` exists in ``b`` at the same world position (to 1e-4 mm), same value.

    ``b`` may store the grid with axes flipped (a left-handed NIfTI written as DICOM comes back
    ordered along the slice normal), so voxels are matched through the two affines."""
    m = np.linalg.inv(b.affine) @ a.affine  # a's index -> b's index
    perm = np.rint(m[:3, :3])
    assert np.all(np.abs(np.abs(perm).sum(axis=0) - 1) == 0), "grids are not voxel-aligned"
    assert a.shape == tuple(int(s) for s in np.abs(perm) @ np.array(a.shape))
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in a.shape], indexing="ij"), -1).reshape(-1, 3)
    ijk_b = np.rint(ijk @ m[:3, :3].T + m[:3, 3]).astype(int)
    assert ijk_b.min() >= 0 and np.all(ijk_b.max(axis=0) < np.array(b.shape))
    wa, wb = a.world(ijk), b.world(ijk_b)
    assert np.abs(wa - wb).max() < TOL_MM
    va = a.array[tuple(ijk.T)].astype(np.float64)
    vb = b.array[tuple(ijk_b.T)].astype(np.float64)
    # quantum/2 from the DICOM rescale, plus float32 rounding of the physical values
    f32 = 2 * np.finfo(np.float32).eps * max(1.0, float(np.abs(va).max()))
    assert np.abs(va - vb).max() <= value_tol + f32


def oblique_phantom(dtype=np.float32, shape=(12, 10, 7), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    direction = Rotation.from_euler("xyz", [17, -23, 31], degrees=True).as_matrix()
    aff = Volume.make_affine([0.7, 0.9, 2.5], direction, [-31.25, 12.5, 70.125])
    arr = (rng.normal(100, 40, shape)).astype(dtype)
    return Volume(arr, aff, {"modality": "MR"})


def test_dicom_nifti_dicom_real_ct(ct5n_dir, tmp_path):
    src = read_volume(ct5n_dir)
    assert_same_voxels(sitk_read(ct5n_dir), src, 0)
    write_volume(src, tmp_path / "a.nii.gz")
    nii_sitk = sitk_read(tmp_path / "a.nii.gz")
    assert_same_voxels(src, nii_sitk, 0)
    mid = read_volume(tmp_path / "a.nii.gz")
    mid.meta.update({k: v for k, v in src.meta.items() if k not in mid.meta})  # keep the source identity
    write_volume(mid, tmp_path / "back", digest="t")
    back_sitk = sitk_read(tmp_path / "back")
    back = read_volume(tmp_path / "back")
    assert_same_voxels(src, back_sitk, 0)
    assert_same_voxels(src, back, 0)


def test_dicom_nifti_dicom_enhanced_ct_non_lps(pydicom_data_dir, tmp_path):
    path = pydicom_data_dir / "eCT_Supplemental.dcm"
    src = read_volume(path)
    assert src.describe()["orientation"] != "LPS"
    write_volume(src, tmp_path / "e.nii")
    assert_same_voxels(src, sitk_read(tmp_path / "e.nii"), 0)
    write_volume(read_volume(tmp_path / "e.nii"), tmp_path / "back", digest="t")
    assert_same_voxels(src, sitk_read(tmp_path / "back"), 0)


@pytest.mark.parametrize("series", ["98892003/MR2/4950", "98892003/MR1/15820"])
def test_non_axial_real_slices(pydicom_files, tmp_path, series):
    """Real sagittal/coronal MR slices (IOP rows along y, columns along -z)."""
    path = pydicom_files / "dicomdirtests" / series
    src = read_volume(path)
    assert src.describe()["orientation"][:2] not in ("LP", "RA")
    write_volume(src, tmp_path / "x.nii.gz")
    assert_same_voxels(src, sitk_read(tmp_path / "x.nii.gz"), 0)
    write_volume(read_volume(tmp_path / "x.nii.gz"), tmp_path / "back", digest="t")
    back = sitk_read(tmp_path / "back")
    np.testing.assert_allclose(back.affine[:3, :2], src.affine[:3, :2], atol=TOL_MM)
    np.testing.assert_allclose(back.origin, src.origin, atol=TOL_MM)
    np.testing.assert_array_equal(back.array, src.array)


def test_nifti_dicom_nifti_oblique_float(tmp_path):
    vol = oblique_phantom()
    write_volume(vol, tmp_path / "o.nii.gz")
    src = read_volume(tmp_path / "o.nii.gz")
    assert_same_voxels(src, sitk_read(tmp_path / "o.nii.gz"), 0)
    info = write_volume(src, tmp_path / "dcm", digest="t")
    quantum = info["rescale_slope"]
    assert quantum < 1e-2
    assert_same_voxels(src, sitk_read(tmp_path / "dcm"), quantum / 2)
    assert_same_voxels(src, read_volume(tmp_path / "dcm"), quantum / 2)
    write_volume(read_volume(tmp_path / "dcm"), tmp_path / "back.nii.gz")
    assert_same_voxels(src, sitk_read(tmp_path / "back.nii.gz"), quantum / 2)
    assert_same_voxels(src, read_volume(tmp_path / "back.nii.gz"), quantum / 2)


def test_nifti_dicom_nifti_left_handed_real(nibabel_data, tmp_path):
    """nibabel's anatomical.nii (real, LAS storage: a left-handed grid in LPS)."""
    src = read_volume(nibabel_data / "anatomical.nii")
    write_volume(src, tmp_path / "dcm", digest="t")
    assert_same_voxels(src, sitk_read(tmp_path / "dcm"), 0)
    write_volume(read_volume(tmp_path / "dcm"), tmp_path / "back.nii")
    assert_same_voxels(src, read_volume(tmp_path / "back.nii"), 0)
    assert_same_voxels(src, sitk_read(tmp_path / "back.nii"), 0)


def test_volume_without_source_is_synthetic_secondary(tmp_path):
    import pydicom

    vol = oblique_phantom(np.int16)
    vol.meta.pop("modality")
    write_volume(vol, tmp_path / "s", digest="abc")
    ds = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0])
    assert str(ds.PatientName) == "SYNTHETIC^MEDGEN"
    assert "SYNTHETIC" in ds.ImageType
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert_same_voxels(vol, sitk_read(tmp_path / "s"), 0)
