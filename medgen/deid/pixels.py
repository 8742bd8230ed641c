"""Burned-in pixel identifiers: which instances are at risk, and how their pixels are cleaned.

An instance at risk (BurnedInAnnotation YES, or an at-risk modality / secondary capture without
the attribute) is cleaned in one decode of its pixel data:

1. a matching pixel rule's rectangles are blanked (site knowledge of a device's text layout);
2. unless OCR is switched off, every frame is read by the OCR engine and identifying words are
   blanked (:mod:`medgen.deid.burned_in`); text in a rule file's ``text_zones`` is blanked
   whatever it says;
3. the pixels are written back uncompressed (lossless; Explicit VR Little Endian when the
   input was compressed, else its own native transfer syntax), the instance
   says BurnedInAnnotation NO and carries code 113101 (Clean Pixel Data Option).

A pixel rule file (YAML, see ``configs/deid/pixel_rules.example.yaml``)::

    rules:
      - name: acme-us-480x640
        manufacturer: "ACME"          # case-insensitive, exact after trimming
        model: "Sono 5"               # ManufacturerModelName, same matching
        rows: 480
        columns: 640
        rectangles:                   # [x, y, width, height] in pixels (column, row)
          - [0, 0, 640, 40]
    text_zones:                       # any OCR text whose centre falls inside is blanked
      - name: us-top-band
        modality: US                  # optional; manufacturer optional too
        box: [0.0, 0.0, 1.0, 0.12]    # [x0, y0, x1, y1] as fractions of columns / rows

Nothing is decided from pixel values alone without OCR: with OCR off (``ocr=False``) and no rule,
an at-risk instance is quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AT_RISK_MODALITIES = {"US", "SC", "OT", "XC", "XA", "RF", "ES", "GM", "OP", "IO", "DOC"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and .7.1 - .7.4
ENCAPSULATED_DOC = "1.2.840.10008.5.1.4.1.1.104."
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")


class PixelQuarantine(Exception):
    """The pixels cannot be cleaned with certainty; ``str(exc)`` is a one-line reason."""


@dataclass
class PixelOutcome:
    """What happened to one instance's pixels (for the audit and the per-modality report)."""

    action: str  # "redacted" (pixels changed) or "clean" (OCR found nothing to blank)
    frames: int = 0
    words: int = 0
    blanked: int = 0
    engine: str = ""

    def record(self) -> dict:
        return {"action": self.action, "frames": self.frames, "ocr_words": self.words,
                "blanked": self.blanked, "engine": self.engine}


def load_pixel_rules(path: str | Path | None):
    """Load and validate a pixel rule YAML (one-line error on a bad file); see pixel_rules.py."""
    from medgen.deid.pixel_rules import load_pixel_rules as _load

    return _load(path)


def burned_in_risk(ds) -> str | None:
    """Why this instance may carry burned-in identifiers, or None."""
    bia = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if bia == "YES":
        return "BurnedInAnnotation is YES"
    if bia:
        return None
    sop = str(ds.get("SOPClassUID", "") or "")
    mod = str(ds.get("Modality", "") or "").strip().upper()
    if sop == SECONDARY_CAPTURE or sop.startswith(SECONDARY_CAPTURE + "."):
        return "secondary capture without BurnedInAnnotation"
    if mod in AT_RISK_MODALITIES:
        return f"modality {mod} without BurnedInAnnotation"
    return None


def is_encapsulated_document(ds) -> bool:
    return str(ds.get("SOPClassUID", "") or "").startswith(ENCAPSULATED_DOC) \
        or "EncapsulatedDocument" in ds


def match_rule(ds, rules):
    if rules is None or "PixelData" not in ds:
        return None
    man = str(ds.get("Manufacturer", "") or "").strip().lower()
    model = str(ds.get("ManufacturerModelName", "") or "").strip().lower()
    for r in rules.rules:
        if (r.manufacturer.strip().lower() == man and r.model.strip().lower() == model
                and int(ds.get("Rows", 0) or 0) == r.rows
                and int(ds.get("Columns", 0) or 0) == r.columns):
            return r
    return None


def text_zones(ds, rules) -> list[tuple[float, float, float, float]]:
    if rules is None:
        return []
    man = str(ds.get("Manufacturer", "") or "").strip().lower()
    mod = str(ds.get("Modality", "") or "").strip().upper()
    return [tuple(z.box) for z in rules.text_zones
            if (not z.modality or z.modality.upper() == mod)
            and (not z.manufacturer or z.manufacturer.strip().lower() == man)]


def _frames(ds):
    """Decoded pixels as a writeable (frames, rows, cols[, samples]) array (decompressing)."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()  # photometric interpretation updated by pydicom (e.g. YBR -> RGB)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None, ...]
    return arr.copy()


def clear_overlay_bits(ds) -> bool:
    """Overlays stored in the unused high bits of the pixel data (retired, 60xx,0102 > 0 and no
    60xx,3000) can hold burned-in text and survive the removal of the 60xx attributes: clear
    every bit above BitsStored in native pixel data. True when bits were cleared."""
    groups = {t >> 16 for t in (int(k) for k in ds.keys()) if 0x6000 <= t >> 16 <= 0x601E}
    in_pixels = [g for g in groups if (g << 16 | 0x3000) not in ds
                 and int(ds.get(g << 16 | 0x0102, None) and ds[g << 16 | 0x0102].value or 0) > 0]
    if not in_pixels or "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return False
    import numpy as np

    bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if bits != 16 or stored >= 16:
        return False
    dt = np.dtype("<u2" if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2" else ">u2")
    raw = np.frombuffer(ds.PixelData, dtype=dt).copy()
    mask = (1 << stored) - 1
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:  # signed: keep the sign extension
        sign = (raw >> (stored - 1)) & 1
        raw = np.where(sign == 1, raw | ~np.uint16(mask), raw & mask).astype(dt)
    else:
        raw &= mask
    ds.PixelData = raw.tobytes()
    return True


def _write_back(ds, arr) -> None:
    """Store ``arr`` uncompressed: the input's own native transfer syntax when it had one (pydicom
    cannot switch a dataset's byte order), else Explicit VR Little Endian."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    ts = ds.file_meta.TransferSyntaxUID
    big = ts == ExplicitVRBigEndian
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    out = arr if frames > 1 else arr[0]
    if spp > 1:
        if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
            ds.PlanarConfiguration = 0  # pixel_array is interleaved
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"  # pixel_array converted YBR to RGB
    ds.PixelData = out.astype(out.dtype.newbyteorder(">" if big else "<")).tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    if ts.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def clean_pixels(ds, rule=None, zones=(), terms=None, ocr: bool = True,
                 blank_unsure: bool = False) -> PixelOutcome:
    """Blank the rule's rectangles and the identifying OCR words in every frame (see module
    docstring); raise :class:`PixelQuarantine` when that cannot be done with certainty."""
    from medgen.deid import burned_in
    from medgen.deid import ocr as ocr_mod

    if "PixelData" not in ds:
        raise PixelQuarantine("burned-in risk without pixel data to check")
    engine = ""
    if ocr:
        try:
            engine = ocr_mod.engine_version()
        except ocr_mod.OcrUnavailable as exc:
            raise PixelQuarantine(str(exc)) from None
    try:
        arr = _frames(ds)
    except Exception as exc:
        raise PixelQuarantine(f"pixel data cannot be decoded ({type(exc).__name__})") from None
    out = PixelOutcome(action="clean", frames=len(arr), engine=engine)
    if rule is not None:
        for x, y, w, h in rule.rectangles:
            arr[:, max(y, 0): y + h, max(x, 0): x + w, ...] = 0
        out.action = "redacted"
    if ocr:
        try:
            red = burned_in.redact_frames(ds, arr, terms or burned_in.PixelTerms(), zones,
                                          blank_unsure)
        except ocr_mod.OcrUnavailable as exc:
            raise PixelQuarantine(str(exc)) from None
        if red.unsure and not blank_unsure:
            raise PixelQuarantine(f"burned-in text: OCR unsure about {red.unsure} word(s) that "
                                  f"may be identifiers (confidence < {burned_in.UNSURE_CONF:.0f})")
        out.words, out.blanked = red.words, red.blanked
        if red.blanked:
            out.action = "redacted"
    if out.action == "redacted":
        _write_back(ds, arr)
    ds.BurnedInAnnotation = "NO"
    return out
