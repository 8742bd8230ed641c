"""Output file and folder names: no identifier of the inputs survives in a path component.

Three kinds of text are replaced by keyed pseudonyms (the same for every file, so folders stay
together and BIDS pairs stay paired):

* values of the headers and sidecars (patient names and their components, IDs, accession
  numbers, dates, UIDs), wherever they occur inside a component, in any letter case;
* the initials of every patient name seen (``JD``, ``J.D.``, ``DJ``) as a separate token;
* anything that reads as a calendar date in any common format (``2024-03-05``, ``05.03.2024``,
  ``20240305``, ``2024.03.05``, ``2024_03_05``, ``05-03-24``) and digit runs of seven or more
  (record numbers), whether or not a header holds them.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from medgen.keys import Key

SUFFIX = re.compile(r"(\.nii\.gz|\.nii|\.dcm|\.dicom|\.ima|\.dc3|\.json|\.hdr|\.img|\.gz|\.bin)$",
                    re.IGNORECASE)
_SEP = r"[-._ /]"
_DATES = [
    re.compile(rf"(?<!\d)(?P<y>(19|20)\d\d){_SEP}?(?P<m>\d\d){_SEP}?(?P<d>\d\d)(?!\d)"),
    re.compile(rf"(?<!\d)(?P<d>\d\d){_SEP}(?P<m>\d\d){_SEP}(?P<y>(19|20)?\d\d)(?!\d)"),
    re.compile(rf"(?<!\d)(?P<m>\d\d){_SEP}(?P<d>\d\d){_SEP}(?P<y>(19|20)\d\d)(?!\d)"),
]
_LONG_DIGITS = re.compile(r"(?<!\d)\d{7,}(?!\d)")


def name_tokens(vals: list[str]) -> set[str]:
    """Identifying tokens (lower case) for file-name mapping, from header/sidecar values."""
    out = set()
    for v in vals:
        for part in [v] + re.split(r"[\^=\s,]+", v):
            t = part.strip().lower()
            if len(t) >= 3 and not (t.isdigit() and len(t) < 4):
                out.add(t)
    return out


def initials(vals: list[str]) -> set[str]:
    """Initials of person names written with carets (``DOE^JOHN`` -> ``jd``, ``dj``)."""
    out = set()
    for v in vals:
        if "^" not in v:
            continue
        comps = [c.strip() for c in v.split("=")[0].split("^")[:2] if c.strip()]
        if len(comps) == 2 and comps[0][0].isalpha() and comps[1][0].isalpha():
            fam, given = comps[0][0].lower(), comps[1][0].lower()
            out.update({given + fam, fam + given})
    return out


def _valid(y: str, m: str, d: str) -> bool:
    year = int(y) if len(y) == 4 else 2000 + int(y)
    try:
        _dt.date(year, int(m), int(d))
    except ValueError:
        return False
    return True


def _replace_dates(stem: str, key: Key) -> str:
    for rx in _DATES:
        def sub(m: re.Match) -> str:
            if not _valid(m["y"], m["m"], m["d"]):
                return m.group(0)
            return key.hex("path-date", m.group(0), 10)
        stem = rx.sub(sub, stem)
    return _LONG_DIGITS.sub(lambda m: key.hex("path-id", m.group(0), 10), stem)


def map_component(stem: str, tokens: set[str], inits: set[str], key: Key) -> str:
    low = stem.lower()
    for t in sorted((t for t in tokens if t in low), key=len, reverse=True):
        stem = re.sub(re.escape(t), key.hex("path", t, 10), stem, flags=re.IGNORECASE)
    for i in inits:
        rx = re.compile(rf"(?<![A-Za-z]){i[0]}\.?{i[1]}\.?(?![A-Za-z])", re.IGNORECASE)
        stem = rx.sub(lambda m: key.hex("path-initials", m.group(0).lower(), 6), stem)
    return _replace_dates(stem, key)


def map_name(rel: Path, tokens: set[str], key: Key, inits: set[str] = frozenset()) -> Path:
    """Replace identifying text inside each path component by keyed pseudonyms (see module)."""
    parts = []
    for i, comp in enumerate(rel.parts):
        is_file = i == len(rel.parts) - 1
        m = SUFFIX.search(comp) if is_file else None
        stem, suffix = (comp[: m.start()], comp[m.start():]) if m else (comp, "")
        parts.append(map_component(stem, tokens, inits, key) + suffix)
    return Path(*parts)
