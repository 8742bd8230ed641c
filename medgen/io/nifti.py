"""NIfTI-1/2 (.nii, .nii.gz) reading and writing with nibabel.

NIfTI stores RAS world coordinates; medgen's :class:`Volume` uses LPS, so the first two rows of
the affine are negated at this boundary (and nowhere else). Scaled files (scl_slope/scl_inter)
are read in physical units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.errors import NonFiniteVoxelsError, ReadError, WriteError
from medgen.io.volume import LPS_TO_RAS, Volume
from medgen.utils.atomic import atomic_path


def read_nifti(path: str | Path, *, name: str | None = None, check_finite: bool = True) -> Volume:
    import nibabel as nib

    path = Path(path)
    nm = name or path.name
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise ReadError(nm, f"not a readable NIfTI file ({type(exc).__name__})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReadError(nm, f"not a NIfTI image ({type(img).__name__})")
    hdr = img.header
    try:
        slope, inter = hdr.get_slope_inter()
        raw_dtype = img.get_data_dtype()
        if (slope is None or (slope == 1 and (inter or 0) == 0)) and raw_dtype.kind in "iub":
            arr = np.asanyarray(img.dataobj)
        else:
            arr = img.get_fdata(dtype=np.float32)
    except Exception as exc:
        raise ReadError(nm, f"truncated or unreadable NIfTI data ({type(exc).__name__})") from None
    arr = np.asarray(arr)
    if not arr.dtype.isnative:  # big-endian files: torch and MONAI need native byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    while arr.ndim > 4 or (arr.ndim == 4 and arr.shape[3] == 1):
        if arr.shape[-1] != 1:
            raise ReadError(nm, f"unsupported NIfTI shape {arr.shape}")
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4):
        raise ReadError(nm, f"unsupported NIfTI shape {arr.shape}")
    if check_finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise NonFiniteVoxelsError(nm, f"{n_bad} NaN or Inf voxel(s)")
    ras = img.affine.astype(np.float64)
    meta = {
        "format": "nifti",
        "modality": "unknown",
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        "dtype_stored": str(raw_dtype),
        "rescale_quantum": float(slope) if slope not in (None, 0) and raw_dtype.kind in "iub" else 0.0,
        "n_files": 1,
        "source_files": [str(path)],
    }
    return Volume(arr, LPS_TO_RAS @ ras, meta)


def write_nifti(vol: Volume, path: str | Path, *, nifti2: bool = False, dtype=None,
                descrip: str = "medgen") -> Path:
    """Write atomically (temp + fsync + rename). sform and qform both set to scanner space.

    ``descrip`` (at most 79 ASCII characters) goes to the header's description field, e.g. a
    synthetic-origin mark."""
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise WriteError(path.name, "NIfTI output must end in .nii or .nii.gz")
    arr = vol.array if dtype is None else vol.array.astype(dtype)
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(arr, vol.ras_affine)
    img.set_sform(vol.ras_affine, code=1)
    img.set_qform(vol.ras_affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    # gzip embeds a timestamp; nibabel writes mtime 0 via its own opener, so outputs are
    # byte-identical across runs (checked in tests).
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
