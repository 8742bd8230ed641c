"""One file in, one de-identified file out (or a quarantine reason): DICOM, NIfTI, JSON sidecars.

Every function here returns a record for the audit log; none logs or raises a value taken from the
data. Outputs are written atomically and, unless ``verify=False``, scanned by the independent
verifier (:mod:`medgen.deid.verify`) before they are renamed into place; an output with findings is
discarded and the input quarantined.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from medgen.deid import table as T
from medgen.deid.dicom import (
    IMPLEMENTATION_UID,
    TEXT_CLEANING_OPTIONS,
    Context,
    clean_dataset,
    clean_text,
    collect_identifiers,
    date_shift_days,
    map_uid,
    mark_deidentified,
    pseudonym,
    shift_da,
)
from medgen.keys import Key
from medgen.utils.atomic import TMP_PREFIX, atomic_path
from medgen.utils.hashing import sha256_file

DICOMDIR_SOP = "1.2.840.10008.1.3.10"
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")
DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".ima", ".dc3", ".bin"}


@contextlib.contextmanager
def fast_atomic_path(final: Path):
    """Temp file beside ``final``, renamed into place on success, removed on failure.

    The content is fsync'd before the rename (medgen's rule for every output: temp, fsync,
    rename), so a renamed file is never a torn or empty one after a crash; the per-directory
    fsync of :func:`medgen.utils.atomic.atomic_path` is replaced by one ``os.sync()`` at the end
    of the batch (the renames of the staged files happen there anyway).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{''.join(final.suffixes)}"
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class Quarantine(Exception):
    """The input gets no output; ``str(exc)`` is a one-line reason without any data value."""

    names: list[str] = []  # values for file-name mapping, when the file could be read


def safe_reason(exc: BaseException) -> str:
    """A one-line reason from an exception with quoted text and long numbers blanked out."""
    if isinstance(exc, Quarantine):
        return str(exc)
    msg = " ".join(str(exc).split())
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\d{4,}", "#", msg)
    return f"{type(exc).__name__}: {msg}"[:160]


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".hdr") and path.with_suffix(".img").exists():
        return "nifti-pair"
    if name.endswith(".img") and path.with_suffix(".hdr").exists():
        return "nifti-pair-data"  # travels with its .hdr
    if name.endswith(".json"):
        return "json"
    return "dicom"


# ----------------------------------------------------------------------------------- DICOM


def read_dicom(src: Path, **kw):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(src, **kw)
    except InvalidDicomError:
        if src.suffix.lower() not in DICOM_SUFFIXES:
            raise Quarantine("unsupported file type (not DICOM, NIfTI or JSON)") from None
        try:
            ds = pydicom.dcmread(src, force=True, **kw)
        except Exception:
            raise Quarantine("not a DICOM file") from None
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise Quarantine("not a DICOM file (no SOP Class UID, no pixel data)") from None
        return ds


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


def deidentify_dicom(src: Path, dst: Path, key: Key, options: tuple[str, ...],
                     pixel_rules=None, verify: bool = True) -> dict[str, Any]:
    """De-identify one DICOM file to ``dst``; return the audit record (raises Quarantine)."""
    ds = read_dicom(src)
    names = name_values(ds)
    try:
        rec = _deidentify_ds(ds, src, dst, key, options, pixel_rules, verify)
    except Quarantine as q:
        q.names = names
        raise
    rec["names"] = names
    return rec


NAME_KEYWORDS = ["PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber",
                 "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                 "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                 "IssuerOfPatientID", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
                 "SOPInstanceUID"]


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


def _deidentify_ds(ds, src: Path, dst: Path, key: Key, options: tuple[str, ...], pixel_rules,
                   verify: bool) -> dict[str, Any]:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    from medgen.deid import pixels
    from medgen.deid import verifier as V

    # the verifier extracts the original's identifying values itself, before anything changes
    ids = V.identifiers_from_dataset(ds, options) if verify else None
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "")
                                             if meta is not None else ""))
    if sop == DICOMDIR_SOP:
        raise Quarantine("DICOMDIR media directory: regenerate it from the de-identified files")
    if "SOPClassUID" not in ds:
        raise Quarantine("no SOP Class UID: not a composite instance")
    ts = _transfer_syntax(ds)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(ts)
    extra = ()
    risk = pixels.burned_in_risk(ds)
    if risk:
        rule = pixels.match_rule(ds, pixel_rules) if pixel_rules is not None else None
        if rule is None:
            raise Quarantine(f"burned-in annotation risk: {risk}; no pixel rule matches")
        try:
            pixels.blank_rectangles(ds, rule)
        except Exception as exc:
            raise Quarantine(f"pixel rule {rule.name!s} could not be applied: "
                             f"{type(exc).__name__}") from None
        ts = str(ds.file_meta.TransferSyntaxUID)
        extra = (pixels.CLEAN_PIXEL_CODE,)
    idents = collect_identifiers(ds) if TEXT_CLEANING_OPTIONS & set(options) else frozenset()
    ctx = Context(key, options, T.iod_family(sop), str(ds.get("PatientID", "") or ""), idents)
    clean_dataset(ds, ctx)
    mark_deidentified(ds, ctx, extra)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop)
    inst = str(ds.get("SOPInstanceUID", "") or "")
    if not inst and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        inst = map_uid(key, str(meta.MediaStorageSOPInstanceUID))
    if not inst:
        raise Quarantine("no SOP Instance UID")
    fm.MediaStorageSOPInstanceUID = UID(inst)
    fm.TransferSyntaxUID = UID(ts)
    fm.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    from medgen import __version__

    fm.ImplementationVersionName = ("MEDGEN_" + __version__.replace(".", "_"))[:16]
    ds.file_meta = fm
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
    out_sha = hashlib.sha256(data).hexdigest()
    with fast_atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    return {"kind": "dicom", "out_sha256": out_sha,
            "actions": dict(sorted(ctx.actions.items()))}


# ----------------------------------------------------------------------------------- NIfTI


def _nifti_header_class(first: bytes):
    import struct

    from nibabel.analyze import AnalyzeHeader
    from nibabel.nifti1 import Nifti1Header, Nifti1PairHeader
    from nibabel.nifti2 import Nifti2Header, Nifti2PairHeader

    size_le = struct.unpack("<i", first[:4])[0]
    size_be = struct.unpack(">i", first[:4])[0]
    size = size_le if size_le in (348, 540) else size_be
    if size == 540:
        return (Nifti2Header if first[4:8] == b"n+2\x00" else Nifti2PairHeader), 540
    if size != 348:
        raise Quarantine("not a NIfTI/Analyze header")
    magic = first[344:348]
    if magic == b"n+1\x00":
        return Nifti1Header, 348
    if magic == b"ni1\x00":
        return Nifti1PairHeader, 348
    return AnalyzeHeader, 348


def _open(path: Path, mode: str = "rb"):
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(filename="", mode=mode, fileobj=open(path, mode), mtime=0)
    return open(path, mode)


def deidentify_nifti(src: Path, dst: Path, key: Key, options: tuple[str, ...],
                     verify: bool = True, pair: bool = False) -> dict[str, Any]:
    """Scrub descrip/aux_file/intent_name/db_name, drop extensions; voxel bytes copied as is.

    For an ``.hdr``/``.img`` pair, ``src``/``dst`` are the ``.hdr`` and the ``.img`` is copied.
    """
    from medgen.deid import verifier as V

    with _open(src) as fh:
        first = fh.read(540)
        cls, size = _nifti_header_class(first)
        fh.seek(0)
        hdr = cls.from_fileobj(fh, check=False)
        old_off = int(hdr["vox_offset"]) if "vox_offset" in hdr else 0
        actions = {}
        for f in NIFTI_TEXT_FIELDS:
            if f in hdr:
                hdr[f] = b""
                actions[f] = "Z"
        exts = getattr(hdr, "extensions", None)
        if exts is not None and len(exts):
            actions["extensions"] = f"X({len(exts)})"
            exts.clear()
        single = not pair and getattr(hdr, "is_single", False)
        with atomic_path(dst) as tmp:
            with _open(tmp, "wb") as out:
                if single:
                    new_off = size + 4
                    hdr["vox_offset"] = new_off
                    hdr.write_to(out)
                    fh.seek(max(old_off, size + 4))
                    shutil.copyfileobj(fh, out, 1 << 20)
                else:
                    hdr.write_to(out)
            if pair:
                img_src, img_dst = src.with_suffix(".img"), dst.with_suffix(".img")
                with atomic_path(img_dst) as tmp_img:
                    shutil.copyfile(img_src, tmp_img)
            if verify:
                findings = V.scan_nifti(tmp, V.identifiers_from_files([src], options))
                if findings:
                    raise Quarantine(f"verifier: {len(findings)} finding(s), first: {findings[0]}")
            out_sha = sha256_file(tmp)
    return {"kind": "nifti", "out_sha256": out_sha, "actions": actions}


# ----------------------------------------------------------------------------------- JSON


_ISO_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")


def _shift_iso(value: str, days: int) -> str:
    m = _ISO_DATE.match(value)
    if not m:
        return ""
    sep = "-" if "-" in value[:8] else ""
    new = shift_da("".join(m.groups()), days)
    return f"{new[:4]}{sep}{new[4:6]}{sep}{new[6:8]}" + value[m.end():]


def _is_numeric(v: Any) -> bool:
    if isinstance(v, bool | int | float):
        return True
    return isinstance(v, list) and all(_is_numeric(x) for x in v)


def scrub_sidecar(data: dict, key: Key, options: tuple[str, ...],
                  subject_hint: str = "") -> tuple[dict, dict[str, str]]:
    """Apply the table to a BIDS/dcm2niix sidecar dict; return (new dict, key -> action)."""
    bids = T.bids_data()
    aliases, keep = bids["aliases"], set(bids["keep_strings"])
    tbl = T.get_table()
    pid = str(data.get("PatientID", "") or subject_hint)
    shift = date_shift_days(key, pid)
    idents = frozenset(str(data[k]) for k in ("PatientName", "PatientID") if data.get(k))
    out: dict[str, Any] = {}
    actions: dict[str, str] = {}
    for k, v in data.items():
        kw = aliases.get(k, k)
        row = tbl.by_keyword.get(kw) if kw else None
        if row is None:
            if _is_numeric(v) or v is None or (k in keep and (
                    isinstance(v, str) or (isinstance(v, list)
                                           and all(isinstance(x, str | int | float) for x in v)))):
                out[k] = v
                continue
            actions[k] = "X(not-allowed)"
            continue
        action = T.resolve(row.code(options), kw, "default")
        actions[k] = action
        if action == "X":
            continue
        if action == "K":
            out[k] = v
        elif action == "U":
            out[k] = map_uid(key, str(v)) if isinstance(v, str) else None
        elif action in ("Z", "D"):
            if kw in ("PatientID", "PatientName") and v:
                out[k] = pseudonym(key, "patient-id", pid)
            elif action == "Z":
                out[k] = ""
            else:
                out[k] = "19000101" if row.vr == "DA" else "ANONYMIZED" if isinstance(v, str) else 0
        elif action == "C":
            if row.vr in ("DA", "DT") and isinstance(v, str):
                if "retain-long-modified-dates" in options:
                    out[k] = _shift_iso(v, shift)
                elif "retain-long-full-dates" in options:
                    out[k] = v
            elif row.vr == "TM":
                if "retain-long-modified-dates" in options or "retain-long-full-dates" in options:
                    out[k] = v
            elif isinstance(v, str):
                out[k] = clean_text(v, idents)
    return out, actions


def deidentify_json(src: Path, dst: Path, key: Key, options: tuple[str, ...],
                    verify: bool = True, subject_hint: str = "") -> dict[str, Any]:
    from medgen.deid import verifier as V

    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Quarantine("not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise Quarantine("JSON top level is not an object (not a sidecar)")
    names = [str(data[k]) for k in ("PatientName", "PatientID", "PatientBirthDate",
                                    "AccessionNumber") if data.get(k)]
    if data.get("AcquisitionDateTime"):
        names.append(re.sub(r"[^0-9]", "", str(data["AcquisitionDateTime"]))[:8])
    out, actions = scrub_sidecar(data, key, options, subject_hint)
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if verify:
            findings = V.scan_json(tmp, options, V.identifiers_from_files([src], options))
            if findings:
                raise Quarantine(f"verifier: {len(findings)} finding(s), first: {findings[0]}")
        out_sha = sha256_file(tmp)
    return {"kind": "json", "out_sha256": out_sha, "actions": actions, "names": names}
