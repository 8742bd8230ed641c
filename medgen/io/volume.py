"""The one in-memory volume type.

Convention (the only one in medgen)
-----------------------------------
* ``array`` has shape ``(I, J, K)`` (or ``(I, J, K, C)`` for multi-channel/colour data), indexed
  ``array[i, j, k]``: ``i`` runs along a DICOM row (the column index, +x of the image plane),
  ``j`` down the columns (the row index), ``k`` across slices. This is the index order of NIfTI and
  of ITK/SimpleITK *indices* (SimpleITK's ``GetArrayFromImage`` returns the transpose, ``[k, j, i]``).
* ``affine`` is a 4x4 matrix mapping ``(i, j, k, 1)`` to **LPS** patient coordinates in millimetres
  (DICOM's and ITK's world space): ``world = affine @ [i, j, k, 1]``. Its 3x3 block is
  ``direction @ diag(spacing)``; columns of ``direction`` are unit vectors; ``origin`` is the world
  position of voxel (0, 0, 0)'s centre (= ImagePositionPatient of the first slice).
* NIfTI files store RAS; readers and writers flip the first two world axes at the file boundary.
  MONAI's ``MetaTensor`` also uses RAS by default; :meth:`Volume.to_metatensor` converts.
* Voxel values are in physical units after RescaleSlope/Intercept (HU for CT); ``float32`` unless
  the stored values were integers and the rescale is the identity.

``meta`` carries source metadata (format, modality, series identity, rescale quantum, ...). It may
hold identifying values in memory (they are needed to write a derived DICOM series into the same
study) - code that logs or records anything must go through the PHI-safe summary
:meth:`Volume.describe`, never dump ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError("affine must be 4x4")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be 3D (I,J,K) or 4D (I,J,K,C), got {self.array.shape}")

    # --- geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        return self.affine[:3, 3].copy()

    @property
    def ras_affine(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine

    @staticmethod
    def make_affine(spacing, direction=None, origin=None) -> np.ndarray:
        spacing = np.asarray(spacing, dtype=np.float64)
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
        aff = np.eye(4)
        aff[:3, :3] = direction @ np.diag(spacing)
        aff[:3, 3] = origin
        return aff

    def world(self, ijk) -> np.ndarray:
        """World (LPS, mm) coordinates of voxel indices ``ijk`` (shape (..., 3))."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def with_array(self, array: np.ndarray, **meta_updates) -> Volume:
        """Same geometry and metadata, new voxels (e.g. a model's output)."""
        meta = dict(self.meta)
        meta.update(meta_updates)
        return Volume(array, self.affine.copy(), meta)

    # --- conversions --------------------------------------------------------------------------
    def to_sitk(self):
        import SimpleITK as sitk

        arr = self.array
        if arr.ndim == 3:
            img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        else:
            img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0, 3)),
                                         isVector=True)
        img.SetSpacing([float(s) for s in self.spacing])
        img.SetOrigin([float(o) for o in self.origin])
        img.SetDirection([float(d) for d in self.direction.flatten()])
        return img

    @classmethod
    def from_sitk(cls, img, meta: dict | None = None) -> Volume:
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(img)
        arr = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.transpose(2, 1, 0, 3)
        direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
        aff = cls.make_affine(img.GetSpacing(), direction, img.GetOrigin())
        return cls(arr, aff, dict(meta or {}))

    def to_metatensor(self):
        """Channel-first MONAI MetaTensor ``(C, I, J, K)`` with a RAS affine (MONAI's default)."""
        import torch
        from monai.data import MetaTensor

        arr = self.array[None] if self.array.ndim == 3 else np.moveaxis(self.array, -1, 0)
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)),
                          affine=torch.as_tensor(self.ras_affine),
                          meta={"space": "RAS", "medgen_describe": self.describe()})

    @classmethod
    def from_metatensor(cls, t, meta: dict | None = None) -> Volume:
        arr = t.detach().cpu().numpy()
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        ras = np.asarray(t.affine.detach().cpu().numpy(), dtype=np.float64)
        return cls(arr, LPS_TO_RAS @ ras, dict(meta or {}))

    # --- PHI-safe summary ---------------------------------------------------------------------
    SAFE_META_KEYS = ("format", "modality", "sop_class", "n_files", "rescale_quantum",
                      "multiframe", "uneven_spacing_resampled", "dtype_stored")

    def describe(self) -> dict[str, Any]:
        """What may be logged or recorded: geometry and non-identifying source facts only."""
        d = {
            "shape": list(self.shape),
            "spacing": [round(float(s), 6) for s in self.spacing],
            "orientation": orientation_code(self.direction),
            "dtype": str(self.array.dtype),
        }
        for k in self.SAFE_META_KEYS:
            if k in self.meta:
                d[k] = self.meta[k]
        return d


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code of the LPS axis each index axis points to most (e.g. 'LPS', 'LSA')."""
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    out = []
    for col in np.asarray(direction).T:
        ax = int(np.argmax(np.abs(col)))
        out.append(letters[ax][0] if col[ax] > 0 else letters[ax][1])
    return "".join(out)
