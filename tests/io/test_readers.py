"""Readers on files nobody on the team wrote: pydicom's and pydicom-data's test files, nibabel's."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medgen.errors import (
    InconsistentSeriesError,
    NonFiniteVoxelsError,
    NotDicomError,
    SliceSpacingError,
    UnsupportedSOPClassError,
)
from medgen.io import Volume, read_volume, write_volume
from medgen.io.dicom_read import MissingGeometryError


def sitk_series(folder):
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


def test_ct5n_matches_simpleitk(ct5n_dir):
    vol = read_volume(ct5n_dir)
    ref = Volume.from_sitk(sitk_series(ct5n_dir))
    assert vol.shape == (16, 16, 5)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, ref.array)
    # sorted by position along the normal, not by file name or InstanceNumber
    z = [vol.world([0, 0, k])[2] for k in range(5)]
    assert np.all(np.diff(z) > 0)


def test_slice_order_ignores_file_names_and_instance_numbers(ct5n_dir, tmp_path):
    files = sorted(p for p in ct5n_dir.iterdir())
    for i, f in enumerate(files):  # reverse file-name order and scramble InstanceNumber
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = (i * 3) % 5 + 1
        ds.save_as(tmp_path / f"z{len(files) - i:02d}.dcm")
    a, b = read_volume(ct5n_dir), read_volume(tmp_path)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)


def test_mr700_mixed_orientations_rejected(pydicom_files):
    with pytest.raises(InconsistentSeriesError, match="mixed orientations"):
        read_volume(pydicom_files / "dicomdirtests" / "98892003" / "MR700")


def test_ct2_gap_reported_with_measured_gap_then_allowed(pydicom_files):
    folder = pydicom_files / "dicomdirtests" / "77654033" / "CT2"
    with pytest.raises(SliceSpacingError) as ei:
        read_volume(folder)
    assert ei.value.measured == pytest.approx(202.5, abs=0.01)
    assert ei.value.expected == pytest.approx(1.25, abs=0.01)
    assert "\n" not in str(ei.value) and "17136" in str(ei.value)
    vol = read_volume(folder, allow_uneven=True)
    assert vol.meta["uneven_spacing_resampled"]
    assert vol.spacing[2] == pytest.approx(1.25, abs=1e-3)
    extent = (vol.shape[2] - 1) * vol.spacing[2]
    assert extent == pytest.approx(105.52 - (-99.48), abs=1.25)


@pytest.mark.parametrize("name,exc", [
    ("rtplan.dcm", UnsupportedSOPClassError),
    ("rtstruct.dcm", UnsupportedSOPClassError),
    ("test-SR.dcm", UnsupportedSOPClassError),
    ("waveform_ecg.dcm", UnsupportedSOPClassError),
    ("MR_truncated.dcm", NotDicomError),
    ("crayons.icc", NotDicomError),
])
def test_typed_one_line_errors(pydicom_files, name, exc):
    with pytest.raises(exc) as ei:
        read_volume(pydicom_files / name)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(name)


def test_truncated_copy_of_real_file(pydicom_files, tmp_path):
    data = (pydicom_files / "CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(NotDicomError, match="cut.dcm"):
        read_volume(tmp_path / "cut.dcm")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm", "MR_small_RLE.dcm", "image_dfl.dcm"])
def test_odd_encodings_single_slices(pydicom_files, name):
    if name == "image_dfl.dcm":  # deflated transfer syntax, but a secondary capture without geometry
        with pytest.raises(MissingGeometryError):
            read_volume(pydicom_files / name)
        return
    vol = read_volume(pydicom_files / name)
    ref = Volume.from_sitk(sitk.ReadImage(str(pydicom_files / name)))
    np.testing.assert_array_equal(vol.array.astype(np.float64), ref.array.astype(np.float64))
    np.testing.assert_allclose(vol.affine[:3, :2], ref.affine[:3, :2], atol=1e-4)
    np.testing.assert_allclose(vol.origin, ref.origin, atol=1e-4)


def test_rescale_applied(pydicom_files):
    ds = pydicom.dcmread(pydicom_files / "CT_small.dcm")
    vol = read_volume(pydicom_files / "CT_small.dcm")
    expected = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[:, :, 0], expected)


def test_enhanced_ct_multiframe(pydicom_data_dir):
    path = pydicom_data_dir / "eCT_Supplemental.dcm"
    vol = read_volume(path)
    ds = pydicom.dcmread(path)
    assert vol.shape == (512, 512, 2)
    ref = Volume.from_sitk(sitk.ReadImage(str(path)))
    # frames are ordered along the normal (frame 2 comes first), rescale intercept -1024 applied
    np.testing.assert_array_equal(vol.array[:, :, 0], ds.pixel_array[1].T.astype(np.int64) - 1024)
    np.testing.assert_allclose(vol.affine[:3, :2], ref.affine[:3, :2], atol=1e-4)
    np.testing.assert_allclose(abs(vol.spacing[2]), 10.0, atol=1e-4)


def test_enhanced_mr_without_geometry(pydicom_data_dir):
    path = pydicom_data_dir / "emri_small.dcm"
    with pytest.raises(MissingGeometryError, match="emri_small.dcm"):
        read_volume(path)
    vol = read_volume(path, allow_missing_geometry=True)
    assert vol.shape == (64, 64, 10)
    assert vol.meta["geometry"].startswith("missing")


def test_series_folder_with_rtstruct_only(pydicom_files, tmp_path):
    shutil.copy(pydicom_files / "rtstruct.dcm", tmp_path / "a.dcm")
    with pytest.raises(UnsupportedSOPClassError):
        read_volume(tmp_path)


def test_mixed_sizes_rejected(ct5n_dir, tmp_path):
    for i, f in enumerate(sorted(ct5n_dir.iterdir())):
        ds = pydicom.dcmread(f)
        if i == 2:
            arr = np.zeros((8, 16), dtype=np.int16)
            ds.Rows = 8
            ds.PixelData = arr.tobytes()
        ds.save_as(tmp_path / f.name)
    with pytest.raises(InconsistentSeriesError, match="mixed image sizes"):
        read_volume(tmp_path)


def test_nifti_nan_rejected(tmp_path):
    import nibabel as nib

    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(NonFiniteVoxelsError, match="nan.nii.gz: 1 NaN"):
        read_volume(tmp_path / "nan.nii.gz")


def test_nifti_scaled_and_nifti2(nibabel_data, tmp_path):
    import nibabel as nib

    arr = (np.arange(60).reshape(3, 4, 5)).astype(np.int16)
    img = nib.Nifti1Image(arr, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, -3)
    nib.save(img, tmp_path / "scaled.nii")
    vol = read_volume(tmp_path / "scaled.nii")
    np.testing.assert_allclose(vol.array, arr * 0.5 - 3)
    v2 = read_volume(nibabel_data / "example_nifti2.nii.gz")
    assert v2.meta["nifti_version"] == 2
    ref = Volume.from_sitk(sitk.ReadImage(str(nibabel_data / "anatomical.nii")))
    v1 = read_volume(nibabel_data / "anatomical.nii")
    np.testing.assert_allclose(v1.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(v1.array, ref.array)


def test_metatensor_round_trip(ct5n_dir):
    vol = read_volume(ct5n_dir)
    mt = vol.to_metatensor()
    assert tuple(mt.shape) == (1, 16, 16, 5)
    back = Volume.from_metatensor(mt)
    np.testing.assert_allclose(back.affine, vol.affine)
    np.testing.assert_array_equal(back.array, vol.array)


def test_derived_uids_deterministic(ct5n_dir, tmp_path):
    vol = read_volume(ct5n_dir)
    a = write_volume(vol, tmp_path / "a", digest="model-1")
    b = write_volume(vol, tmp_path / "b", digest="model-1")
    c = write_volume(vol, tmp_path / "c", digest="model-2")
    assert a["series_instance_uid"] == b["series_instance_uid"] != c["series_instance_uid"]
    assert a["sop_instance_uids"] == b["sop_instance_uids"]
    assert all(len(u) <= 64 and u.startswith("2.25.") for u in a["sop_instance_uids"])
    for fa, fb in zip(sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir())):
        assert fa.read_bytes() == fb.read_bytes()  # no timestamps: byte-identical re-runs
    ds = pydicom.dcmread(next((tmp_path / "a").iterdir()))
    src = pydicom.dcmread(next(ct5n_dir.iterdir()))
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.DerivationDescription
    assert not any(p.name.startswith(".medgen-tmp") for p in tmp_path.iterdir())
