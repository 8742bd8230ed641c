"""DICOM readers: classic single-frame series and enhanced multi-frame CT/MR -> :class:`Volume`.

Rules (each one guards against a mistake that silently ruins downstream models):

* files are grouped by SeriesInstanceUID; slices are ordered by ImagePositionPatient projected on
  the slice normal (row x column direction) - never by InstanceNumber or file name;
* RescaleSlope/Intercept are applied per slice (per frame for enhanced objects);
* a series with mixed orientations, sizes or pixel spacings, duplicate positions, sheared
  positions, missing slices or uneven spacing is refused with a typed one-line error that names the
  file and the measured numbers; ``allow_uneven=True`` resamples onto a regular grid instead;
* non-image SOP classes (RT plan/structure set, SR, waveforms, ...), truncated and non-DICOM files
  and NaN/Inf voxels are refused with their own error types.

Error messages name files by the path the caller gave (relative to an input root where the caller
passes one); they never quote header values.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.errors import (
    InconsistentSeriesError,
    NonFiniteVoxelsError,
    NotDicomError,
    ReadError,
    SliceSpacingError,
    UnsupportedSOPClassError,
)
from medgen.io.volume import Volume

log = logging.getLogger("medgen.io")

ORIENT_TOL = 1e-4  # direction cosine tolerance
# Spacing tolerance: the larger of 1 % of the nominal spacing and 0.01 mm (DS values are rounded).
REL_SPACING_TOL = 0.01
ABS_SPACING_TOL = 0.01


class MissingGeometryError(ReadError):
    """An image object without ImagePositionPatient/ImageOrientationPatient."""


def _name(path, root: str | Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return p.name


def is_image_sop(ds) -> bool:
    """True for SOP classes that carry an image (``... Image Storage``), or files with pixel data
    and no SOP class (old files without meta)."""
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if uid is None:  # old files without SOP class: an image if it has pixels (or their size)
        return any(k in ds for k in ("PixelData", "FloatPixelData", "Rows"))
    name = getattr(uid, "name", str(uid))
    return "Image Storage" in name and "Presentation" not in name


def sop_class_name(ds) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", str(uid)) if uid is not None else "unknown"


def dcmread(path, *, stop_before_pixels: bool = False, root=None):
    """pydicom.dcmread with medgen's typed errors (non-DICOM, truncated)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        # Old files without the 128-byte preamble + 'DICM' are still DICOM; try once more.
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
        except Exception:
            raise NotDicomError(_name(path, root), "not a DICOM file") from None
        if len(ds) == 0 or not any(k in ds for k in ("SOPClassUID", "PixelData", "Rows", "Modality")):
            raise NotDicomError(_name(path, root), "not a DICOM file") from None
        return ds
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        kind = type(exc).__name__
        raise NotDicomError(_name(path, root), f"truncated or unreadable DICOM ({kind})") from None


# --- geometry helpers ----------------------------------------------------------------------------

def _floats(seq) -> np.ndarray:
    return np.array([float(x) for x in seq], dtype=np.float64)


def _orientation(iop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = _floats(iop)
    row, col = v[:3], v[3:]
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


@dataclass
class _Slice:
    """One 2D frame: where it sits and how to get its voxels (in physical units)."""

    name: str
    position: np.ndarray
    slope: float
    intercept: float
    pixels: callable  # () -> 2D array (rows, cols) of stored values
    extra: dict = field(default_factory=dict)


def _check_spacing(names: Sequence[str], proj: np.ndarray, nominal: float | None, where: str,
                   allow_uneven: bool) -> tuple[float, bool]:
    """Return (spacing, resample_needed). Raise SliceSpacingError when uneven (unless allowed)."""
    if len(proj) < 2:
        return (nominal or 1.0), False
    d = np.diff(proj)
    if np.any(d < 1e-6):
        i = int(np.argmin(d))
        raise InconsistentSeriesError(
            names[i + 1], f"{int(np.sum(d < 1e-6)) + 1} slices share a position in {where} "
            "(several echoes, time points or stacks in one series)")
    step = float(np.median(d))
    tol = max(ABS_SPACING_TOL, REL_SPACING_TOL * step)
    bad = np.where(np.abs(d - step) > tol)[0]
    if bad.size == 0:
        return float(np.mean(d)), False  # mean: exact first-to-last extent
    i = int(bad[np.argmax(np.abs(d[bad] - step))])
    measured = float(d[i])
    missing = measured / step - 1
    hint = f" (about {round(missing)} missing slice(s))" if missing > 0.5 else ""
    if not allow_uneven:
        raise SliceSpacingError(
            names[i + 1],
            f"uneven slice spacing in {where}: expected {step:.4g} mm, measured gap {measured:.4g} mm "
            f"between sorted slices {i} and {i + 1}{hint}; pass allow_uneven/--allow-uneven to resample",
            expected=step, measured=measured)
    return step, True


def _order_and_check(slices: list[_Slice], normal: np.ndarray, nominal_dz: float | None,
                     where: str, allow_uneven: bool):
    """Sort slices along the normal and check the stack; return (slices, offsets, dz, resample)."""
    proj = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(proj, kind="stable")
    slices = [slices[i] for i in order]
    proj = proj[order]
    names = [s.name for s in slices]

    # Positions must lie on a line along the normal (no shear / gantry tilt).
    p0 = slices[0].position
    for s in slices[1:]:
        off = (s.position - p0) - ((s.position - p0) @ normal) * normal
        if np.linalg.norm(off) > max(0.01, 1e-3 * np.linalg.norm(s.position - p0)):
            raise InconsistentSeriesError(
                s.name, f"slice positions in {where} are not along the slice normal "
                f"(in-plane offset {np.linalg.norm(off):.3g} mm; gantry tilt or sheared stack)")

    dz, resample = _check_spacing(names, proj, nominal_dz, where, allow_uneven)
    return slices, proj, dz, resample


def _affine(row, col, normal, pixel_spacing, dz, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = row * pixel_spacing[1]  # i runs along the row: spacing between columns
    affine[:3, 1] = col * pixel_spacing[0]  # j runs down the column: spacing between rows
    affine[:3, 2] = normal * dz
    affine[:3, 3] = origin
    return affine


def _assemble(slices: list[_Slice], row: np.ndarray, col: np.ndarray, normal: np.ndarray,
              pixel_spacing: tuple[float, float], nominal_dz: float | None, where: str,
              allow_uneven: bool, meta: dict, pixels: bool = True) -> Volume:
    slices, proj, dz, resample = _order_and_check(slices, normal, nominal_dz, where, allow_uneven)
    names = [s.name for s in slices]
    if not pixels:  # geometry only (manifests): an empty array of the right shape
        n = int(np.floor((proj[-1] - proj[0]) / dz + 1e-6)) + 1 if resample else len(slices)
        meta["rescale_quantum"] = float(min(abs(s.slope) for s in slices))
        arr = np.empty((meta.pop("_cols"), meta.pop("_rows"), n), dtype=np.uint8)
        return Volume(arr, _affine(row, col, normal, pixel_spacing, dz, slices[0].position), meta)
    meta.pop("_rows", None)
    meta.pop("_cols", None)
    planes = []
    integral = True
    for s in slices:
        try:
            px = s.pixels()
        except ReadError:
            raise
        except Exception as exc:
            raise NotDicomError(s.name, f"pixel data cannot be decoded ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120]})") from None
        if px.ndim != 2:
            raise ReadError(s.name, f"unsupported pixel layout {px.shape} (colour or multi-sample)")
        if s.slope != 1.0 or s.intercept != round(s.intercept) or px.dtype.kind == "f":
            integral = False
        planes.append((px, s.slope, s.intercept))

    if integral:
        lo = min(int(p.min()) + int(icpt) for p, _, icpt in planes)
        hi = max(int(p.max()) + int(icpt) for p, _, icpt in planes)
        dtype = np.int16 if -32768 <= lo and hi <= 32767 else np.int32
    else:
        dtype = np.float32
    nrows, ncols = planes[0][0].shape
    arr = np.empty((ncols, nrows, len(planes)), dtype=dtype)
    for k, (px, slope, icpt) in enumerate(planes):
        if px.shape != (nrows, ncols):
            raise InconsistentSeriesError(slices[k].name, f"mixed image sizes in {where}")
        val = px.astype(np.float64) * slope + icpt if dtype == np.float32 else px.astype(np.int64) + int(icpt)
        arr[:, :, k] = val.T  # (rows, cols)[j, i] -> [i, j]
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise NonFiniteVoxelsError(names[0], f"NaN or Inf voxels in {where}")

    if resample:
        arr = _resample_along_k(arr, proj - proj[0], dz)
        meta["uneven_spacing_resampled"] = True
        meta["acquired_slice_offsets_mm"] = [round(float(x), 4) for x in proj - proj[0]]
        log.warning("%s: uneven slice spacing resampled onto a %.4g mm grid", where, dz)

    affine = _affine(row, col, normal, pixel_spacing, dz, slices[0].position)
    quanta = [abs(sl) for _, sl, _ in planes]
    meta["rescale_quantum"] = float(min(quanta)) if quanta else 1.0
    meta["slice_files"] = [s.name for s in slices]
    meta["slice_extra"] = [s.extra for s in slices]
    return Volume(arr, affine, meta)


def _resample_along_k(arr: np.ndarray, offsets: np.ndarray, dz: float) -> np.ndarray:
    """Linear interpolation of slices at irregular ``offsets`` onto a regular ``dz`` grid."""
    n = int(np.floor(offsets[-1] / dz + 1e-6)) + 1
    targets = np.arange(n) * dz
    idx = np.clip(np.searchsorted(offsets, targets, side="right") - 1, 0, len(offsets) - 2)
    t = ((targets - offsets[idx]) / (offsets[idx + 1] - offsets[idx]))
    a = arr[:, :, idx].astype(np.float32)
    b = arr[:, :, idx + 1].astype(np.float32)
    return (a * (1 - t) + b * t).astype(np.float32)


def _rescale(ds) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    icpt = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, icpt


def _series_meta(ds, n_files: int, multiframe: bool) -> dict:
    meta = {
        "format": "dicom",
        "modality": str(ds.get("Modality", "OT")),
        "sop_class": sop_class_name(ds),
        "n_files": n_files,
        "multiframe": multiframe,
        # identifying values: in memory only (needed to write a derived series into the same study)
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "bits_stored": int(ds.get("BitsStored", 16) or 16),
    }
    from pydicom.dataset import Dataset

    # A new Dataset over the same elements minus the bulk ones (Dataset.copy() is shallow and
    # would share - and lose - the source's pixel data).
    drop = {0x7FE00010, 0x7FE00008, 0x7FE00009, 0x52009230}
    meta["dicom_template"] = Dataset({t: e for t, e in ds.items() if int(t) not in drop})
    return meta


# --- classic single-frame series ---------------------------------------------------------------

def read_series_files(files: Sequence[str | Path], *, root=None, allow_uneven: bool = False,
                      headers: Sequence | None = None, pixels: bool = True) -> Volume:
    """Read one series given its files (all with the same SeriesInstanceUID).

    ``pixels=False`` checks and returns the geometry only (the array is an empty placeholder of
    the right shape); ``headers`` may then come from ``stop_before_pixels`` reads.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ReadError(None, "empty series")
    dss = list(headers) if headers is not None else [dcmread(f, root=root) for f in files]
    names = [_name(f, root) for f in files]
    where = f"series of {len(files)} file(s) starting at {names[0]}"
    for ds, nm in zip(dss, names):
        if not is_image_sop(ds):
            raise UnsupportedSOPClassError(nm, f"not an image ({sop_class_name(ds)})")
    if len(dss) == 1 and int(dss[0].get("NumberOfFrames", 1) or 1) > 1:
        return read_multiframe(files[0], ds=dss[0], root=root, allow_uneven=allow_uneven,
                               pixels=pixels)
    ref = dss[0]
    if "ImageOrientationPatient" not in ref or "ImagePositionPatient" not in ref:
        raise MissingGeometryError(names[0], "no ImagePositionPatient/ImageOrientationPatient "
                                   f"({sop_class_name(ref)}); cannot place it in space")
    row, col, normal = _orientation(ref.ImageOrientationPatient)
    size = (int(ref.Rows), int(ref.Columns))
    ps = tuple(_floats(ref.get("PixelSpacing", [1.0, 1.0])))
    slices = []
    for ds, nm in zip(dss, names):
        if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
            raise MissingGeometryError(nm, "no ImagePositionPatient/ImageOrientationPatient")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InconsistentSeriesError(nm, f"multi-frame file mixed into {where}")
        r2, c2, _ = _orientation(ds.ImageOrientationPatient)
        if np.abs(r2 - row).max() > ORIENT_TOL or np.abs(c2 - col).max() > ORIENT_TOL:
            n_orient = len({tuple(np.round(_floats(d.ImageOrientationPatient), 3)) for d in dss
                            if "ImageOrientationPatient" in d})
            raise InconsistentSeriesError(nm, f"mixed orientations in {where} ({n_orient} distinct)")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InconsistentSeriesError(nm, f"mixed image sizes in {where} "
                                          f"({ds.Rows}x{ds.Columns} vs {size[0]}x{size[1]})")
        ps2 = tuple(_floats(ds.get("PixelSpacing", [1.0, 1.0])))
        if max(abs(a - b) for a, b in zip(ps, ps2)) > 1e-4:
            raise InconsistentSeriesError(nm, f"mixed pixel spacings in {where}")
        slope, icpt = _rescale(ds)

        def _px(ds=ds):
            return ds.pixel_array

        slices.append(_Slice(nm, _floats(ds.ImagePositionPatient), slope, icpt, _px,
                             {"instance": int(ds.get("InstanceNumber", 0) or 0)}))
    nominal = ref.get("SpacingBetweenSlices") or ref.get("SliceThickness")
    meta = _series_meta(ref, len(files), multiframe=False)
    meta["source_files"] = [str(f) for f in files]
    meta["_rows"], meta["_cols"] = size
    return _assemble(slices, row, col, normal, ps, float(nominal) if nominal else None, where,
                     allow_uneven, meta, pixels=pixels)


# --- enhanced multi-frame ----------------------------------------------------------------------

def _fg(ds, frame_item, seq_kw: str):
    """A functional-group macro item: per-frame first, then shared."""
    for item in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        seq = item.get(seq_kw) if item is not None else None
        if seq:
            return seq[0]
    return None


def read_multiframe(path, *, ds=None, root=None, allow_uneven: bool = False,
                    allow_missing_geometry: bool = False, pixels: bool = True) -> Volume:
    """Enhanced (or legacy-converted) multi-frame CT/MR with per-frame functional groups."""
    nm = _name(path, root)
    if ds is None or (pixels and "PixelData" not in ds):
        ds = dcmread(path, root=root, stop_before_pixels=not pixels)
    if not is_image_sop(ds):
        raise UnsupportedSOPClassError(nm, f"not an image ({sop_class_name(ds)})")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    cache: dict = {}

    def frames():
        if "all" not in cache:
            try:
                arr = ds.pixel_array
            except Exception as exc:
                raise NotDicomError(nm, f"pixel data cannot be decoded ({type(exc).__name__})") from None
            cache["all"] = arr.reshape((n,) + arr.shape[-2:]) if arr.ndim >= 2 else arr
        return cache["all"]

    items = list(per_frame) if per_frame is not None else [None] * n
    if len(items) != n:
        raise InconsistentSeriesError(nm, f"{len(items)} per-frame items for {n} frames")
    ori0 = _fg(ds, items[0], "PlaneOrientationSequence")
    pos_ok = all(_fg(ds, it, "PlanePositionSequence") is not None for it in items)
    if ori0 is None or not pos_ok:
        if not allow_missing_geometry:
            raise MissingGeometryError(nm, "multi-frame object without plane position/orientation "
                                       "functional groups; pass allow_missing_geometry to read it "
                                       "on a unit grid")
        arr = (frames().astype(np.float32).transpose(2, 1, 0) if pixels
               else np.empty((int(ds.Columns), int(ds.Rows), n), dtype=np.uint8))
        meta = _series_meta(ds, 1, multiframe=True)
        meta["geometry"] = "missing (unit grid)"
        return Volume(arr, np.eye(4), meta)
    row, col, normal = _orientation(ori0.ImageOrientationPatient)
    pm = _fg(ds, items[0], "PixelMeasuresSequence")
    ps = tuple(_floats(pm.PixelSpacing)) if pm is not None and "PixelSpacing" in pm else (1.0, 1.0)
    slices = []
    for f, it in enumerate(items):
        o = _fg(ds, it, "PlaneOrientationSequence")
        r2, c2, _ = _orientation(o.ImageOrientationPatient)
        if np.abs(r2 - row).max() > ORIENT_TOL or np.abs(c2 - col).max() > ORIENT_TOL:
            raise InconsistentSeriesError(nm, f"mixed orientations across frames (frame {f + 1})")
        p = _fg(ds, it, "PlanePositionSequence")
        pvt = _fg(ds, it, "PixelValueTransformationSequence")
        slope, icpt = _rescale(pvt) if pvt is not None else _rescale(ds)
        slices.append(_Slice(f"{nm}[frame {f + 1}]", _floats(p.ImagePositionPatient), slope, icpt,
                             lambda f=f: frames()[f], {"frame": f + 1}))
    nominal = pm.get("SpacingBetweenSlices") or pm.get("SliceThickness") if pm is not None else None
    meta = _series_meta(ds, 1, multiframe=True)
    meta["source_files"] = [str(path)]
    meta["_rows"], meta["_cols"] = int(ds.Rows), int(ds.Columns)
    return _assemble(slices, row, col, normal, ps, float(nominal) if nominal else None,
                     f"multi-frame {nm}", allow_uneven, meta, pixels=pixels)


# --- folders ------------------------------------------------------------------------------------

@dataclass
class SeriesGroup:
    """Files of one series found in a folder (headers only; pixels not read)."""

    series_uid: str  # original UID: in memory only, never logged
    files: list[Path]
    headers: list
    modality: str
    sop_class: str


@dataclass
class ScanResult:
    series: list[SeriesGroup]
    rejects: list[tuple[str, str]]  # (file name relative to root, one-line reason)


def iter_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                out.append(Path(dirpath) / f)
    return out


def looks_like_nifti(path: Path) -> bool:
    n = path.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def scan_dicom(paths: Iterable[str | Path], *, root=None) -> ScanResult:
    """Read headers (no pixels) and group by SeriesInstanceUID; non-image objects are rejected."""
    groups: dict[str, list] = defaultdict(list)
    rejects = []
    for p in paths:
        p = Path(p)
        nm = _name(p, root)
        if p.name.upper() == "DICOMDIR":
            continue
        try:
            ds = dcmread(p, stop_before_pixels=True, root=root)
        except NotDicomError as exc:
            rejects.append((nm, exc.reason))
            continue
        if not is_image_sop(ds):
            rejects.append((nm, f"not an image ({sop_class_name(ds)})"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"__no_series_uid__/{p.parent}"
        groups[uid].append((p, ds))
    series = []
    for uid, items in groups.items():
        items.sort(key=lambda t: str(t[0]))
        ds0 = items[0][1]
        series.append(SeriesGroup(uid, [p for p, _ in items], [d for _, d in items],
                                  str(ds0.get("Modality", "OT")), sop_class_name(ds0)))
    series.sort(key=lambda g: str(g.files[0]))
    return ScanResult(series, rejects)


def read_dicom(path: str | Path, *, root=None, allow_uneven: bool = False,
               allow_missing_geometry: bool = False) -> Volume:
    """Read a DICOM file (multi-frame or a one-slice series) or a folder holding ONE series."""
    path = Path(path)
    if path.is_file():
        ds = dcmread(path, root=root)
        if not is_image_sop(ds):
            raise UnsupportedSOPClassError(_name(path, root), f"not an image ({sop_class_name(ds)})")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return read_multiframe(path, ds=ds, root=root, allow_uneven=allow_uneven,
                                   allow_missing_geometry=allow_missing_geometry)
        return read_series_files([path], root=root, headers=[ds])
    scan = scan_dicom(iter_files(path), root=root if root is not None else path)
    if not scan.series:
        reason = scan.rejects[0][1] if scan.rejects else "no DICOM files"
        first = scan.rejects[0][0] if scan.rejects else _name(path, root)
        cls = UnsupportedSOPClassError if "not an image" in reason else ReadError
        raise cls(first, f"no image series found ({reason})")
    if len(scan.series) > 1:
        raise InconsistentSeriesError(_name(path, root), f"folder holds {len(scan.series)} series; "
                                      "read them one by one (scan_dicom) or build a manifest")
    g = scan.series[0]
    return read_series_files(g.files, root=root if root is not None else path,
                             allow_uneven=allow_uneven)
