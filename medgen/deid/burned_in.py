"""Burned-in text: find it with OCR in every frame, blank what identifies, or quarantine.

An instance at risk (see :func:`medgen.deid.pixels.burned_in_risk`) has its pixel data decoded
(every frame of a cine), rendered as a viewer would show it (palette applied), and read by the
OCR engine (:mod:`medgen.deid.ocr`). A recognised word is **blanked** (its box, padded, set to the
image's background value in the stored pixels) when

* it matches an identifier of the file's own header (name components, IDs, accession numbers,
  institution and staff names, any date of the header written in any common format), compared
  after normalisation and with one OCR error allowed in tokens of five or more characters; or
* it looks like an identifier whatever the header says: a date (``05.03.2024``, ``2024-03-05``,
  ``20240305``, ``05-MAR-2024``), a run of five or more digits (MRN, accession), a letters+digits
  ID; or
* it lies in a configured text zone (``text_zones`` in the pixel-rule file).

A word the engine read with low confidence that could be an identifier (four or more characters
with digits in it, or close to a header value) makes the file **unsure**: it is quarantined with
the reason, unless the caller asked to blank unsure words too. The result is written uncompressed
(lossless) and marked BurnedInAnnotation NO with code 113101 (Clean Pixel Data Option).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from medgen.deid.ocr import Word, read_words

UNSURE_CONF = 40.0  # below this, a word that could be an identifier is "unsure"
PAD = 3  # pixels added around a blanked word box
_DATE_RES = [
    re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}"),
    re.compile(r"(19|20)\d{6}"),
    re.compile(r"\d{1,2}[\-. ]?(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*[\-. ]?\d{2,4}",
               re.IGNORECASE),
]
_ID_RES = [re.compile(r"\d{5,}"), re.compile(r"[A-Z]{1,4}\d{4,}", re.IGNORECASE)]
_NAME_VRS = ("PN", "LO", "SH")


@dataclass
class PixelTerms:
    """Identifying tokens of one header, normalised (upper-case letters and digits only)."""

    tokens: set[str] = field(default_factory=set)

    def add(self, value: str) -> None:
        for part in re.split(r"[\^=\s,.;:/\\_\-]+", value):
            t = _norm(part)
            if len(t) >= 3 and not (t.isdigit() and len(t) < 4):
                self.tokens.add(t)
        whole = _norm(value)
        if len(whole) >= 4:
            self.tokens.add(whole)

    def add_date(self, value: str) -> None:
        v = re.sub(r"\D", "", value)[:8]
        if len(v) != 8:
            return
        y, m, d = v[:4], v[4:6], v[6:8]
        for form in (y + m + d, d + m + y, m + d + y, d + m + y[2:], m + d + y[2:], y[2:] + m + d):
            self.tokens.add(form)


def _norm(s: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", s.upper())


def header_terms(ds) -> PixelTerms:
    """Tokens of every name, ID and date in the header (top level and sequences), read before
    the header is cleaned. Any PN/LO/SH/DA/DT value can be burned into pixels."""
    from medgen.deid.table import get_table

    table = get_table()
    terms = PixelTerms()

    def walk(d, depth: int) -> None:
        for el in d:
            try:
                vr = el.VR
                if vr == "SQ":
                    if depth < 4:
                        for it in el.value or []:
                            walk(it, depth + 1)
                    continue
                if vr not in _NAME_VRS + ("DA", "DT") or el.tag.is_private:
                    continue
                row = table.row(int(el.tag))
                if row is None or row.basic == "K":
                    continue  # technical or kept values (Manufacturer, ...) are not identifiers
                vals = el.value if el.VM > 1 else [el.value]
            except Exception:
                continue
            for v in vals:
                if v in (None, ""):
                    continue
                (terms.add_date if vr in ("DA", "DT") else terms.add)(str(v))

    walk(ds, 0)
    return terms


def _close(a: str, b: str) -> bool:
    """Edit distance <= 1 (one OCR error) between a and b."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def classify(word: Word, terms: PixelTerms) -> str | None:
    """'identifier' (blank it), 'unsure' (may be one, read badly) or None (keep)."""
    raw = word.text.strip()
    n = _norm(raw)
    if len(n) < 2:
        return None
    if any(r.search(raw) for r in _DATE_RES) or any(r.fullmatch(n) or r.search(n)
                                                    for r in _ID_RES):
        return "identifier"
    for t in terms.tokens:
        if t in n or (len(t) >= 5 and len(n) >= 4 and (
                _close(n, t) or any(_close(n[i:i + len(t)], t) for i in range(len(n) - len(t) + 1)))):
            return "identifier"
    if word.conf < UNSURE_CONF and len(n) >= 4:
        digits = sum(c.isdigit() for c in n)
        if (digits >= 4 and ":" not in raw) or any(len(t) >= 4 and _close(n[: len(t)], t) for t in terms.tokens):
            return "unsure"
    return None


def reread(frame: np.ndarray, w: Word) -> Word | None:
    """Read one word again from its own crop (single-line mode, twice the size)."""
    from medgen.deid.ocr import read_line

    pad = 2 * PAD
    y0, x0 = max(w.y - pad, 0), max(w.x - pad, 0)
    got = read_line(frame[y0: w.y + w.h + pad, x0: w.x + w.w + pad])
    if not got:
        return None
    text = " ".join(g.text for g in got if g.text)
    conf = min((g.conf for g in got if g.text), default=-1.0)
    return Word(w.x, w.y, w.w, w.h, text, conf)


@dataclass
class Redaction:
    frames: int = 0
    words: int = 0
    blanked: int = 0
    unsure: int = 0
    zone_hits: int = 0


def display_frames(ds, arr: np.ndarray) -> np.ndarray:
    """What a viewer shows: palette applied; (frames, rows, cols[, 3])."""
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    return arr


def background(ds, arr: np.ndarray):
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    if pi == "MONOCHROME1":
        return arr.max()
    if pi == "PALETTE COLOR":
        return arr.min()  # the lowest palette index; the palette usually maps it to black
    return arr.min() if arr.ndim and arr.size else 0


def _in_zone(w: Word, zones: Iterable[tuple[float, float, float, float]], shape) -> bool:
    rows, cols = shape[:2]
    cx, cy = (w.x + w.w / 2) / cols, (w.y + w.h / 2) / rows
    return any(x0 <= cx <= x1 and y0 <= cy <= y1 for x0, y0, x1, y1 in zones)


def _box(w: Word, rows: int, cols: int) -> tuple[int, int, int, int]:
    """The word's box padded: PAD pixels, and half a character height sideways (OCR boxes often
    cut the first or last glyph of a word)."""
    side = PAD + w.h // 2
    return (max(w.x - side, 0), max(w.y - PAD, 0), min(w.x + w.w + side, cols),
            min(w.y + w.h + PAD, rows))


def _overlap(w: Word, boxes: list[tuple[int, int, int, int]]) -> float:
    """Fraction of ``w``'s box covered by the union-free sum of ``boxes`` (capped at 1)."""
    area = max(w.w * w.h, 1)
    cov = 0
    for x0, y0, x1, y1 in boxes:
        ix = max(0, min(w.x + w.w, x1) - max(w.x, x0))
        iy = max(0, min(w.y + w.h, y1) - max(w.y, y0))
        cov += ix * iy
    return min(1.0, cov / area)


def _decide(frame: np.ndarray, words: list[Word], terms: PixelTerms, zones, shape,
            res: Redaction) -> tuple[list[tuple[int, int, int, int]], list[Word]]:
    """(boxes to blank, unsure words not covered by them) for one frame."""
    rows, cols = shape
    boxes, unsure = [], []
    for w in words:
        res.words += 1
        kind = classify(w, terms)
        if kind == "unsure":  # a second, closer look at this word alone
            again = reread(frame, w)
            if again is not None and again.conf >= UNSURE_CONF:
                kind = classify(again, terms)
        if kind is None and zones and _norm(w.text) and _in_zone(w, zones, (rows, cols)):
            kind = "identifier"
            res.zone_hits += 1
        if kind == "unsure":
            unsure.append(w)
        elif kind is not None:
            boxes.append(_box(w, rows, cols))
    # the two readings of a frame overlap: an unsure word inside blanked boxes is resolved
    unsure = [w for w in unsure if _overlap(w, boxes) < 0.5]
    return boxes, unsure


def redact_frames(ds, arr: np.ndarray, terms: PixelTerms, zones=(), blank_unsure: bool = False,
                  threads: int = 2) -> Redaction:
    """OCR every frame of ``arr`` (frames first) and blank identifying words in place."""
    shown = display_frames(ds, arr)
    # identical frames (static cine segments) are read once
    keys = [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest()
            for f in shown]
    uniq = {k: i for i, k in reversed(list(enumerate(keys)))}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        found = dict(zip(uniq, ex.map(lambda i: read_words(shown[i]), uniq.values())))
    res = Redaction(frames=len(arr))
    fill = background(ds, arr)
    rows, cols = arr.shape[1:3]
    for fi, k in enumerate(keys):
        boxes, unsure = _decide(shown[fi], found[k], terms, zones, (rows, cols), res)
        res.unsure += len(unsure)
        if blank_unsure:
            boxes += [_box(w, rows, cols) for w in unsure]
        for x0, y0, x1, y1 in boxes:
            arr[fi, y0:y1, x0:x1, ...] = fill
        res.blanked += len(boxes)
    return res
