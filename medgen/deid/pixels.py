"""Burned-in pixel identifiers: which instances are at risk, and pixel rules that clean them.

A pixel rule file (YAML, see ``configs/deid/pixel_rules.example.yaml``)::

    rules:
      - name: acme-us-480x640
        manufacturer: "ACME"          # case-insensitive, exact after trimming
        model: "Sono 5"               # ManufacturerModelName, same matching
        rows: 480
        columns: 640
        rectangles:                   # [x, y, width, height] in pixels (column, row)
          - [0, 0, 640, 40]

A matching instance has every rectangle blanked (set to 0) in every frame; it is written
uncompressed in Explicit VR Little Endian with BurnedInAnnotation=NO and code 113101 (Clean Pixel
Data Option) in DeidentificationMethodCodeSequence.
"""

from __future__ import annotations

from pathlib import Path

AT_RISK_MODALITIES = {"US", "SC", "OT", "XC"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and .7.1 - .7.4
ENCAPSULATED_DOC = "1.2.840.10008.5.1.4.1.1.104."
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")


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
    if sop.startswith(ENCAPSULATED_DOC):
        return "encapsulated document without BurnedInAnnotation"
    if sop == SECONDARY_CAPTURE or sop.startswith(SECONDARY_CAPTURE + "."):
        return "secondary capture without BurnedInAnnotation"
    if mod in AT_RISK_MODALITIES:
        return f"modality {mod} without BurnedInAnnotation"
    return None


def match_rule(ds, rules):
    if "PixelData" not in ds:
        return None
    man = str(ds.get("Manufacturer", "") or "").strip().lower()
    model = str(ds.get("ManufacturerModelName", "") or "").strip().lower()
    for r in rules.rules:
        if (r.manufacturer.strip().lower() == man and r.model.strip().lower() == model
                and int(ds.get("Rows", 0) or 0) == r.rows
                and int(ds.get("Columns", 0) or 0) == r.columns):
            return r
    return None


def blank_rectangles(ds, rule) -> None:
    """Blank the rule's rectangles in every frame; leave ``ds`` uncompressed Explicit VR LE."""
    from pydicom.uid import ExplicitVRLittleEndian

    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()  # photometric interpretation updated by pydicom (e.g. YBR -> RGB)
    arr = ds.pixel_array.copy()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None, ...]
    for x, y, w, h in rule.rectangles:
        arr[:, max(y, 0): y + h, max(x, 0): x + w, ...] = 0
    if frames == 1:
        arr = arr[0]
    if spp > 1 and int(ds.get("PlanarConfiguration", 0) or 0) == 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
