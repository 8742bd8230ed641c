"""One DICOM file in, one de-identified file out (or a quarantine reason).

Order of work for one file: read its bytes once (their sha256 is the audit's ``in_sha256``),
parse them and check that the file is whole (:mod:`medgen.deid.integrity`), let the verifier
extract the original's identifying values, clean the pixels of an at-risk instance
(:mod:`medgen.deid.pixels`), clean the header (:mod:`medgen.deid.dicom`), serialise once, scan
those exact bytes with the independent verifier, and stage them (no per-file fsync: the batch
syncs every staged file once before any is renamed into place, see :mod:`medgen.deid.run`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgen.deid import table as T
from medgen.deid.dicom import (
    IMPLEMENTATION_UID,
    TEXT_CLEANING_OPTIONS,
    Context,
    clean_dataset,
    collect_identifiers,
    map_uid,
    mark_deidentified,
)
from medgen.deid.engine import Quarantine, safe_reason
from medgen.keys import Key

DICOMDIR_SOP = "1.2.840.10008.1.3.10"
DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".ima", ".dc3", ".bin"}
NAME_KEYWORDS = ["PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber",
                 "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                 "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                 "IssuerOfPatientID", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
                 "SOPInstanceUID"]


@dataclass(frozen=True)
class PixelPolicy:
    """How burned-in text is handled: rule file, OCR on/off, blank words OCR is unsure about."""

    rules: Any = None
    ocr: bool = True
    blank_unsure: bool = False


def _parse(data: bytes, suffix: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        if suffix.lower() not in DICOM_SUFFIXES:
            raise Quarantine("unsupported file type (not DICOM, NIfTI or JSON)") from None
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:
            raise Quarantine("not a DICOM file") from None
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise Quarantine("not a DICOM file (no SOP Class UID, no pixel data)") from None
        return ds


def read_dicom(src: Path, data: bytes | None = None):
    """Parse a DICOM file and check that it is whole; raise Quarantine with a one-line reason."""
    from medgen.deid import integrity

    data = src.read_bytes() if data is None else data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = _parse(data, src.suffix)
        except Quarantine:
            raise
        except (OSError, EOFError, ValueError, struct_error()) as exc:
            msg = integrity.eof_warning([str(exc)])
            raise Quarantine(msg or f"corrupt DICOM header ({type(exc).__name__})") from None
    why = integrity.eof_warning([str(w.message) for w in caught]) \
        or integrity.check_extent(ds, len(data)) or integrity.check_pixels(ds)
    if why:
        raise Quarantine(why)
    return ds


def struct_error():
    import struct

    return struct.error


@functools.cache
def _name_tags() -> tuple[int, ...]:
    from pydicom.datadict import tag_for_keyword

    return tuple(tag_for_keyword(k) for k in NAME_KEYWORDS)


def name_values(ds) -> list[str]:
    """Top-level values that may also appear in file or folder names (never logged)."""
    vals: list[str] = []
    for tag in _name_tags():
        if tag not in ds:
            continue
        try:
            v = ds[tag].value
        except Exception:
            continue
        if v not in (None, ""):
            vals.extend(str(x) for x in (v if isinstance(v, list | tuple) else [v]))
    return vals


def deidentify_dicom(src: Path, dst: Path, key: Key, options: tuple[str, ...],
                     policy: PixelPolicy | None = None, verify: bool = True) -> dict[str, Any]:
    """De-identify one DICOM file to ``dst``; return the audit record (raises Quarantine)."""
    data = src.read_bytes()
    in_sha = hashlib.sha256(data).hexdigest()
    try:
        ds = read_dicom(src, data)
    except Quarantine as q:
        q.in_sha256 = in_sha
        raise
    del data
    names = name_values(ds)
    modality = str(ds.get("Modality", "") or "").strip().upper()[:16] or "?"
    try:
        rec = _deidentify_ds(ds, dst, key, options, policy or PixelPolicy(), verify)
    except Quarantine as q:
        q.names, q.modality, q.in_sha256 = names, modality, in_sha
        raise
    rec.update(names=names, modality=modality, in_sha256=in_sha)
    return rec


def _transfer_syntax(ds) -> str:
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return str(ts)
    enc = getattr(ds, "original_encoding", None) or (ds.is_implicit_VR, ds.is_little_endian)
    implicit, little = enc
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def pixel_step(ds, policy: PixelPolicy) -> tuple[tuple, dict | None]:
    """Clean burned-in text of an at-risk instance: (extra method codes, audit record)."""
    from medgen.deid import burned_in, pixels

    if pixels.is_encapsulated_document(ds):
        raise Quarantine("encapsulated document (PDF/CDA): its text is not cleaned by medgen")
    pixels.clear_overlay_bits(ds)
    risk = pixels.burned_in_risk(ds)
    if not risk:
        return (), None
    rule = pixels.match_rule(ds, policy.rules)
    if not policy.ocr and rule is None:
        raise Quarantine(f"burned-in annotation risk: {risk}; OCR off and no pixel rule matches")
    try:
        out = pixels.clean_pixels(ds, rule, pixels.text_zones(ds, policy.rules),
                                  burned_in.header_terms(ds), policy.ocr, policy.blank_unsure)
    except pixels.PixelQuarantine as exc:
        raise Quarantine(f"burned-in annotation risk: {risk}; {exc}") from None
    return (pixels.CLEAN_PIXEL_CODE,), out.record()


def _file_meta(ds, sop: str, ts: str, key: Key, old_meta):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    from medgen import __version__

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop)
    inst = str(ds.get("SOPInstanceUID", "") or "")
    if not inst and old_meta is not None and old_meta.get("MediaStorageSOPInstanceUID"):
        inst = map_uid(key, str(old_meta.MediaStorageSOPInstanceUID))
    if not inst:
        raise Quarantine("no SOP Instance UID")
    fm.MediaStorageSOPInstanceUID = UID(inst)
    fm.TransferSyntaxUID = UID(ts)
    fm.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    fm.ImplementationVersionName = ("MEDGEN_" + __version__.replace(".", "_"))[:16]
    return fm


def _deidentify_ds(ds, dst: Path, key: Key, options: tuple[str, ...], policy: PixelPolicy,
                   verify: bool) -> dict[str, Any]:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    from medgen.deid import verifier as V
    from medgen.deid.engine import stage_bytes

    # the verifier extracts the original's identifying values itself, before anything changes
    ids = V.identifiers_from_dataset(ds, options) if verify else None
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "")
                                             if meta is not None else ""))
    if sop == DICOMDIR_SOP:
        raise Quarantine("DICOMDIR media directory: regenerate it from the de-identified files")
    if "SOPClassUID" not in ds:
        raise Quarantine("no SOP Class UID: not a composite instance")
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(_transfer_syntax(ds))
    extra, pix = pixel_step(ds, policy)
    ts = str(ds.file_meta.TransferSyntaxUID)
    idents = collect_identifiers(ds) if TEXT_CLEANING_OPTIONS & set(options) else frozenset()
    ctx = Context(key, options, T.iod_family(sop), str(ds.get("PatientID", "") or ""), idents)
    clean_dataset(ds, ctx)
    mark_deidentified(ds, ctx, extra)
    if pix is not None:
        ds.DeidentificationMethod = list(ds.DeidentificationMethod) + [
            f"pixels: {pix['engine'] or 'rule'} {pix['blanked']} blanked"[:64]]
    ds.file_meta = _file_meta(ds, sop, ts, key, meta)
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception as exc:
        raise Quarantine(f"cannot write the de-identified instance: {safe_reason(exc)}") from None
    data = buf.getvalue()
    if verify:  # the exact bytes that will be written, parsed back by the independent verifier
        findings = V.scan_dicom(data, options, ids)
        if findings:
            raise Quarantine(f"verifier: {len(findings)} finding(s), first: {findings[0]}")
    stage_bytes(dst, data)
    rec = {"kind": "dicom", "out_sha256": hashlib.sha256(data).hexdigest(),
           "actions": dict(sorted(ctx.actions.items()))}
    if pix is not None:
        rec["pixels"] = pix
    return rec
