"""Keyed pseudonyms: determinism across processes, unlinkability, UID integrity, date shifts."""

from __future__ import annotations

import pydicom
from pydicom.data import get_testdata_file

from medgen.deid import deidentify
from medgen.deid.dicom import map_uid
from medgen.keys import create_key_file, load_key
from medgen.utils.hashing import sha256_file

from .canary import make_corpus
from .conftest import run_cli


def _tree(root):
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*.dcm"))}


def test_same_key_identical_outputs_in_two_processes(tmp_path, keyfile):
    src = tmp_path / "in"
    make_corpus(src, n=3)
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run_cli("deid", str(src), str(a), "--key-file", str(keyfile))
    rb = run_cli("deid", str(src), str(b), "--workers", "2", env={"MEDGEN_KEY_FILE": str(keyfile)})
    assert ra.returncode == 0 and rb.returncode == 0, ra.stderr + rb.stderr
    ta, tb = _tree(a), _tree(b)
    assert len(ta) == 3 and ta == tb  # same names, same bytes; workers=2 in another process


def test_another_key_is_unlinkable(tmp_path, key):
    src = tmp_path / "in"
    make_corpus(src, n=2)
    k2f = tmp_path / "k2"
    create_key_file(k2f)
    a, b = tmp_path / "a", tmp_path / "b"
    deidentify(src, a, key=key)
    deidentify(src, b, key=load_key(k2f))
    va = [pydicom.dcmread(p) for p in sorted(a.rglob("*.dcm"))]
    vb = [pydicom.dcmread(p) for p in sorted(b.rglob("*.dcm"))]
    assert len(va) == len(vb) == 2

    def values(dss):
        out = set()
        for ds in dss:
            for el in ds.iterall():
                if el.VR in ("UI", "LO", "SH", "PN") and el.value and str(el.value).startswith(
                        ("2.25.",)) or el.tag in (0x00100020, 0x00100010):
                    out.add(str(el.value))
        return out

    shared = values(va) & values(vb)
    assert not shared  # no UID or patient pseudonym in common
    assert va[0].PatientID != vb[0].PatientID and va[0].StudyInstanceUID != vb[0].StudyInstanceUID


def test_uid_references_stay_valid_inside_sequences(tmp_path, key):
    src = tmp_path / "in"
    src.mkdir()
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ref = base.copy()
    ref.SOPInstanceUID = "1.2.3.4.5.100"
    ref.file_meta.MediaStorageSOPInstanceUID = ref.SOPInstanceUID
    ref.save_as(src / "a.dcm", enforce_file_format=True)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.ReferencedSOPClassUID = ref.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    deep = Dataset()
    deep.ReferencedSOPClassUID = ref.SOPClassUID
    deep.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    item.SourceImageSequence = Sequence([deep])
    other = base.copy()
    other.SOPInstanceUID = "1.2.3.4.5.101"
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    other.ReferencedImageSequence = Sequence([item])
    other.save_as(src / "b.dcm", enforce_file_format=True)
    dst = tmp_path / "out"
    rep = deidentify(src, dst, key=key)
    assert rep.ok == 2, rep.quarantined
    a, b = pydicom.dcmread(dst / "a.dcm"), pydicom.dcmread(dst / "b.dcm")
    new = a.SOPInstanceUID
    assert new == map_uid(key, "1.2.3.4.5.100") and new.startswith("2.25.") and len(new) <= 64
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new
    assert b.ReferencedImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == new
    assert a.StudyInstanceUID == b.StudyInstanceUID != base.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == new
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == base.SOPClassUID  # class kept


def test_modified_dates_one_shift_per_patient_intervals_kept(tmp_path, key):
    import datetime as dt

    src = tmp_path / "in"
    src.mkdir()
    days = []
    for i, (pid, study) in enumerate([("P1", "20200110"), ("P1", "20200301"), ("P2", "20200110")]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.StudyDate, ds.SeriesDate = pid, study, "19700101"
        ds.AcquisitionDateTime = study + "101112.5"
        ds.SOPInstanceUID = f"1.2.3.9.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(src / f"{i}.dcm", enforce_file_format=True)
    dst = tmp_path / "out"
    rep = deidentify(src, dst, key=key, options=("retain-long-modified-dates",))
    assert rep.ok == 3, rep.quarantined

    def d(s):
        return dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))

    outs = [pydicom.dcmread(dst / f"{i}.dcm") for i in range(3)]
    for ds, study in zip(outs, ["20200110", "20200301", "20200110"], strict=True):
        shift = (d(ds.StudyDate) - d(study)).days
        assert shift != 0
        assert (d(ds.SeriesDate) - d("19700101")).days == shift  # intervals kept
        assert ds.PatientBirthDate == ""  # not in the modified-dates column: Z
        assert ds.AcquisitionDateTime[:8] == ds.StudyDate and ds.AcquisitionDateTime[8:] == "101112.5"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert "113107" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
        days.append(shift)
    assert days[0] == days[1]  # same patient, same shift
    assert (d(outs[1].StudyDate) - d(outs[0].StudyDate)).days == 51
    assert days[2] != days[0]  # another patient (keyed by PatientID)
