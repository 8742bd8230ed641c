"""The verifier: an independent scan of de-identified outputs.

Independent means a different code path from the engine: this module never calls the engine's
walker or its action resolution. It reads the outputs back from disk with pydicom/nibabel/json,
walks every element at every depth (file meta, private tags, sequences), and checks them against
the table *data* for the chosen options, the allow-list, the de-identification markers and the
burned-in rules. Given the originals, it extracts their identifying values itself and searches
every decoded value, the raw bytes of every output and every output path component for them,
normalised for case, spacing, punctuation and name-component order ("DOE^JOHN" ~ "John Doe").

Findings name a file (relative to the output root), a tag and a rule - never a value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from medgen.deid import table as _data  # data files only (rows, allow-list, private dictionary)
from medgen.deid.verifier_ids import (  # noqa: F401  (re-exported for callers)
    PSEUDO,
    STD_UID,
    TEXT,
    Identifiers,
    _rules,
    _strings,
    _vr,
    identifiers_from_dataset,
    identifiers_from_files,
    strip_generated,
)

DUMMY_TOKENS = {"anonymized", "anon", "anonymous", ""}
META_OK = {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
MARKER_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)
AT_RISK = ("US", "SC", "OT", "XC", "XA", "RF", "ES", "GM", "OP", "IO", "DOC")
AUDIT_DIR = "_deid"
PIXEL_DATA = 0x7FE00010


@contextlib.contextmanager
def quiet_pydicom():
    """pydicom's warnings quote header values (PHI): silence its logger and warnings here."""
    plog = logging.getLogger("pydicom")
    old = plog.level
    plog.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        plog.setLevel(old)


def _t(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _parse_output(data: bytes):
    """Parse an output without loading its pixel data (deferred: never read by the scan)."""
    import io

    import pydicom

    return pydicom.dcmread(io.BytesIO(data), defer_size=1 << 16)


def _header_bytes(ds, data: bytes) -> bytes:
    """The output's bytes without the pixel data value (searched for identifiers)."""
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    vt = getattr(raw, "value_tell", None)
    if raw is None or vt is None or raw.length == 0xFFFFFFFF:
        return data
    return data[:vt] + data[vt + raw.length:]


def _check_meta(ds, retain_uids: bool, out: list[str]) -> None:
    meta = ds.file_meta
    for el in meta:
        if int(el.tag) not in META_OK:
            out.append(f"file meta {_t(int(el.tag))}: not allowed in de-identified file meta")
    msi = str(meta.get("MediaStorageSOPInstanceUID", ""))
    if msi != str(ds.get("SOPInstanceUID", "")):
        out.append("file meta (0002,0003): does not match SOPInstanceUID")
    if not retain_uids and not (msi.startswith("2.25.") or msi.startswith(STD_UID)):
        out.append("file meta (0002,0003): not a remapped UID")


def _check_markers(ds, out: list[str]) -> None:
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        out.append("(0012,0062): PatientIdentityRemoved is not YES")
    codes = [str(i.get("CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence", [])]
    if "113100" not in codes:
        out.append("(0012,0064): 113100 missing from DeidentificationMethodCodeSequence")
    bia = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if bia == "YES":
        out.append("(0028,0301): BurnedInAnnotation is YES")
    elif not bia:
        sop = str(ds.get("SOPClassUID", ""))
        mod = str(ds.get("Modality", "")).upper()
        if mod in AT_RISK or sop.startswith("1.2.840.10008.5.1.4.1.1.7") \
                or sop.startswith("1.2.840.10008.5.1.4.1.1.104."):
            out.append("(0028,0301): at-risk instance without BurnedInAnnotation")
    if "IconImageSequence" in ds:
        out.append("(0088,0200): icon image present (may show burned-in text)")
    _check_pixel_length(ds, out)


def _check_pixel_length(ds, out: list[str]) -> None:
    """Native pixel data must hold every frame the header describes (a truncated input must
    never pass as a whole output); read from the element's length, never decoded."""
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    if raw is None:
        return
    length = getattr(raw, "length", None)  # a raw (possibly deferred) element
    if length is None:  # already a DataElement
        if getattr(raw, "is_undefined_length", False) or raw.value is None:
            return
        length = len(raw.value)
    if length == 0xFFFFFFFF:
        return
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) \
            * int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except Exception:  # no pixel description: nothing to compare the length with
        return
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        n = n * 2 // 3
    need = (n + 7) // 8 if bits == 1 else n * (bits // 8)
    if length < need:
        out.append("(7FE0,0010): pixel data shorter than its header describes")


def scan_dicom(path: str | Path | bytes, options: tuple[str, ...] = (),
               ids: Identifiers | None = None) -> list[str]:
    """Findings for one de-identified DICOM file, given as a path or its bytes (empty = clean)."""
    rules = _rules(tuple(options))
    out: list[str] = []
    data = bytes(path) if isinstance(path, bytes | bytearray) else Path(path).read_bytes()
    try:
        ds = _parse_output(data)
    except Exception as exc:
        return [f"pydicom cannot re-read the output ({type(exc).__name__})"]
    retain_uids = "retain-uids" in options
    _check_meta(ds, retain_uids, out)
    _check_markers(ds, out)
    _Walk(rules, ids, retain_uids, out).dataset(ds, 0, False)
    if ids:
        for el in ds.file_meta:
            if el.VR in ("UI", "SH", "AE") and ids.hit(str(el.value), el.VR):
                out.append(f"file meta {_t(int(el.tag))}: holds an original identifier")
        if ids.raw_hit(_header_bytes(ds, data)):
            out.append("raw bytes: an original identifier appears in the file")
    return out


class _Walk:
    """Every element at every depth: table code, allow-list, private dictionary, identifiers."""

    def __init__(self, rules, ids, retain_uids: bool, out: list[str]):
        self.rules, self.ids, self.retain_uids, self.out = rules, ids, retain_uids, out

    def dataset(self, d, depth: int, ctx: bool) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in list(d.keys()):
            self.element(d, tag, depth, ctx, creators)

    def element(self, d, tag, depth: int, ctx: bool, creators) -> None:
        rules, out = self.rules, self.out
        t = int(tag)
        where = f"{_t(t)} depth {depth}"
        if t == PIXEL_DATA:
            return  # pixels: burned-in checks, never decoded here
        if not tag.is_private and t in rules.allow and t not in rules.codes:
            rvr = _vr(d, tag)
            if rvr != "SQ":  # allow-listed value: only searched, never decoded
                if self.ids and rvr in TEXT | {"PN", "DA", "DT", "UI"}:
                    _search(d, tag, rvr, where, self.ids, out)
                return
        try:
            el = d[tag]
        except Exception:
            out.append(f"{where}: undecodable element")
            return
        if tag.is_private:
            if not self.private_ok(d, el, t, where, creators):
                return
        elif (t >> 16) == 0x0002 or (t & 0xFFFF) == 0:
            out.append(f"{where}: group-length or meta element in the dataset")
            return
        else:
            code = rules.code(t)
            if code is None:
                if t not in rules.allow and not (ctx and t in rules.allow_ctx) \
                        and t not in MARKER_TAGS:
                    out.append(f"{where}: attribute not in the table nor on the allow-list")
            elif code == "X":
                out.append(f"{where}: present although the table says X")
                return
            else:
                _check_value(el, code, where, out, self.retain_uids)
            ctx = ctx or code == "C"
        if el.VR == "SQ":
            for it in el.value or []:
                self.dataset(it, depth + 1, ctx)
        elif self.ids and el.VR in TEXT | {"PN", "DA", "DT", "UI"}:
            _search(d, tag, el.VR, where, self.ids, out)

    def private_ok(self, d, el, t: int, where: str, creators) -> bool:
        """False when the private element is a finding (or a creator, recorded)."""
        g, e = t >> 16, t & 0xFFFF
        if not self.rules.safe:
            self.out.append(f"{where}: private element present")
            return False
        if 0x10 <= e <= 0xFF:
            creators[(g, e)] = str(el.value).strip()
            return False
        ctag = (g << 16) | (e >> 8)
        cr = creators.get((g, e >> 8)) or (str(d[ctag].value).strip() if ctag in d else "")
        if self.rules.safe.get((g, cr, e & 0xFF)) != "K":
            self.out.append(f"{where}: private element not marked safe in the dictionary")
            return False
        return True


def _search(d, tag, vr: str, where: str, ids: Identifiers, out: list[str]) -> None:
    try:
        vals = _strings(d, tag, vr)
    except Exception:
        return
    for v in vals:
        kind = ids.hit(v, vr)
        if kind:
            out.append(f"{where}: holds an original {kind}")
            return


def _check_value(el, code: str, where: str, out: list[str], retain_uids: bool) -> None:
    vr = el.VR
    if vr == "SQ":
        return
    try:
        vals = [v for v in (el.value if el.VM > 1 else [el.value]) if v not in (None, "", b"")]
    except Exception:
        out.append(f"{where}: undecodable value")
        return
    if not vals or code == "K":
        return
    if vr == "UI" and not retain_uids:
        if any(not (str(v).startswith("2.25.") or str(v).startswith(STD_UID)) for v in vals):
            out.append(f"{where}: UID not remapped")
        return
    if code == "Z" or code == "X/Z":
        if vr in ("DA", "DT", "TM", "PN") or not all(PSEUDO.match(str(v)) for v in vals):
            if not all(PSEUDO.match(str(v)) for v in vals):
                out.append(f"{where}: value present although the table says Z")
        return
    if code in ("D", "X/D", "Z/D", "X/Z/D") and vr in ("DA", "DT"):
        if any(not str(v).startswith("1900") for v in vals):
            out.append(f"{where}: date is not a dummy")
    if code in ("D", "X/D", "Z/D", "X/Z/D") and vr == "PN":
        if any(str(v).lower() not in DUMMY_TOKENS and not PSEUDO.match(str(v)) for v in vals):
            out.append(f"{where}: person name is not a dummy")


def scan_nifti(path: str | Path, ids: Identifiers | None = None) -> list[str]:
    """Findings for one NIfTI/Analyze header (text fields, extensions, original identifiers)."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as fh:
        head = fh.read(548)
    out: list[str] = []
    size = int.from_bytes(head[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big")
    fields = ({"descrip": (148, 80), "aux_file": (228, 24), "intent_name": (328, 16),
               "db_name": (4, 18)} if size == 348 else
              {"descrip": (240, 80), "aux_file": (320, 24), "intent_name": (508, 16)})
    for name, (off, n) in fields.items():
        if head[off:off + n].strip(b"\x00 "):
            out.append(f"header {name}: not empty")
    single = head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00"
    if single and head[size:size + 1] not in (b"\x00", b""):
        out.append("header: extensions present")
    if ids and ids.raw_hit(head[:size + 4]):
        out.append("header: an original identifier appears")
    return out


def scan_json(path: str | Path, options: tuple[str, ...] = (),
              ids: Identifiers | None = None) -> list[str]:
    """Findings for one JSON sidecar: keys the table removes, original identifiers."""
    rules = _rules(tuple(options))
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:
        return ["not valid JSON"]
    out: list[str] = []
    if not isinstance(data, dict):
        return ["JSON top level is not an object"]
    aliases = _data.bids_data()["aliases"]
    by_kw = {r["keyword"]: r for r in _data.table_data()["rows"] if r["keyword"]}
    for k, v in data.items():
        kw = aliases.get(k, k)
        r = by_kw.get(kw) if kw else None
        if r is not None and rules.codes[int(r["tag"], 16)][0] == "X":
            out.append(f"key {k}: present although the table says X")
        if ids and ids.hit(json.dumps(v, ensure_ascii=False)):
            out.append(f"key {k}: holds an original identifier")
    return out


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`: files checked and findings (``path: finding``)."""

    files_checked: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def verify(dst: str | Path, original: str | Path | None = None,
           options: tuple[str, ...] | list[str] = (), pixels: bool = False) -> VerifyReport:
    """Scan every output under ``dst``; with ``original``, search for the originals' identifiers.

    Parameters
    ----------
    dst : output folder (or one file) written by ``medgen deid``.
    original : the input folder (or file); enables the identifier search and file-name check.
    options : the de-identification options the outputs were made with.
    pixels : also OCR at-risk images (US, SC, ...) for burned-in dates and identifiers (slow).
    """
    with quiet_pydicom():
        return _verify(Path(dst), original, tuple(sorted(set(options))), pixels)


_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[-._ ][0-9]+){0,2}(?![0-9])")


def _is_date(y: int, m: int, d: int) -> bool:
    import datetime

    try:
        datetime.date(y, m, d)
    except ValueError:
        return False
    return 1900 <= y <= 2099


def holds_date(stem: str) -> bool:
    """Does a name hold a calendar date in any common written form (verifier's own parser)?"""
    for m in _DIGIT_RUN.finditer(stem):
        groups = re.split(r"[-._ ]", m.group(0))
        lens = tuple(len(g) for g in groups)
        g = [int(x) for x in groups]
        if lens == (8,):
            x = groups[0]
            cands = [(int(x[:4]), int(x[4:6]), int(x[6:])), (int(x[4:]), int(x[2:4]), int(x[:2])),
                     (int(x[4:]), int(x[:2]), int(x[2:4]))]
        elif lens == (4, 2, 2):
            cands = [(g[0], g[1], g[2])]
        elif lens in ((2, 2, 4), (1, 1, 4), (2, 1, 4), (1, 2, 4)):
            cands = [(g[2], g[1], g[0]), (g[2], g[0], g[1])]
        elif lens == (2, 2, 2):
            cands = [(2000 + g[2], g[1], g[0]), (2000 + g[2], g[0], g[1])]
        else:
            continue
        if any(_is_date(*c) for c in cands):
            return True
    return False


def pixel_findings(path: Path, ids: Identifiers | None) -> list[str]:
    """OCR the frames of an at-risk output and look for dates and the originals' identifiers in
    the words it reads (``verify(pixels=True)``; the verifier's own decision, not the engine's)."""
    import pydicom

    from medgen.deid import ocr

    ds = pydicom.dcmread(path)
    mod = str(ds.get("Modality", "")).upper()
    if "PixelData" not in ds or (mod not in AT_RISK and str(ds.get("BurnedInAnnotation", ""))
                                 .upper() != "YES" and not str(ds.SOPClassUID).startswith(
                                     "1.2.840.10008.5.1.4.1.1.7")):
        return []
    try:
        arr = ds.pixel_array
    except Exception:
        return ["(7FE0,0010): pixel data cannot be decoded"]
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
    out = []
    for i, f in enumerate(frames):
        try:
            words = ocr.read_words(f)
        except ocr.OcrUnavailable as exc:
            return [f"pixels: cannot be checked ({exc})"]
        for w in words:
            if w.conf < 50 or len(w.text) < 3:
                continue
            if holds_date(w.text) or (ids and ids.hit(w.text)):
                out.append(f"pixels frame {i + 1}: burned-in text holds a date or identifier")
                break
    return out


def path_findings(rel: Path, ids: Identifiers | None) -> list[str]:
    """Dates (always), original identifiers and initials (with originals) in path components."""
    out = []
    for part in rel.parts:
        stem = re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]{1,6})$", "", part)
        if holds_date(stem):
            out.append("file or folder name holds a date")
        if ids and ids.hit(stem.replace("_", " ").replace("-", " ")):
            out.append("file or folder name holds an original identifier")
        if ids and ids.initials_hit(stem):
            out.append("file or folder name holds an original's initials")
    return sorted(set(out))


def _verify(dst: Path, original, options: tuple[str, ...], pixels: bool = False) -> VerifyReport:
    ids = None
    if original is not None:
        o = Path(original)
        files = [o] if o.is_file() else sorted(p for p in o.rglob("*") if p.is_file())
        ids = identifiers_from_files(files, options)
    root = dst if dst.is_dir() else dst.parent
    outs = [dst] if dst.is_file() else sorted(p for p in dst.rglob("*") if p.is_file())
    rep = VerifyReport()
    for p in outs:
        rel = p.relative_to(root)
        if rel.parts and rel.parts[0] == AUDIT_DIR:
            if ids and ids.raw_hit(p.read_bytes()):
                rep.findings.append(f"{rel}: an original identifier appears in the audit")
            continue
        rep.files_checked += 1
        name = p.name.lower()
        if name.endswith((".nii", ".nii.gz", ".hdr")):
            found = scan_nifti(p, ids)
        elif name.endswith(".img"):
            found = []
        elif name.endswith(".json"):
            found = scan_json(p, options, ids)
        else:
            found = scan_dicom(p, options, ids)
            if pixels and not found:
                found = pixel_findings(p, ids)
        found += path_findings(rel, ids)
        rep.findings.extend(f"{rel}: {f}" for f in found)
    return rep
