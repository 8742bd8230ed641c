"""Issue 13.3/13.4 (deid side): truncated DICOM files are quarantined, never written as ok;
dates and name fragments never survive in output file or folder names, and the verifier
catches them when they do."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen.deid import deidentify, verify
from medgen.deid.paths import map_name
from medgen.deid.verifier import holds_date

CASES = [  # (file, fraction kept): header, native pixels, JPEG, RLE, JPEG 2000
    ("CT_small.dcm", 0.05), ("CT_small.dcm", 0.5), ("CT_small.dcm", 0.99),
    ("693_UNCI.dcm", 0.7), ("SC_rgb_jpeg.dcm", 0.5), ("MR_small_RLE.dcm", 0.999),
    ("MR_small_RLE.dcm", 0.9), ("US1_J2KR.dcm", 0.8), ("rtplan.dcm", 0.5), ("JPEG-lossy.dcm", 0.95),
]


@pytest.mark.parametrize(("name", "frac"), CASES)
def test_truncated_dicom_quarantined(tmp_path, key, name, frac):
    data = open(get_testdata_file(name), "rb").read()
    src = tmp_path / "in"
    src.mkdir()
    (src / "cut.dcm").write_bytes(data[: int(len(data) * frac)])
    rep = deidentify(src, tmp_path / "out", key=key, ocr=False)
    assert rep.ok == 0 and len(rep.quarantined) == 1
    reason = rep.quarantined[0][1]
    assert ("truncated" in reason or "corrupt DICOM" in reason or "not a DICOM" in reason
            or "no SOP Class UID" in reason), reason
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_whole_files_are_not_called_truncated(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("CT_small.dcm", "693_UNCI.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "rtplan.dcm",
              "emri_small_jpeg_2k_lossless.dcm", "MR_small_bigendian.dcm"):
        shutil.copy(get_testdata_file(n), src / n)
    rep = deidentify(src, tmp_path / "out", key=key, ocr=False)
    assert not [r for _, r in rep.quarantined if "truncated" in r], rep.quarantined


@pytest.mark.parametrize("date", ["2024-03-05", "05.03.2024", "20240305", "2024.03.05",
                                  "2024_03_05", "03-05-2024"])
def test_dates_and_initials_leave_names(tmp_path, key, date):
    src = tmp_path / "in" / f"visit_{date}" / "JD"
    src.mkdir(parents=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "PID-31337"
    ds.save_as(src / f"J.D._{date}_scan.dcm")
    (src / f"notes_{date}.json").write_text('{"PatientName": "DOE^JOHN"}')
    rep = deidentify(tmp_path / "in", tmp_path / "out", key=key)
    assert rep.ok == 2, rep.quarantined
    names = [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
             if "_deid" not in p.parts]
    joined = " ".join(names)
    assert date not in joined and "J.D." not in joined and "/JD" not in joined, names
    assert not any(holds_date(n) for n in names)
    assert verify(tmp_path / "out", original=tmp_path / "in").ok


def test_verifier_catches_dates_and_initials_in_names(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "DOE^JOHN"
    ds.save_as(src / "a.dcm")
    deidentify(src, tmp_path / "out", key=key)
    out = tmp_path / "out"
    for bad in ("2024-03-05", "05.03.2024", "20240305", "2024.03.05", "JD", "J.D"):
        folder = out / f"x_{bad}_y"
        folder.mkdir()
        shutil.copy(out / "a.dcm", folder / "a.dcm")
        rep = verify(out, original=src)
        assert any(f"x_{bad}_y" in f and "name holds" in f for f in rep.findings), bad
        shutil.rmtree(folder)
    assert verify(out, original=src).ok


def test_map_name_keeps_ordinary_names(key):
    p = map_name(__import__("pathlib").Path("series_003/IM000123.dcm"), set(), key)
    assert p.as_posix() == "series_003/IM000123.dcm"  # short numbers are not dates or IDs
