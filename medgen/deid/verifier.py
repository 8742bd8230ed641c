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

STD_UID = "1.2.840.10008."
DUMMY_TOKENS = {"anonymized", "anon", "anonymous", ""}
PSEUDO = re.compile(r"^[0-9A-F]{16}$")
META_OK = {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
TEXT = {"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR"}
AUDIT_DIR = "_deid"


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


_NON_ALNUM = re.compile(r"[^0-9a-z]")
_WORD = re.compile(r"[0-9a-z]+")
_NAME_SPLIT = re.compile(r"[\^=\s,]+")
_STR_VRS = TEXT | {"PN", "DA", "DT", "UI", "CS", "AS", "TM", "DS", "IS"}


def _compact(s: str) -> str:
    return _NON_ALNUM.sub("", s.lower())


def _words(s: str) -> set[str]:
    return set(_WORD.findall(s.lower()))


def _vr(d, tag) -> str | None:
    """The VR of an element without decoding its value (dictionary VR for implicit files)."""
    raw = d.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return vr
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


# ------------------------------------------------------------------------ table (own reading)


class _Rules:
    """The verifier's own reading of the table data: final code per tag for the options."""

    def __init__(self, options: tuple[str, ...]):
        data = _data.table_data()
        self.options = options
        self.codes: dict[int, tuple[str, str | None]] = {}
        self.masks: list[tuple[int, int, str]] = []
        for r in data["rows"]:
            chosen = [r["options"][o] for o in options if o in r["options"]]
            code = r["basic"] if not chosen else ("C" if "C" in chosen else chosen[0])
            if r["tag"]:
                self.codes[int(r["tag"], 16)] = (code, r["vr"])
            elif r["mask"] != "private":
                m = r["mask"]
                self.masks.append((int("".join("0" if c == "X" else "F" for c in m), 16),
                                   int(m.replace("X", "0"), 16), code))
        self.allow = _data.allowlist(False)
        self.allow_ctx = _data.allowlist(True)
        self.safe = _data.private_dictionary() if "retain-safe-private" in options else {}

    def code(self, tag: int) -> str | None:
        c = self.codes.get(tag)
        if c:
            return c[0]
        for bits, val, code in self.masks:
            if tag & bits == val:
                return code
        return None


# ------------------------------------------------------------------------ identifiers


@dataclass
class Identifiers:
    """Identifying values of some originals, normalised for searching."""

    names: list[tuple[str, ...]] = field(default_factory=list)
    strings: set[str] = field(default_factory=set)  # compact forms
    raw: set[str] = field(default_factory=set)  # lower-case literal forms for byte search
    dates: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)  # compact values the profile keeps

    def add_name(self, value: str) -> None:
        comps = tuple(c for c in _NAME_SPLIT.split(value.lower().strip()) if c)
        comps = tuple(_compact(c) for c in comps if len(_compact(c)) >= 2)
        if comps:
            self.names.append(comps)
            for c in comps:
                if len(c) >= 5:
                    self.raw.add(c)
            if len(comps) > 1:
                self.raw.add("^".join(comps))

    def add_string(self, value: str) -> None:
        c = _compact(value)
        if len(c) < 4 or c in DUMMY_TOKENS or (c.isdigit() and len(c) < 6):
            return
        self.strings.add(c)
        lit = value.strip().lower()
        if len(lit) >= 6:
            self.raw.add(lit)

    def add_date(self, value: str) -> None:
        v = value.strip()[:8]
        if len(v) == 8 and v.isdigit() and v != "19000101":
            self.dates.add(v)
            self.dates.add(v[6:8] + v[4:6] + v[:4])
            self.dates.add(v[4:6] + v[6:8] + v[:4])
            self.raw.add(v)

    def add_uid(self, value: str) -> None:
        v = value.strip().rstrip("\x00")
        if v and not v.startswith(STD_UID) and not v.startswith("2.25.") and len(v) >= 8:
            self.uids.add(v)
            self.raw.add(v)

    def finish(self) -> Identifiers:
        # a value the profile keeps elsewhere (e.g. Manufacturer) is not evidence of a leak: drop
        # identifiers contained in a kept value
        blob = "\n".join(self.kept)
        self.strings = {s for s in self.strings if s not in blob}
        self.dates = {d for d in self.dates if d not in blob}
        self.raw = {r for r in self.raw if _compact(r) not in blob}
        self.names = [n for n in self.names if "".join(n) not in blob]
        self._family = {n[0] for n in self.names if len(n[0]) >= 3}
        self._by_comp: dict[str, list[tuple[str, ...]]] = {}
        for n in self.names:
            if len(n) > 1:
                for c in n:
                    self._by_comp.setdefault(c, []).append(n)
        # a name written without separators ("JOHNDOE") is searched like any other string
        needles = self.strings | self.dates | {"".join(n) for n in self.names
                                               if len("".join(n)) >= 6}
        # small sets (one file): plain substring tests; large sets (a tree): one regex
        self._re_str = _alt(needles) if len(needles) > 64 else None
        self._str_list = sorted(needles) if len(needles) <= 64 else []
        raw = {r.encode("latin-1", "replace") for r in self.raw if r}
        self._re_raw = _alt(self.raw, binary=True) if len(raw) > 64 else None
        self._raw_list = sorted(raw) if len(raw) <= 64 else []
        return self

    def __bool__(self) -> bool:
        return bool(self.names or self.strings or self.dates or self.uids)

    def hit(self, value: str) -> str | None:
        """Which kind of identifier ``value`` contains (name, string, date, uid), or None."""
        if not value:
            return None
        low = value.lower()
        comp = _compact(low)
        if self.names:
            words = _words(low)
            if words & self._family:
                return "name"
            for w in words & self._by_comp.keys():
                for n in self._by_comp[w]:
                    if all(c in words for c in n):
                        return "name"
        if self._re_str is not None and self._re_str.search(comp):
            return "identifier"
        for s in self._str_list:
            if s in comp:
                return "identifier"
        for u in self.uids:
            if u in value:
                return "uid"
        return None

    def raw_hit(self, data: bytes) -> bool:
        low = data.lower()
        if self._re_raw is not None and self._re_raw.search(low) is not None:
            return True
        return any(r in low for r in self._raw_list)


def _alt(items: set[str], binary: bool = False):
    items = {i for i in items if i}
    if not items:
        return None
    pat = "|".join(re.escape(i) for i in sorted(items, key=len, reverse=True))
    return re.compile(pat.encode("latin-1", "replace") if binary else pat)


def _original_dicom(path: Path, rules: _Rules, ids: Identifiers) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        return False
    if len(ds) == 0:
        return False
    _from_dataset(ds, rules, ids)
    return True


def identifiers_from_dataset(ds, options: tuple[str, ...] = ()) -> Identifiers:
    """Identifying values of one original, already parsed dataset (call before changing it)."""
    ids = Identifiers()
    _from_dataset(ds, _rules(tuple(options)), ids)
    return ids.finish()


def _from_dataset(ds, rules: _Rules, ids: Identifiers) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        if meta.get("MediaStorageSOPInstanceUID") and "retain-uids" not in rules.options:
            ids.add_uid(str(meta.MediaStorageSOPInstanceUID))
        if meta.get("SourceApplicationEntityTitle"):
            ids.add_string(str(meta.SourceApplicationEntityTitle))
    retain_uids = "retain-uids" in rules.options
    full_dates = "retain-long-full-dates" in rules.options

    def walk(d, depth: int) -> None:
        for tag in list(d.keys()):
            try:
                vr = _vr(d, tag)
                if vr == "SQ":
                    for it in d[tag].value or []:
                        walk(it, depth + 1)
                    continue
                if vr not in _STR_VRS:
                    continue
                vals = _strings(d, tag, vr)
            except Exception:
                continue
            t = int(tag)
            if tag.is_private:
                if t & 0xFF00 == 0 or (t & 0xFFFF) <= 0xFF:
                    continue  # private creator names are not identifiers
                kept = bool(rules.safe)
                code = "K" if kept else "X"
            else:
                code = rules.code(t)
                if code is None:
                    code = "K" if t in rules.allow_ctx else "X"
            keep = code == "K" or (vr == "UI" and retain_uids) or (vr in ("DA", "DT") and full_dates)
            if code == "C" and vr in TEXT:
                # cleaned text may legitimately stay as it was when it held nothing identifying;
                # its identifying parts are other attributes' values, searched for anyway
                continue
            for v in vals:
                if keep:
                    ids.kept.add(_compact(v))
                elif vr == "PN":
                    ids.add_name(v)
                elif vr in ("DA", "DT"):
                    ids.add_date(v)
                elif vr == "UI":
                    ids.add_uid(v)
                elif vr in ("CS", "AS", "TM", "DS", "IS") or (tag.is_private and len(v.strip()) < 6):
                    continue
                else:
                    ids.add_string(v)

    walk(ds, 0)


def _strings(d, tag, vr: str) -> list[str]:
    """String values of an element. Undecoded (raw) elements are read straight from their bytes
    as latin-1, which keeps every byte searchable whatever the character set and skips pydicom's
    value conversion (the slow part of a scan)."""
    raw = d.get_item(tag)
    if getattr(raw, "value", None) is not None and isinstance(raw.value, bytes | bytearray):
        text = bytes(raw.value).decode("latin-1").strip(" \x00")
        return [v.strip(" \x00") for v in text.split("\\") if v.strip(" \x00")]
    el = d[tag]
    return [str(v) for v in (el.value if el.VM > 1 else [el.value]) if v not in (None, "")]


def _original_json(path: Path, rules: _Rules, ids: Identifiers) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except Exception:
        return
    if not isinstance(data, dict):
        return
    aliases = _data.bids_data()["aliases"]
    by_kw = {r["keyword"]: r for r in _data.table_data()["rows"] if r["keyword"]}
    for k, v in data.items():
        kw = aliases.get(k, k)
        r = by_kw.get(kw) if kw else None
        if r is None or not isinstance(v, str):
            continue
        code = rules.codes[int(r["tag"], 16)][0]
        if code == "K":
            ids.kept.add(_compact(v))
        elif r["vr"] == "PN":
            ids.add_name(v)
        elif r["vr"] in ("DA", "DT"):
            ids.add_date(re.sub(r"[^0-9]", "", v))
        elif r["vr"] == "UI":
            ids.add_uid(v)
        elif r["vr"] != "TM":
            ids.add_string(v)


def _original_nifti(path: Path, ids: Identifiers) -> None:
    import nibabel as nib

    try:
        hdr = nib.load(path).header
    except Exception:
        return
    for f in ("descrip", "aux_file", "intent_name", "db_name"):
        if f in hdr:
            raw = bytes(hdr[f].tobytes()).split(b"\x00")[0]
            ids.add_string(raw.decode("latin-1"))


def identifiers_from_files(paths, options: tuple[str, ...] = ()) -> Identifiers:
    """Identifying values of the given original files (DICOM, JSON sidecars, NIfTI headers)."""
    rules = _rules(tuple(options))
    ids = Identifiers()
    for p in paths:
        p = Path(p)
        name = p.name.lower()
        if name.endswith(".json"):
            _original_json(p, rules, ids)
        elif name.endswith((".nii", ".nii.gz", ".hdr")):
            _original_nifti(p, ids)
        elif not name.endswith(".img"):
            _original_dicom(p, rules, ids)
    return ids.finish()


_RULES: dict[tuple[str, ...], _Rules] = {}


def _rules(options: tuple[str, ...]) -> _Rules:
    if options not in _RULES:
        _RULES[options] = _Rules(options)
    return _RULES[options]


# ------------------------------------------------------------------------ scanners


def _t(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def scan_dicom(path: str | Path | bytes, options: tuple[str, ...] = (),
               ids: Identifiers | None = None) -> list[str]:
    """Findings for one de-identified DICOM file, given as a path or its bytes (empty = clean)."""
    import pydicom

    rules = _rules(tuple(options))
    out: list[str] = []
    import io

    data = bytes(path) if isinstance(path, bytes | bytearray) else Path(path).read_bytes()
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        return [f"pydicom cannot re-read the output ({type(exc).__name__})"]
    retain_uids = "retain-uids" in options
    meta = ds.file_meta
    for el in meta:
        if int(el.tag) not in META_OK:
            out.append(f"file meta {_t(int(el.tag))}: not allowed in de-identified file meta")
    msi = str(meta.get("MediaStorageSOPInstanceUID", ""))
    if msi != str(ds.get("SOPInstanceUID", "")):
        out.append("file meta (0002,0003): does not match SOPInstanceUID")
    if not retain_uids and not (msi.startswith("2.25.") or msi.startswith(STD_UID)):
        out.append("file meta (0002,0003): not a remapped UID")
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
        if mod in ("US", "SC", "OT", "XC") or sop.startswith("1.2.840.10008.5.1.4.1.1.7") \
                or sop.startswith("1.2.840.10008.5.1.4.1.1.104."):
            out.append("(0028,0301): at-risk instance without BurnedInAnnotation")

    def check(d, depth: int, ctx: bool) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in list(d.keys()):
            t = int(tag)
            where = f"{_t(t)} depth {depth}"
            if not tag.is_private and t in rules.allow and t not in rules.codes:
                rvr = _vr(d, tag)
                if rvr != "SQ":  # allow-listed value: only searched, never decoded
                    if ids and rvr in TEXT | {"PN", "DA", "DT", "UI"}:
                        _search(d, tag, rvr, where, ids, out)
                    continue
            try:
                el = d[tag]
            except Exception:
                out.append(f"{where}: undecodable element")
                continue
            vr = el.VR
            if tag.is_private:
                g, e = t >> 16, t & 0xFFFF
                if not rules.safe:
                    out.append(f"{where}: private element present")
                    continue
                if 0x10 <= e <= 0xFF:
                    creators[(g, e)] = str(el.value).strip()
                    continue
                cr = creators.get((g, e >> 8)) or str(d.get((g << 16) | (e >> 8), "") and
                                                      d[(g << 16) | (e >> 8)].value).strip()
                if rules.safe.get((g, cr, e & 0xFF)) != "K":
                    out.append(f"{where}: private element not marked safe in the dictionary")
                    continue
            elif (t >> 16) == 0x0002 or (t & 0xFFFF) == 0:
                out.append(f"{where}: group-length or meta element in the dataset")
                continue
            else:
                code = rules.code(t)
                if code is None:
                    if t not in rules.allow and not (ctx and t in rules.allow_ctx):
                        if t not in (0x00120062, 0x00120063, 0x00120064, 0x00280303):
                            out.append(f"{where}: attribute not in the table nor on the allow-list")
                elif code == "X":
                    out.append(f"{where}: present although the table says X")
                    continue
                else:
                    _check_value(el, code, where, out, retain_uids)
                if vr == "SQ":
                    for it in el.value or []:
                        check(it, depth + 1, ctx or code == "C")
                    continue
            if vr == "SQ":
                for it in el.value or []:
                    check(it, depth + 1, ctx)
                continue
            if ids and vr in TEXT | {"PN", "DA", "DT", "UI"}:
                _search(d, tag, vr, where, ids, out)

    check(ds, 0, False)
    if ids:
        for el in meta:
            if el.VR in ("UI", "SH", "AE") and ids.hit(str(el.value)):
                out.append(f"file meta {_t(int(el.tag))}: holds an original identifier")
        if ids.raw_hit(data):
            out.append("raw bytes: an original identifier appears in the file")
    return out


def _search(d, tag, vr: str, where: str, ids: Identifiers, out: list[str]) -> None:
    try:
        vals = _strings(d, tag, vr)
    except Exception:
        return
    for v in vals:
        kind = ids.hit(v)
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
           options: tuple[str, ...] | list[str] = ()) -> VerifyReport:
    """Scan every output under ``dst``; with ``original``, search for the originals' identifiers.

    Parameters
    ----------
    dst : output folder (or one file) written by ``medgen deid``.
    original : the input folder (or file); enables the identifier search and file-name check.
    options : the de-identification options the outputs were made with.
    """
    with quiet_pydicom():
        return _verify(Path(dst), original, tuple(sorted(set(options))))


def _verify(dst: Path, original, options: tuple[str, ...]) -> VerifyReport:
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
        if ids:
            for part in rel.parts:
                stem = re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]{1,6})$", "", part)
                if ids.hit(stem.replace("_", " ").replace("-", " ")):
                    found.append("file or folder name holds an original identifier")
                    break
        rep.findings.extend(f"{rel}: {f}" for f in found)
    return rep
