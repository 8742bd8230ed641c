"""The verifier's own reading of the table and of the originals' identifying values.

Part of the independent verifier (:mod:`medgen.deid.verifier`): nothing here calls the engine.
Identifiers are normalised for searching (case, spacing, punctuation, name-component order) and
cleaned of what cannot be evidence of a leak:

* **placeholders** - an original whose PatientName was ``Anonymized`` or whose ID was ``UNKNOWN``
  holds nothing that a de-identified file could leak; medgen's own dummies (``ANONYMIZED``,
  ``19000101``) and pseudonyms are removed from every searched value before it is compared;
* **boilerplate** - values made only of DICOM vocabulary and common words (``Manufacturer name
  here``, ``NO INFO``) are not identifiers;
* **generated UIDs** - the digits of a ``2.25.`` UID are not searched for dates or IDs (a date
  ``20190411`` can occur inside a 39-digit integer by chance).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medgen.deid import table as _data  # data files only (rows, allow-list, private dictionary)

STD_UID = "1.2.840.10008."
PSEUDO = re.compile(r"^[0-9A-F]{16}$")
TEXT = {"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR"}
PLACEHOLDERS = {"anonymized", "anonymised", "anonymous", "anon", "unknown", "none", "null", "na",
                "noinfo", "info", "no", "test", "phantom", "removed", "deidentified", "redacted",
                "patient", "name", "id", "xxx", "xxxx", "empty", "blank", "not", "given",
                "applicable", "n", "a", "unk", "dummy", "default", "sample", "demo", "nn"}
COMMON = {"the", "of", "and", "to", "for", "in", "on", "at", "by", "with", "here", "there", "is",
          "this", "that", "your", "our", "my", "from", "or", "as", "be", "it", "an", "set",
          "enter", "please", "value", "text", "field", "hospital", "clinic", "center", "centre",
          "department", "medical", "health", "imaging", "radiology", "systems", "system"}
_NON_ALNUM = re.compile(r"[^0-9a-z]")
_WORD = re.compile(r"[0-9a-z]+")
_NAME_SPLIT = re.compile(r"[\^=\s,]+")
_STR_VRS = TEXT | {"PN", "DA", "DT", "UI", "CS", "AS", "TM", "DS", "IS"}
_GEN_UID = re.compile(r"2\.25\.\d+")
_GEN_UID_B = re.compile(rb"2\.25\.\d+")
_PSEUDO_ANY = re.compile(r"\b[0-9A-F]{16}\b")


def _compact(s: str) -> str:
    return _NON_ALNUM.sub("", s.lower())


def _words(s: str) -> set[str]:
    return set(_WORD.findall(s.lower()))


@functools.cache
def vocabulary() -> frozenset[str]:
    """Lower-case words of every DICOM attribute name (pydicom's dictionary) plus common words:
    a value made only of these is boilerplate, not an identifier."""
    from pydicom.datadict import DicomDictionary

    words = set(PLACEHOLDERS) | COMMON
    for entry in DicomDictionary.values():
        words.update(w for w in _WORD.findall(str(entry[2]).lower()) if len(w) >= 2)
    return frozenset(words)


def is_boilerplate(value: str) -> bool:
    """Only placeholder, DICOM-vocabulary and common words (or nothing) in ``value``."""
    words = _WORD.findall(value.lower())
    voc = vocabulary()
    return all(w in voc or w.isdigit() and len(w) <= 2 for w in words)


def strip_generated(value: str) -> str:
    """``value`` without medgen's generated UIDs, pseudonyms and placeholder words."""
    v = _GEN_UID.sub(" ", value)
    v = _PSEUDO_ANY.sub(" ", v)
    return " ".join(w for w in re.split(r"(\s+)", v) if _compact(w) not in PLACEHOLDERS)


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
    initials: set[str] = field(default_factory=set)  # "jd", "dj" of caret-separated names

    def add_name(self, value: str) -> None:
        if is_boilerplate(value):
            return
        comps = tuple(c for c in _NAME_SPLIT.split(value.lower().strip()) if c)
        comps = tuple(_compact(c) for c in comps if len(_compact(c)) >= 2)
        comps = tuple(c for c in comps if c not in PLACEHOLDERS)
        parts = [p.strip() for p in value.split("=")[0].split("^")[:2]]
        if len(parts) == 2 and all(p[:1].isalpha() for p in parts) and \
                _compact(parts[0]) not in PLACEHOLDERS:
            f, g = parts[0][0].lower(), parts[1][0].lower()
            self.initials.update({g + f, f + g})
        if comps:
            self.names.append(comps)
            for c in comps:
                if len(c) >= 5:
                    self.raw.add(c)
            if len(comps) > 1:
                self.raw.add("^".join(comps))

    def add_string(self, value: str) -> None:
        c = _compact(value)
        if len(c) < 4 or is_boilerplate(value) or (c.isdigit() and len(c) < 6):
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
        # a family name alone is evidence only when it is not an ordinary word
        voc = vocabulary()
        self._family = {n[0] for n in self.names if len(n[0]) >= 3 and n[0] not in voc}
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

    def hit(self, value: str, vr: str | None = None) -> str | None:
        """Which kind of identifier ``value`` contains (name, string, date, uid), or None.

        medgen's own placeholders, pseudonyms and generated UIDs are removed first, so a value
        made only of them never matches."""
        if not value:
            return None
        if vr == "UI":
            v = value.strip().rstrip("\x00")
            return "uid" if v in self.uids else None
        value = strip_generated(value)
        if not value.strip():
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

    def initials_hit(self, stem: str) -> bool:
        """The initials of an original name as a token of their own (``JD``, ``J.D.``)."""
        low = stem.lower()
        return any(re.search(rf"(?<![a-z]){i[0]}\.?{i[1]}\.?(?![a-z])", low)
                   for i in self.initials)

    def raw_hit(self, data: bytes) -> bool:
        low = _GEN_UID_B.sub(b" ", data.lower())
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
        ds = pydicom.dcmread(path, force=True, defer_size=1 << 16)  # pixels never read
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


