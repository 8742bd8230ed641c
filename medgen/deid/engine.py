"""One file in, one de-identified file out (or a quarantine reason): DICOM, NIfTI, JSON sidecars.

Every function here returns a record for the audit log; none logs or raises a value taken from the
data. Outputs are written atomically and, unless ``verify=False``, scanned by the independent
verifier (:mod:`medgen.deid.verify`) before they are renamed into place; an output with findings is
discarded and the input quarantined.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from medgen.deid import table as T
from medgen.deid.dicom import (
    clean_text,
    date_shift_days,
    map_uid,
    pseudonym,
    shift_da,
)
from medgen.keys import Key
from medgen.utils.atomic import TMP_PREFIX, atomic_path
from medgen.utils.hashing import sha256_file

NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")


def stage_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``final`` and rename it there (no fsync).

    Used for the staging folder only: :func:`medgen.deid.run.deidentify` syncs every staged file
    once (``os.sync``) before any of them is renamed to its final place, so a final output is
    never a torn or empty file after a crash, without paying one fsync per file.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{''.join(final.suffixes)}"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class Quarantine(Exception):
    """The input gets no output; ``str(exc)`` is a one-line reason without any data value."""

    names: list[str] = []  # values for file-name mapping, when the file could be read
    modality: str = "?"  # for the per-modality report
    in_sha256: str | None = None  # when the input's bytes were read


def safe_reason(exc: BaseException) -> str:
    """A one-line reason from an exception with quoted text and long numbers blanked out."""
    if isinstance(exc, Quarantine):
        return str(exc)
    msg = " ".join(str(exc).split())
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\d{4,}", "#", msg)
    return f"{type(exc).__name__}: {msg}"[:140]


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
