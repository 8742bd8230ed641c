"""The DICOM engine: apply Table E.1-1 (basic profile + options) to one dataset, at every depth.

Why our own walker rather than ``Dataset.walk`` / ``remove_private_tags``: every element needs the
table's action for *its* tag, resolved for the instance's IOD family, with default-deny for
unlisted attributes, private-block bookkeeping for retain-safe-private, and sequence context
(inside a CLEANED sequence content-item text is kept but scrubbed). pydicom gives us parsing,
VRs, the dictionary and writing; the policy is here.

Nothing in this module logs or raises a value from the dataset: errors name tags and actions.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter
from dataclasses import dataclass, field

from medgen.deid import table as T
from medgen.keys import Key

DUMMY_DATE = "19000101"
DUMMY_TIME = "000000.00"
DUMMY_DT = "19000101000000.000000"
DUMMY_TEXT = "ANONYMIZED"
# attributes whose Z/D replacement is a keyed pseudonym (consistent across files and runs)
PSEUDONYM_DOMAINS = {
    0x00100020: "patient-id",  # PatientID
    0x00100010: "patient-id",  # PatientName (the patient's pseudonym, derived from PatientID)
    0x00080050: "accession",  # AccessionNumber
    0x00200010: "study-id",  # StudyID
    0x00120040: "trial-subject",  # ClinicalTrialSubjectID
    0x00120042: "trial-reading",  # ClinicalTrialSubjectReadingID
}
TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "PN", "AE", "CS", "UR"}
STANDARD_UID_ROOT = "1.2.840.10008."
IMPLEMENTATION_UID = "2.25.186913403718298263431359424394129950593"  # medgen's, fixed
_DEID_TAGS = {0x00120062, 0x00120063, 0x00120064, 0x00280303}


def map_uid(key: Key, uid: str) -> str:
    """``2.25.`` + the integer of the first 128 bits of HMAC-SHA256(key, uid): <= 44 characters.

    Standard-defined UIDs (transfer syntaxes, SOP classes, coding schemes: ``1.2.840.10008.``) are
    not instance identifiers and are returned unchanged.
    """
    uid = uid.strip().rstrip("\x00")
    if not uid or uid.startswith(STANDARD_UID_ROOT):
        return uid
    return "2.25." + str(int.from_bytes(key.digest("uid", uid)[:16], "big"))


def pseudonym(key: Key, domain: str, value: str) -> str:
    """16 upper-case hex characters (fits SH/LO/PN) from HMAC(key, domain, value)."""
    return key.hex(domain, value.strip(), 16).upper()


def date_shift_days(key: Key, patient_id: str) -> int:
    """One shift per patient, from the key: between 365 and 3,649 days into the past."""
    n = int.from_bytes(key.digest("date-shift", patient_id.strip())[:4], "big")
    return -(365 + n % (365 * 9))


def shift_da(value: str, days: int) -> str:
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        try:
            d = _dt.date(int(v[:4]), int(v[4:6]), int(v[6:8])) + _dt.timedelta(days=days)
            return d.strftime("%Y%m%d")
        except ValueError:
            return DUMMY_DATE
    return DUMMY_DATE if v else v


def shift_dt(value: str, days: int) -> str:
    v = value.strip()
    if len(v) >= 8 and v[:8].isdigit():
        return shift_da(v[:8], days) + v[8:]
    return DUMMY_DT if v else v


_SCRUB_PATTERNS = [
    re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"),  # dates written out
    re.compile(r"\b(19|20)\d{6}\b"),  # DICOM dates
    re.compile(r"\b\d+(\.\d+){3,}\b"),  # UIDs
    re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),  # e-mail
    re.compile(r"\+?\d[\d ()-]{6,}\d"),  # phone / long numbers
    re.compile(r"\b[A-Za-z]*\d[A-Za-z\d]{4,}\b"),  # ID-like tokens (MRN, accession)
]


def clean_text(text: str, identifiers: frozenset[str]) -> str:
    """Clean (action C) free text: remove the file's own identifying values, then anything that
    looks like a date, UID, e-mail, phone number or ID. Medical wording is kept."""
    out = text
    for ident in sorted(identifiers, key=len, reverse=True):
        out = re.sub(re.escape(ident), " ", out, flags=re.IGNORECASE)
    for pat in _SCRUB_PATTERNS:
        out = pat.sub(" ", out)
    return " ".join(out.split())


_ACTION_CACHE: dict[tuple, dict[int, tuple]] = {}
# options whose C actions clean free text (the others' C only shift dates or remap)
TEXT_CLEANING_OPTIONS = {"clean-descriptors", "clean-structured-content", "clean-graphics",
                         "retain-patient-characteristics", "retain-device-identity"}


@dataclass
class Context:
    key: Key
    options: tuple[str, ...]
    family: str
    patient_id: str
    identifiers: frozenset[str]
    actions: Counter = field(default_factory=Counter)
    shift: int = 0

    def __post_init__(self) -> None:
        self.shift = date_shift_days(self.key, self.patient_id)
        self.table = T.get_table()
        self.allow = T.allowlist(False)
        self.allow_ctx = T.allowlist(True)
        self.safe_private = "retain-safe-private" in self.options
        self.modified_dates = "retain-long-modified-dates" in self.options
        self.full_dates = "retain-long-full-dates" in self.options
        self.pdict = T.private_dictionary() if self.safe_private else {}
        self.actions_cache = _ACTION_CACHE.setdefault((self.options, self.family), {})

    def note(self, tag: int, action: str) -> None:
        self.actions[f"{tag:08X}:{action}"] += 1


def collect_identifiers(ds) -> frozenset[str]:
    """Identifying strings of one dataset (names and their components, IDs, institutions), used to
    clean free text. Taken from attributes the table lists, at every depth."""
    tbl = T.get_table()
    found: set[str] = set()

    def walk(d) -> None:
        for tag in list(d.keys()):
            try:
                vr = raw_vr(d, tag)
                if vr == "SQ":
                    for item in d[tag].value or []:
                        walk(item)
                    continue
                if vr not in ("PN", "LO", "SH") or tag.is_private:
                    continue
                row = tbl.row(int(tag))
                if row is None or row.basic == "K":
                    continue
                elem = d[tag]
                vals = elem.value if elem.VM > 1 else [elem.value]
                for v in vals:
                    s = str(v).strip()
                    if vr == "PN":
                        for comp in re.split(r"[\^=]", s):
                            if len(comp.strip()) >= 3:
                                found.add(comp.strip())
                    if len(s) >= 3:
                        found.add(s.replace("^", " ").strip() if vr == "PN" else s)
            except Exception:  # unreadable element: the engine removes it anyway
                continue

    walk(ds)
    return frozenset(found)


def raw_vr(d, tag) -> str | None:
    """VR of an element without decoding its value (dictionary VR for implicit VR files)."""
    raw = d.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return vr
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _dummy(elem, ctx: Context):
    vr = elem.VR
    if vr == "DA":
        return DUMMY_DATE
    if vr == "TM":
        return DUMMY_TIME
    if vr == "DT":
        return DUMMY_DT
    if vr in ("LO", "LT", "ST", "UT", "UC", "PN"):
        return DUMMY_TEXT
    if vr in ("SH", "CS", "AE"):
        return "ANON"
    if vr == "AS":
        return "000Y"
    if vr in ("DS", "IS"):
        return "0"
    if vr == "UR":
        return "urn:x-anonymized"
    if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        return b"\x00\x00"
    if vr in ("FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"):
        return 0
    return None


def _values(elem) -> list:
    v = elem.value
    if v is None or v == "":
        return []
    if elem.VM > 1:
        return list(v)
    return [v]


def _set_values(elem, vals: list) -> None:
    elem.value = vals if len(vals) > 1 else (vals[0] if vals else "")


def _apply(ds, elem, action: str, ctx: Context, in_clean: bool) -> None:
    tag = int(elem.tag)
    vr = elem.VR
    if action == "X":
        del ds[tag]
        return
    if vr == "SQ":
        if action == "Z":
            elem.value = []
            return
        # K, D, U, C: keep the sequence, apply every rule inside its items
        for item in elem.value or []:
            clean_dataset(item, ctx, in_clean or action == "C")
        return
    if action == "K":
        return
    if action == "U" or (vr == "UI" and action in ("D", "C")):
        _set_values(elem, [map_uid(ctx.key, str(v)) for v in _values(elem)])
        return
    if action in ("Z", "D") and tag in PSEUDONYM_DOMAINS:
        vals = _values(elem)
        if vals:
            # PatientName takes the pseudonym of the instance's PatientID (so names link like IDs);
            # every other identifier, PatientID in nested sequences included, its own value's
            src = ctx.patient_id if tag == 0x00100010 else str(vals[0])
            elem.value = pseudonym(ctx.key, PSEUDONYM_DOMAINS[tag], src)
        else:
            elem.value = ""
        return
    if action == "Z":
        elem.value = [] if vr == "SQ" else None
        return
    if action == "D":
        elem.value = _dummy(elem, ctx)
        return
    if action == "C":
        if vr in ("DA", "DT", "TM"):
            if ctx.modified_dates:
                if vr == "DA":
                    _set_values(elem, [shift_da(str(v), ctx.shift) for v in _values(elem)])
                elif vr == "DT":
                    _set_values(elem, [shift_dt(str(v), ctx.shift) for v in _values(elem)])
                # TM: the shift is a whole number of days, so the time of day is unchanged
            elif not ctx.full_dates:
                elem.value = _dummy(elem, ctx)
            return
        if vr == "PN":
            elem.value = DUMMY_TEXT
            return
        if vr == "AE":
            vals = _values(elem)
            elem.value = pseudonym(ctx.key, "ae", str(vals[0])) if vals else ""
            return
        if vr in TEXT_VRS:
            _set_values(elem, [clean_text(str(v), ctx.identifiers) for v in _values(elem)])
            return
        if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
            # overlay/curve bitmaps cannot be cleaned of burned-in text reliably: remove them
            del ds[tag]
            ctx.note(tag, "X(C)")
            return
        return  # numbers: nothing identifying to clean
    raise ValueError(f"unknown action {action!r}")


def _private_keep(ds, tag: int, ctx: Context) -> bool:
    if not ctx.safe_private:
        return False
    group, el = tag >> 16, tag & 0xFFFF
    if 0x0010 <= el <= 0x00FF:
        return True  # creator; dropped later if its block ends up empty
    creator_tag = (group << 16) | (el >> 8)
    creator = ds.get(creator_tag)
    if creator is None or not isinstance(creator.value, str):
        return False
    return ctx.pdict.get((group, creator.value.strip(), el & 0xFF)) == "K"


def clean_dataset(ds, ctx: Context, in_clean: bool = False) -> None:
    """Apply the profile to ``ds`` in place, recursing into every sequence item."""
    for tag in list(ds.keys()):
        itag = int(tag)
        group, el = itag >> 16, itag & 0xFFFF
        if el == 0 or group == 0x0002 or group == 0xFFFE:
            del ds[tag]
            ctx.note(itag, "X(group)")
            continue
        if itag in _DEID_TAGS:
            continue  # rewritten below by mark_deidentified
        # decide before decoding: removed and allow-listed plain values are never decoded
        if group % 2 == 1:
            keep = _private_keep(ds, itag, ctx)
        else:
            hit = ctx.actions_cache.get(itag)
            if hit is None:
                row = ctx.table.row(itag)
                act = T.resolve(row.code(ctx.options), row.keyword, ctx.family) if row else None
                hit = ctx.actions_cache[itag] = (row, act)
            row, action = hit
            if row is not None:
                if action == "X":
                    del ds[tag]
                    ctx.note(itag, "X")
                    continue
            elif itag in ctx.allow or (in_clean and itag in ctx.allow_ctx):
                vr = raw_vr(ds, tag)
                if vr != "SQ" and not (in_clean and vr in TEXT_VRS and itag not in ctx.allow):
                    continue  # kept as read
            else:
                del ds[tag]
                ctx.note(itag, "X(not-allowed)")
                continue
        if group % 2 == 1 and not keep:
            del ds[tag]
            ctx.note(itag, "X(private)")
            continue
        try:
            elem = ds[tag]
        except Exception:  # undecodable value: cannot be judged, so it goes
            del ds[tag]
            ctx.note(itag, "X(unreadable)")
            continue
        if group % 2 == 1:
            if keep:
                ctx.note(itag, "K(safe-private)")
                if elem.VR == "SQ":
                    for item in elem.value or []:
                        clean_dataset(item, ctx, in_clean)
            else:
                del ds[tag]
                ctx.note(itag, "X(private)")
            continue
        if row is not None:
            ctx.note(itag, action)
            _apply(ds, elem, action, ctx, in_clean)
            continue
        if itag in ctx.allow or (in_clean and itag in ctx.allow_ctx):
            if elem.VR == "SQ":
                for item in elem.value or []:
                    clean_dataset(item, ctx, in_clean)
            elif in_clean and elem.VR in TEXT_VRS and itag not in ctx.allow:
                _set_values(elem, [clean_text(str(v), ctx.identifiers) for v in _values(elem)])
                ctx.note(itag, "C")
            continue
        del ds[tag]
        ctx.note(itag, "X(not-allowed)")
    if ctx.safe_private:
        _drop_empty_private_blocks(ds)


def _drop_empty_private_blocks(ds) -> None:
    used: set[tuple[int, int]] = set()
    creators = []
    for tag in ds.keys():
        g, e = tag.group, tag.element
        if g % 2 == 1:
            if 0x0010 <= e <= 0x00FF:
                creators.append(tag)
            elif e > 0x00FF:
                used.add((g, e >> 8))
    for tag in creators:
        if (tag.group, tag.element) not in used:
            del ds[tag]


def mark_deidentified(ds, ctx: Context, extra_codes: tuple[tuple[str, str], ...] = ()) -> None:
    """PatientIdentityRemoved, DeidentificationMethod(+CodeSequence), temporal-info flag."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from medgen import __version__

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [f"medgen {__version__}",
                                 f"PS3.15 E.1-1 {T.table_edition()}"[:64]] + list(ctx.options)
    codes = [("113100", "Basic Application Confidentiality Profile")]
    oc = T.option_codes()
    codes += [oc[o] for o in ctx.options] + list(extra_codes)
    items = []
    for value, meaning in codes:
        it = Dataset()
        it.CodeValue = value
        it.CodingSchemeDesignator = "DCM"
        it.CodeMeaning = meaning
        items.append(it)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED" if ctx.modified_dates else "UNMODIFIED" if ctx.full_dates else "REMOVED")
