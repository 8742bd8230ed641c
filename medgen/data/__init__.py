"""Small sample data, built from public files shipped inside installed packages (nothing is
downloaded) plus generated phantoms.

* ``dicom/ct5n``: the real 5-slice CT series from pydicom's bundled test files
  (``dicomdirtests/98892001/CT5N``);
* ``dicom/mr_sag``: a real single sagittal MR slice from the same collection;
* ``nifti/anatomical.nii``: nibabel's bundled real anatomical test volume;
* ``nifti/sub-XX_T1w.nii.gz``: generated brain-like MR phantoms (ellipsoid "tissues", smooth bias,
  a few subjects) big enough to train a tiny denoiser in seconds;
* ``ct/ct_phantom_XX/``: generated abdominal CT phantoms in Hounsfield units, written as DICOM
  series with a clearly synthetic identity (for the low-dose CT pipeline).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def _pydicom_dir() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).parent


def brain_phantom(shape=(48, 56, 40), seed: int = 0) -> np.ndarray:
    """A smooth brain-like phantom in [0, 1]: skull ring, grey/white matter, ventricles, lesions."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    x, y, z = grids
    scale = 1 + 0.06 * rng.standard_normal(3)
    r = np.sqrt((x / (0.85 * scale[0])) ** 2 + (y / (0.9 * scale[1])) ** 2 + (z / (0.8 * scale[2])) ** 2)
    img = np.zeros(shape, np.float32)
    img[r < 1.0] = 0.9  # skull / scalp
    img[r < 0.9] = 0.55  # grey matter
    img[r < 0.7] = 0.8  # white matter
    vent = np.sqrt((x / 0.12) ** 2 + ((y - 0.05) / 0.3) ** 2 + (z / 0.15) ** 2)
    img[vent < 1] = 0.15
    for _ in range(3):  # small lesions at random places
        c = rng.uniform(-0.4, 0.4, 3)
        rad = rng.uniform(0.05, 0.1)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        img[d < rad] = rng.uniform(0.3, 1.0)
    # gyri-like texture and a smooth bias field
    tex = 0.05 * np.sin(9 * x + rng.uniform(0, 6)) * np.sin(11 * y) * np.sin(7 * z)
    img = np.where(r < 0.9, img + tex, img)
    bias = 1 + 0.1 * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))
    return np.clip(img * bias, 0, 1).astype(np.float32)


def ct_phantom(shape=(64, 64, 24), seed: int = 0) -> np.ndarray:
    """An abdomen-like CT phantom in HU: air, body (fat rim, soft tissue), liver, kidneys, spine."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = np.full(shape, -1000.0, np.float32)  # air
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    img[body] = -100.0  # fat
    img[(x / 0.8) ** 2 + (y / 0.6) ** 2 < 1] = 40.0  # soft tissue
    liver = ((x + 0.35) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 + (z / 1.2) ** 2 < 1
    img[liver] = 60.0 + rng.normal(0, 3)
    for sx in (-0.3, 0.3):
        kid = ((x - sx) / 0.12) ** 2 + ((y - 0.25) / 0.15) ** 2 + (z / 0.6) ** 2 < 1
        img[kid] = 150.0  # contrast-enhanced kidneys
    spine = (x / 0.1) ** 2 + ((y - 0.45) / 0.1) ** 2 < 1
    img[spine] = 700.0
    for _ in range(2):  # small lesions
        c = rng.uniform(-0.4, 0.2, 3)
        img[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < 0.08 ** 2] = rng.uniform(-20, 100)
    return img


def build_sample_data(dst: str | Path, n_phantoms: int = 6, n_ct: int = 4) -> Path:
    """Create the sample tree under ``dst`` (idempotent) and return it."""
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti

    dst = Path(dst)
    src = _pydicom_dir() / "dicomdirtests"
    if not (dst / "dicom" / "ct5n").exists():
        shutil.copytree(src / "98892001" / "CT5N", dst / "dicom" / "ct5n")
    if not (dst / "dicom" / "mr_sag").exists():
        (dst / "dicom" / "mr_sag").mkdir(parents=True)
        shutil.copy(src / "98892003" / "MR2" / "4950", dst / "dicom" / "mr_sag" / "4950")
    import nibabel

    anat = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    (dst / "nifti").mkdir(parents=True, exist_ok=True)
    if anat.exists() and not (dst / "nifti" / "anatomical.nii").exists():
        shutil.copy(anat, dst / "nifti" / "anatomical.nii")
    for i in range(n_phantoms):
        p = dst / "nifti" / f"sub-{i + 1:02d}_T1w.nii.gz"
        if not p.exists():
            arr = brain_phantom(seed=i) * 1000.0
            aff = Volume.make_affine([1.0, 1.0, 1.2], None, [-24.0, -28.0, -24.0])
            write_nifti(Volume(arr.astype(np.float32), aff, {"modality": "MR"}), p)
    from medgen.io.dicom_write import write_dicom_series

    for i in range(n_ct):
        p = dst / "ct" / f"ct_phantom_{i + 1:02d}"
        if not p.exists():
            aff = Volume.make_affine([0.8, 0.8, 2.5], None, [-25.6, -25.6, -30.0])
            vol = Volume(np.rint(ct_phantom(seed=100 + i)).astype(np.int16), aff, {"modality": "CT"})
            write_dicom_series(vol, p, digest=f"medgen-sample-ct-{i}",
                               derivation="generated CT phantom (medgen sample data)", synthetic=True)
    return dst
