"""Write a :class:`Volume` as a DICOM series.

Two cases:

* **Derived series** (the volume was read from DICOM and ``meta['dicom_template']`` holds the source
  header): same Patient and Study (StudyInstanceUID and FrameOfReferenceUID kept, so the series
  lands next to its source in a PACS and overlays it), a new SeriesInstanceUID and SOPInstanceUIDs
  derived deterministically from (source series UID, model/config digest) - a re-run never
  duplicates a series - ImageType ``DERIVED\\SECONDARY``, a DerivationDescription.
* **Secondary series without a DICOM source** (NIfTI input, synthetic volumes): a clearly synthetic
  identity (PatientName ``SYNTHETIC^MEDGEN``, IDs and UIDs derived from the digest).

Geometry: ImageOrientationPatient from the affine's first two direction columns, PixelSpacing
``[row spacing (j), column spacing (i)]``, ImagePositionPatient of every slice from the affine,
SliceThickness/SpacingBetweenSlices from the k spacing. Voxels are stored as signed 16-bit with a
RescaleSlope/Intercept chosen so the value range fits; integer data that already fits is stored
losslessly (slope 1, intercept 0). Files carry no timestamps, so re-running gives identical bytes.
The whole folder is written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medgen import __version__
from medgen.errors import WriteError
from medgen.io.volume import Volume
from medgen.utils.atomic import atomic_dir

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"

# Patient/Study/Equipment attributes copied from the source into a derived series. Anything else
# (acquisition details, enhanced functional groups, private tags) is left behind: a derived
# classic single-frame series must not carry attributes that describe a different object.
_COPY_FROM_SOURCE = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "Modality", "BodyPartExamined",
    "PatientPosition", "FrameOfReferenceUID", "PositionReferenceIndicator", "Laterality",
    # MR image module (Type 1/2) and CT image module (Type 2)
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
    "EchoTime", "EchoTrainLength", "MagneticFieldStrength", "KVP", "ConvolutionKernel",
)


def derive_uid(*parts: str) -> str:
    """Deterministic ``2.25.<int>`` UID (PS3.5 B.2: a 128-bit integer) from its parts.

    Written here because pydicom's ``generate_uid(prefix=None)`` ignores ``entropy_srcs`` and
    returns a random UUID-based UID; we need the same parts to give the same UID on every run.
    """
    import hashlib

    h = hashlib.sha256("\x00".join(["medgen", *[str(p) for p in parts]]).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def choose_rescale(arr: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(slope, intercept, stored int16 array) so that ``stored * slope + intercept ~= arr``.

    Integer-valued data inside int16 is stored exactly; otherwise the range [min, max] is spread
    over the full int16 range and the error is at most slope / 2 (the rescale quantum).
    """
    a = np.asarray(arr)
    lo, hi = float(np.min(a)), float(np.max(a))
    if a.dtype.kind in "iub" or np.all(np.equal(np.mod(a, 1), 0)):
        if lo >= -32768 and hi <= 32767:
            return 1.0, 0.0, a.astype(np.int16)
    if hi == lo:
        return 1.0, lo, np.zeros(a.shape, dtype=np.int16)
    slope = (hi - lo) / 65534.0
    # DS values hold at most 16 characters: round slope/intercept to what will be stored, then
    # quantise against the rounded values so the decode uses exactly the numbers in the file.
    slope = float(_ds(slope))
    intercept = float(_ds(lo + 32767.0 * slope))
    stored = np.clip(np.rint((a.astype(np.float64) - intercept) / slope), -32768, 32767)
    return slope, intercept, stored.astype(np.int16)


def _ds(x: float) -> str:
    """Format a float for a DS element (<= 16 chars) with as many significant digits as fit."""
    for digits in range(15, 5, -1):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.6g}"


def _sop_class_for(modality: str, synthetic: bool) -> str:
    if modality == "CT":
        return CT_IMAGE
    if modality == "MR":
        return MR_IMAGE
    return SC_IMAGE


def write_dicom_series(vol: Volume, out_dir: str | Path, *, digest: str,
                       derivation: str = "processed by medgen",
                       series_description: str | None = None, series_number: int = 9000,
                       synthetic: bool | None = None) -> dict:
    """Write ``vol`` as a folder of single-frame DICOM files; return the UIDs written.

    ``digest`` identifies what made the volume (model weights + config sha256); together with the
    source series UID it determines every new UID, so re-runs are idempotent in a PACS.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if vol.array.ndim != 3:
        raise WriteError(Path(out_dir).name, "DICOM writer takes scalar 3D volumes only")
    direction = vol.direction
    row, col, kdir = direction[:, 0], direction[:, 1], direction[:, 2]
    if abs(row @ col) > 1e-4:
        raise WriteError(Path(out_dir).name, "in-plane axes are not orthogonal; DICOM cannot store this")
    normal = np.cross(row, col)
    if abs(abs(normal @ kdir) - 1) > 1e-4:
        raise WriteError(Path(out_dir).name, "slice axis is not perpendicular to the image plane "
                         "(sheared grid); resample before writing DICOM")

    tmpl = vol.meta.get("dicom_template")
    if synthetic is None:
        synthetic = tmpl is None or bool(vol.meta.get("synthetic"))
    modality = str(vol.meta.get("modality") or (tmpl.get("Modality") if tmpl is not None else "OT"))
    if modality not in ("CT", "MR"):
        modality = modality if re.fullmatch(r"[A-Z]{2,4}", modality or "") else "OT"
    source_series = vol.meta.get("series_uid") or ""
    series_uid = derive_uid("series", source_series, digest)
    sop_class = _sop_class_for(modality, synthetic)
    slope, intercept, stored = choose_rescale(vol.array)
    spacing = vol.spacing

    base = Dataset()
    # meta["synthetic_keep_study"]: a synthetic image *of this patient* (e.g. a synthetic CT from
    # their MR) stays in the source's study and frame of reference, still marked synthetic
    keep_study = tmpl is not None and (not synthetic or bool(vol.meta.get("synthetic_keep_study")))
    if keep_study:
        for kw in _COPY_FROM_SOURCE:
            if kw in tmpl:
                base.add(tmpl[kw])
    else:
        base.SpecificCharacterSet = "ISO_IR 100"
        base.PatientName = "SYNTHETIC^MEDGEN"
        base.PatientID = "SYNTH-" + digest[:12]
        base.PatientBirthDate = ""
        base.PatientSex = ""
        base.StudyInstanceUID = derive_uid("study", source_series, digest)
        base.StudyDate = ""
        base.StudyTime = ""
        base.StudyID = ""
        base.AccessionNumber = ""
        base.ReferringPhysicianName = ""
        base.FrameOfReferenceUID = derive_uid("frame-of-reference", source_series, digest)
        base.PositionReferenceIndicator = ""
        base.StudyDescription = "SYNTHETIC - generated by medgen"
        base.PatientIdentityRemoved = "YES"
    base.Modality = modality
    if "FrameOfReferenceUID" not in base:
        base.FrameOfReferenceUID = derive_uid("frame-of-reference", source_series, digest)
        base.PositionReferenceIndicator = ""
    if modality == "MR":
        base.ScanningSequence = base.get("ScanningSequence") or "RM"
        base.SequenceVariant = base.get("SequenceVariant") or "NONE"
        for kw in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"):
            if kw not in base:
                setattr(base, kw, "")
    if modality == "CT" and "KVP" not in base:
        base.KVP = ""
    if sop_class == SC_IMAGE:
        base.ConversionType = "WSD"
    base.SeriesInstanceUID = series_uid
    base.SeriesNumber = series_number
    base.SeriesDescription = series_description or ("SYNTHETIC " if synthetic else "") + derivation[:54 if synthetic else 56]  # LO: 64
    base.Manufacturer = "medgen"
    base.SoftwareVersions = __version__
    base.ImageType = ["DERIVED", "SECONDARY"] + (["SYNTHETIC"] if synthetic else [])
    base.DerivationDescription = derivation[:1024]
    if synthetic:
        base.ImageComments = "SYNTHETIC: generated by medgen; not an acquired image"
    base.BurnedInAnnotation = "NO"
    base.ImageOrientationPatient = [_ds(float(v)) for v in np.concatenate([row, col])]
    base.PixelSpacing = [_ds(float(spacing[1])), _ds(float(spacing[0]))]
    base.SliceThickness = _ds(float(spacing[2]))
    base.SpacingBetweenSlices = _ds(float(spacing[2]))
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows = int(vol.shape[1])
    base.Columns = int(vol.shape[0])
    base.BitsAllocated = 16
    base.BitsStored = 16
    base.HighBit = 15
    base.PixelRepresentation = 1
    base.RescaleSlope = _ds(slope)
    base.RescaleIntercept = _ds(intercept)
    if modality == "CT":
        base.RescaleType = "HU"

    uids = {"series_instance_uid": series_uid, "sop_instance_uids": []}
    out_dir = Path(out_dir)
    n = vol.shape[2]
    with atomic_dir(out_dir) as tmp:
        for k in range(n):
            ds = Dataset()
            ds.update(base)
            sop_uid = derive_uid("instance", series_uid, str(k))
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            pos = vol.world([0.0, 0.0, float(k)])
            ds.ImagePositionPatient = [_ds(float(v)) for v in pos]
            ds.SliceLocation = _ds(float(pos @ normal))
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = f"MEDGEN_{__version__}"[:16]
            ds.file_meta = meta
            ds.preamble = b"\x00" * 128
            pydicom.dcmwrite(tmp / f"IM{k + 1:05d}.dcm", ds, enforce_file_format=True)
            uids["sop_instance_uids"].append(sop_uid)
    uids["rescale_slope"] = slope
    uids["rescale_intercept"] = intercept
    return uids
