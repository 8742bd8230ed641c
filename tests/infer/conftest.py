"""Fixtures for the batch-inference tests: tiny checkpoints built in-test, small input trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from .infer_helpers import make_checkpoint, phantom, write_phantom


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet-tiny")


@pytest.fixture
def nifti_tree(tmp_path) -> Path:
    """src/ with 10 small NIfTI phantoms in sub-folders (the kill -9 job)."""
    src = tmp_path / "src"
    for i in range(10):
        write_phantom(src / f"sub-{i // 3:02d}" / f"scan_{i:02d}.nii.gz", seed=i)
    return src


@pytest.fixture
def mixed_tree(tmp_path, ct5n_dir, pydicom_files) -> Path:
    """A real 5-slice CT series, a real CT file, two NIfTI phantoms, and three bad items:
    a truncated DICOM, a NIfTI with NaNs, an RT structure set (pydicom's rtstruct.dcm)."""
    import nibabel as nib

    src = tmp_path / "mixed"
    shutil.copytree(ct5n_dir, src / "study1" / "ct5n")
    (src / "study1" / "ctsmall").mkdir(parents=True)
    shutil.copy(pydicom_files / "CT_small.dcm", src / "study1" / "ctsmall" / "IM1.dcm")
    write_phantom(src / "nifti" / "a.nii.gz", seed=1)
    write_phantom(src / "nifti" / "deep" / "b.nii.gz", seed=2)
    # bad: truncated DICOM (cut in the pixel data)
    data = (pydicom_files / "CT_small.dcm").read_bytes()
    (src / "bad" / "truncated").mkdir(parents=True)
    (src / "bad" / "truncated" / "IM1.dcm").write_bytes(data[: len(data) // 2])
    # bad: NaNs
    arr = phantom((12, 12, 8), 3)
    arr[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(src / "bad" / "nan.nii.gz"))
    # bad: RT structure set (not an image) next to the good series
    shutil.copy(pydicom_files / "rtstruct.dcm", src / "study1" / "ct5n" / "rtstruct.dcm")
    return src
