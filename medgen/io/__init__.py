"""Where volumes enter and leave medgen: readers and writers around the one :class:`Volume` type.

``read_volume(path)`` picks the reader by what the path is (a folder holding one DICOM series, a
DICOM file, a NIfTI file); ``write_volume(vol, path)`` picks the writer by the output name
(``*.nii``/``*.nii.gz`` -> NIfTI, anything else -> a DICOM series folder).
"""

from __future__ import annotations

from pathlib import Path

from medgen.io.volume import Volume, orientation_code

__all__ = ["Volume", "orientation_code", "read_volume", "write_volume", "is_nifti_path"]


def is_nifti_path(path: str | Path) -> bool:
    n = Path(path).name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def read_volume(path: str | Path, *, root: str | Path | None = None, allow_uneven: bool = False,
                allow_missing_geometry: bool = False) -> Volume:
    """Read a NIfTI file, a DICOM file or a folder holding one DICOM series."""
    path = Path(path)
    if path.is_file() and is_nifti_path(path):
        from medgen.io.nifti import read_nifti

        name = None
        if root is not None:
            try:
                name = path.relative_to(root).as_posix()
            except ValueError:
                name = None
        return read_nifti(path, name=name)
    from medgen.io.dicom_read import read_dicom

    return read_dicom(path, root=root, allow_uneven=allow_uneven,
                      allow_missing_geometry=allow_missing_geometry)


def write_volume(vol: Volume, path: str | Path, *, digest: str = "", derivation: str = "medgen",
                 **kwargs) -> dict:
    """Write NIfTI (by extension) or a DICOM series folder; return what was written."""
    path = Path(path)
    if is_nifti_path(path):
        from medgen.io.nifti import write_nifti

        write_nifti(vol, path, **kwargs)
        return {"format": "nifti", "path": str(path)}
    from medgen.io.dicom_write import write_dicom_series

    uids = write_dicom_series(vol, path, digest=digest, derivation=derivation, **kwargs)
    return {"format": "dicom", "path": str(path), **uids}
