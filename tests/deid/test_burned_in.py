"""Burned-in text on real ultrasound / secondary-capture files: found by OCR, blanked, or
quarantined when OCR is unsure; overlays in pixel bits; per-modality report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file

from medgen.deid import deidentify, verify
from medgen.deid.burned_in import PixelTerms, classify
from medgen.deid.ocr import Word, tesseract_path

needs_ocr = pytest.mark.skipif(tesseract_path() is None,
                               reason="tesseract-ocr not installed (make test installs it)")


def _render(arr: np.ndarray, lines: list[tuple[int, int, str]], value=255) -> np.ndarray:
    """Draw text into a frame (uint8 grey or RGB) like a scanner's annotation layer."""
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=16)
    fill = (value,) * 3 if img.mode == "RGB" else value
    for x, y, text in lines:
        d.text((x, y), text, fill=fill, font=font)
    return np.asarray(img).copy()


def _planted_us(path, frames: int = 1):
    """A real US file (OBXXXX1A, palette colour) turned grey, with the header's own patient name,
    ID and date burned into every frame."""
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.PatientName = "QUIXOTE^DULCINEA"
    ds.PatientID = "MRN4471983"
    ds.StudyDate = "20230917"
    base = ds.pixel_array
    out = []
    for f in range(frames):
        out.append(_render(base, [(60, 150, "QUIXOTE DULCINEA"), (60, 175, "ID MRN4471983"),
                                  (60, 200, f"17.09.2023 FRAME {f + 1}")]))
    arr = np.stack(out) if frames > 1 else out[0]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return arr


def _text_left(orig: np.ndarray, new: np.ndarray) -> float:
    """Fraction of the planted name / ID / date text pixels (pure white) still white."""
    left = total = 0
    for ys, xs in ((slice(150, 172), slice(55, 260)), (slice(175, 197), slice(84, 260)),
                   (slice(200, 222), slice(55, 140))):
        white = (orig[ys, xs] == 255).all(axis=-1)
        total += white.sum()
        left += (white & (new[ys, xs] == 255).all(axis=-1)).sum()
    assert total > 200
    return left / total


@needs_ocr
def test_planted_identifiers_blanked_in_every_frame(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    orig = _planted_us(src / "cine.dcm", frames=3)
    rep = deidentify(src, tmp_path / "out", key=key)
    assert rep.ok == 1, rep.quarantined
    ds = pydicom.dcmread(tmp_path / "out" / "cine.dcm")
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian  # lossless
    new = ds.pixel_array
    for f in range(3):
        assert _text_left(orig[f], new[f]) < 0.05  # >= 95% of the words' pixels blanked
        assert np.array_equal(orig[f][300:], new[f][300:])  # the image itself is untouched
    rec = json.loads((tmp_path / "out" / "_deid" / "audit.jsonl").read_text().splitlines()[0])
    assert rec["pixels"]["frames"] == 3 and rec["pixels"]["blanked"] >= 9
    assert rep.modality_table() == [("US", 0, 1, 0, 0)]
    assert verify(tmp_path / "out", original=src).ok


@needs_ocr
def test_ocr_off_or_unsure_quarantines_with_reason(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    _planted_us(src / "us.dcm")
    rep = deidentify(src, tmp_path / "o1", key=key, ocr=False)
    assert rep.ok == 0 and "OCR off" in rep.quarantined[0][1]
    assert rep.modality_table() == [("US", 0, 0, 0, 1)]
    # a word that could be an ID, read with low confidence: unsure
    w = Word(0, 0, 10, 10, "4471?83", 12.0)
    assert classify(w, PixelTerms()) in ("identifier", "unsure")
    w2 = Word(0, 0, 10, 10, "C5-1", 95.0)
    assert classify(w2, PixelTerms()) is None  # probe names are kept


def test_classify_rules():
    t = PixelTerms()
    t.add("QUIXOTE^DULCINEA")
    t.add_date("20230917")
    for text in ("QUIXOTE", "QUlXOTE", "2023-09-17", "17.09.2023", "20230917", "17-SEP-2023",
                 "MRN12345", "1234567"):
        assert classify(Word(0, 0, 1, 1, text, 90.0), t) == "identifier", text
    for text in ("C5-1", "28Hz", "2D", "CINE", "TIS0.4", "3cm"):
        assert classify(Word(0, 0, 1, 1, text, 90.0), t) is None, text


@needs_ocr
def test_real_us_files_cleaned_not_discarded(tmp_path, key):
    """Real US images nobody on the team wrote (institution name burned in, palette colour,
    16-bit palette, JPEG 2000): kept with identifying words blanked, none quarantined."""
    src = tmp_path / "in"
    src.mkdir()
    for f in ("US1_UNCR.dcm", "OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm", "US1_J2KR.dcm"):
        shutil.copy(get_testdata_file(f), src / f)
    rep = deidentify(src, tmp_path / "out", key=key)
    assert not rep.quarantined and rep.ok == 4
    out = next((tmp_path / "out").glob("*UNCR.dcm"))
    new = pydicom.dcmread(out).pixel_array
    old = pydicom.dcmread(src / "US1_UNCR.dcm").pixel_array
    assert old[24:40, 15:190].any() and not new[24:40, 15:190].any()  # "BAPTIST MED CTR"
    assert verify(tmp_path / "out", original=src).ok


def test_overlay_in_pixel_high_bits_cleared(tmp_path, key):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert ds.BitsAllocated == 16 and ds.BitsStored == 16
    ds.BitsStored, ds.HighBit = 12, 11
    arr = (ds.pixel_array.astype(np.uint16) & 0x0FFF)
    arr[:10, :10] |= 1 << 12  # an overlay plane in bit 12 (retired encoding)
    ds.PixelRepresentation = 0
    ds.PixelData = arr.astype("<u2").tobytes()
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60000011, "US", 64)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 12)
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "mr.dcm", enforce_file_format=True)
    rep = deidentify(src, tmp_path / "out", key=key)
    assert rep.ok == 1
    out = pydicom.dcmread(tmp_path / "out" / "mr.dcm")
    raw = np.frombuffer(out.PixelData, "<u2")
    assert not (raw >> 12).any()  # no bit above BitsStored survives
    assert not any(0x6000 <= (int(t) >> 16) <= 0x601E for t in out.keys())


@needs_ocr
def test_text_zone_blanks_any_text(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.save_as(src / "us.dcm")
    rules = tmp_path / "zones.yaml"
    rules.write_text("text_zones:\n  - name: top-right\n    modality: US\n"
                     "    box: [0.7, 0.0, 1.0, 0.25]\n")
    rep = deidentify(src, tmp_path / "out", key=key, pixel_rules=rules)
    assert rep.ok == 1
    old = ds.pixel_array
    new = pydicom.dcmread(next((tmp_path / "out").glob("*.dcm"))).pixel_array
    assert old[55:70, 525:600].any() and not new[55:70, 525:600].any()  # "CINE 0118"
