"""Fixtures for the batch-inference tests: tiny checkpoints built in-test, small input trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def make_checkpoint(dst: Path, *, config: str = "configs/tiny/unet-tiny-3d.yaml", seed: int = 0,
                    patch_size=(16, 16, 16), intensity=None, expected_spacing=None) -> Path:
    """A tiny real checkpoint (safetensors + config + card) with seeded random weights."""
    import torch

    from medgen.models import ModelCard, build_model, load_model_config, save_checkpoint

    root = Path(__file__).resolve().parents[2]
    cfg = load_model_config(root / config)
    torch.manual_seed(seed)
    model = build_model(cfg)
    card = ModelCard(model_name=cfg.name, task="denoise", intended_use="test denoiser",
                     modality="any", intensity=intensity or {"mode": "percentile", "lower": 1.0,
                                                             "upper": 99.0},
                     patch_size=list(patch_size) if patch_size else None,
                     expected_spacing_mm=expected_spacing)
    return save_checkpoint(dst, model, cfg, card=card)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet-tiny")


def phantom(shape=(24, 20, 12), seed: int = 0) -> np.ndarray:
    from medgen.data import brain_phantom

    rng = np.random.default_rng(seed)
    img = brain_phantom(shape, seed=seed) * 1000.0
    return (img + rng.normal(0, 20, shape)).astype(np.float32)


def write_phantom(path: Path, shape=(24, 20, 12), seed: int = 0, spacing=(1.0, 1.1, 1.5)) -> Path:
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti

    d = np.diag([0.0, 1.0, 0.0])  # an oblique-free but non-identity direction (LSA-like)
    direction = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]) if seed % 2 else np.eye(3)
    del d
    aff = Volume.make_affine(spacing, direction, [-10.0 + seed, 5.0, 20.0])
    write_nifti(Volume(phantom(shape, seed), aff, {"modality": "MR"}), path)
    return path


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
