"""Burned-in pixel rules, NIfTI headers, BIDS sidecars, file-name pseudonyms, CLI key handling."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen.deid import deidentify, verify
from medgen.deid.pixel_rules import PixelRule, PixelRules

from .conftest import run_cli

RULES = Path(__file__).resolve().parents[2] / "configs" / "deid" / "pixel_rules.example.yaml"


def test_burned_in_quarantined_without_rule_blanked_with_rule(tmp_path, key, pydicom_data_dir):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("US1_UNCR.dcm"), src / "us_rgb.dcm")
    shutil.copy(pydicom_data_dir / "OBXXXX1A_rle_2frame.dcm", src / "us_rle_2f.dcm")
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.BurnedInAnnotation = "YES"
    ct.save_as(src / "ct_burned.dcm")
    rep = deidentify(src, tmp_path / "q", key=key, ocr=False)
    assert rep.ok == 0 and len(rep.quarantined) == 3
    assert all("burned-in" in r for _, r in rep.quarantined)
    assert not list((tmp_path / "q").rglob("*.dcm"))  # quarantine = no output
    rep = deidentify(src, tmp_path / "ok", key=key, pixel_rules=RULES, ocr=False)
    assert rep.ok == 2 and len(rep.quarantined) == 1  # the CT matches no rule
    for name, top in (("us_rgb.dcm", 60), ("us_rle_2f.dcm", 50)):
        ds = pydicom.dcmread(tmp_path / "ok" / name)
        assert ds.BurnedInAnnotation == "NO"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert "113101" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
        arr = ds.pixel_array
        orig = pydicom.dcmread(src / name).pixel_array
        frames = arr if int(ds.get("NumberOfFrames", 1)) > 1 else arr[None]
        oframes = orig if int(ds.get("NumberOfFrames", 1)) > 1 else orig[None]
        for f, o in zip(frames, oframes, strict=True):
            assert not f[:top].any()  # rectangle blanked in every frame
            assert o[:top].any()  # ... where the original had content
            assert np.array_equal(f[top:400], o[top:400])  # rest untouched
    assert verify(tmp_path / "ok").ok


def test_pixel_rule_validation():
    with pytest.raises(ValueError):
        PixelRules(rules=[{"name": "x", "manufacturer": "a", "model": "b", "rows": 0,
                           "columns": 1, "rectangles": [[0, 0, 1, 1]]}])
    r = PixelRule(name="x", manufacturer="a", model="b", rows=1, columns=1,
                  rectangles=[(0, 0, 1, 1)])
    assert r.rectangles == [(0, 0, 1, 1)]


def _nifti_with_text(path: Path) -> np.ndarray:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    h = img.header
    h["descrip"] = b"CANARYDOE 2019-04-11 scan"
    h["aux_file"] = b"CANARYAUX"
    h["intent_name"] = b"CANARYINT"
    h["db_name"] = b"CANARYDB"
    h.extensions.append(nib.nifti1.Nifti1Extension(6, b"CANARYDOE extension comment"))
    nib.save(img, path)
    return data


def test_nifti_headers_scrubbed_data_identical(tmp_path, key, nibabel_data):
    src = tmp_path / "in"
    src.mkdir()
    data = _nifti_with_text(src / "planted.nii.gz")
    for name in ("example4d.nii.gz", "example_nifti2.nii.gz", "anatomical.nii"):
        shutil.copy(nibabel_data / name, src / name)
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    pair = nib.Nifti1Pair(vol, np.eye(4))
    pair.header["descrip"] = b"CANARYDOE pair"
    nib.save(pair, src / "pair.hdr")  # writes pair.hdr + pair.img
    ana = nib.AnalyzeImage(vol, np.eye(4))
    ana.header["descrip"] = b"CANARYDOE analyze"
    nib.save(ana, src / "ana.hdr")
    rep = deidentify(src, tmp_path / "out", key=key)
    assert rep.ok == 6 and not rep.quarantined, rep.quarantined
    for p in sorted(src.iterdir()):
        if p.suffix == ".img":
            continue
        out = tmp_path / "out" / p.name
        a, b = nib.load(p), nib.load(out)
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        assert np.allclose(a.affine, b.affine)
        for f in ("descrip", "aux_file", "intent_name", "db_name"):
            if f in b.header:
                assert b.header[f].tobytes().strip(b"\x00") == b""
        assert len(getattr(b.header, "extensions", [])) == 0
    raw = gzip.open(tmp_path / "out" / "planted.nii.gz").read()
    assert b"canary" not in raw.lower()
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "out" / "planted.nii.gz").dataobj),
                          data)
    assert verify(tmp_path / "out", original=src).ok


def _bids(src: Path) -> None:
    anat = src / "sub-CANARYDOE" / "ses-20190411" / "anat"
    anat.mkdir(parents=True)
    _nifti_with_text(anat / "sub-CANARYDOE_ses-20190411_T1w.nii.gz")
    (anat / "sub-CANARYDOE_ses-20190411_T1w.json").write_text(json.dumps({
        "Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "Siemens",
        "EchoTime": 0.00298, "RepetitionTime": 2.3, "SliceTiming": [0.0, 0.5],
        "PatientName": "CANARYDOE^CANARYJOHN", "PatientID": "CANARY-PID-7734155",
        "PatientBirthDate": "1961-02-03", "AcquisitionDateTime": "2019-04-11T10:15:00.000000",
        "AcquisitionTime": "10:15:00.000000", "InstitutionName": "CANARY GENERAL HOSPITAL",
        "InstitutionAddress": "CANARY STREET 12", "DeviceSerialNumber": "CANARY-SN-1",
        "StationName": "CANARY-STATION", "SeriesDescription": "t1 for CANARYDOE",
        "ProtocolName": "CANARY-PROTOCOL", "ImageComments": "CANARY comment",
        "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.7734155.1",
        "ProcedureStepDescription": "CANARY-PROC", "SomeVendorString": "CANARY vendor",
    }))


def test_bids_sidecars_and_names(tmp_path, key):
    src = tmp_path / "in"
    _bids(src)
    dst = tmp_path / "out"
    rep = deidentify(src, dst, key=key)
    assert rep.ok == 2, rep.quarantined
    outs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()
                  and "_deid" not in p.parts)
    assert len(outs) == 2
    assert all("canary" not in o.lower() and "20190411" not in o for o in outs)
    assert all(o.startswith("sub-") and "/anat/" in o for o in outs)  # BIDS layout kept
    stems = {o.rsplit("/", 1)[1].split(".")[0] for o in outs}
    assert len(stems) == 1  # the sidecar still pairs with its image
    side = json.loads(next(dst.rglob("*.json")).read_text())
    assert side["EchoTime"] == 0.00298 and side["Modality"] == "MR"
    assert side["SliceTiming"] == [0.0, 0.5] and side["Manufacturer"] == "Siemens"
    for k in ("AcquisitionDateTime", "InstitutionName", "DeviceSerialNumber", "StationName",
              "InstitutionAddress", "ImageComments", "SomeVendorString", "AcquisitionTime"):
        assert k not in side, k
    assert side["StudyInstanceUID"].startswith("2.25.")
    assert "canary" not in json.dumps(side).lower()
    assert verify(dst, original=src).ok
    # options map to keys too
    dst2 = tmp_path / "out2"
    deidentify(src, dst2, key=key, options=("retain-long-modified-dates",
                                             "retain-device-identity",
                                             "retain-institution-identity"))
    side2 = json.loads(next(dst2.rglob("*.json")).read_text())
    assert side2["AcquisitionDateTime"][:10] != "2019-04-11"
    assert side2["AcquisitionDateTime"][10:] == "T10:15:00.000000"
    assert side2["DeviceSerialNumber"] == "CANARY-SN-1" and side2["StationName"] == "CANARY-STATION"
    assert side2["InstitutionName"] == "CANARY GENERAL HOSPITAL"


def test_cli_key_handling(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "a.dcm")
    r = run_cli("deid", str(src), str(tmp_path / "o1"))
    assert r.returncode == 2 and "key" in r.stderr and not (tmp_path / "o1" / "a.dcm").exists()
    kp = tmp_path / "keys" / "new.key"
    r = run_cli("deid", str(src), str(tmp_path / "o2"), "--create-key", str(kp))
    assert r.returncode == 0, r.stderr
    assert kp.exists() and str(kp) in r.stderr and (kp.stat().st_mode & 0o777) == 0o600
    secret = kp.read_text().strip()
    blob = r.stdout + r.stderr + (tmp_path / "o2" / "_deid" / "audit.jsonl").read_text()
    blob += (tmp_path / "o2" / "a.dcm").read_bytes().hex()
    assert secret not in blob and secret not in r.stdout
    r = run_cli("deid", str(src), str(tmp_path / "o3"), "--create-key", str(kp))
    assert r.returncode == 2  # never overwrite a key
    r = run_cli("deid", str(src), str(tmp_path / "o4"), "--option", "clean-descriptor",
                env={"MEDGEN_KEY_FILE": str(kp)})
    assert r.returncode == 2 and "clean-descriptors" in r.stderr
    r = run_cli("deid", str(src), str(src / "inside"), env={"MEDGEN_KEY_FILE": str(kp)})
    assert r.returncode == 2
    # a quarantined file gives exit 3, the good one still comes out
    (src / "notes.txt").write_text("hello")
    r = run_cli("deid", str(src), str(tmp_path / "o5"), env={"MEDGEN_KEY_FILE": str(kp)})
    assert r.returncode == 3 and "notes.txt: unsupported file type" in r.stderr
    assert (tmp_path / "o5" / "a.dcm").exists()


def test_names_from_data_are_replaced_everywhere(tmp_path, key):
    src = tmp_path / "in" / "DOE_JOHN_19610203"
    src.mkdir(parents=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientBirthDate = "Doe^John", "19610203"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.55.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(src / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    (src / "notes_john.txt").write_text("free text")  # quarantined, but named consistently
    (src / "scan.json").write_text(json.dumps({"EchoTime": 0.01}))
    rep = deidentify(tmp_path / "in", tmp_path / "out", key=key)
    assert rep.ok == 2 and len(rep.quarantined) == 1
    names = [p.relative_to(tmp_path / "out").as_posix()
             for p in (tmp_path / "out").rglob("*") if "_deid" not in p.parts]
    items = names + [i for i, _ in rep.quarantined]
    for n in items:
        low = n.lower()
        assert "doe" not in low and "john" not in low and "19610203" not in low, n
        assert "3680043.2.1125.55.1" not in n
    folders = {n.split("/")[0] for n in items}
    assert len(folders) == 1  # one folder, same pseudonym for every file in it
    assert verify(tmp_path / "out", original=tmp_path / "in").ok
