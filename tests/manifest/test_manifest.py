"""Manifests over real public files: build, reject list, digest, split by subject, validate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pydicom
import pytest

from medgen.keys import load_key
from medgen.manifest import Manifest
from medgen.manifest.build import build_manifest
from medgen.manifest.ops import split_manifest, validate_manifest


@pytest.fixture
def src(tmp_path, pydicom_files, pydicom_data_dir, nibabel_data):
    """A small tree: 2 good CT series, 1 enhanced CT, a NIfTI, and bad items."""
    root = tmp_path / "src"
    dd = pydicom_files / "dicomdirtests"
    shutil.copytree(dd / "98892001" / "CT5N", root / "patA" / "ct5n")
    shutil.copytree(dd / "98892003" / "MR700", root / "patB" / "mr700")  # mixed orientations
    shutil.copytree(dd / "77654033" / "CT2", root / "patC" / "ct2")  # gap
    shutil.copy(pydicom_data_dir / "eCT_Supplemental.dcm", root / "patD" / "ect.dcm") if (root / "patD").mkdir() is None else None
    shutil.copy(pydicom_files / "rtplan.dcm", root / "patA" / "plan.dcm")
    (root / "patA" / "notes.bin").write_bytes(b"not dicom at all")
    (root / "bids" / "sub-01" / "anat").mkdir(parents=True)
    shutil.copy(nibabel_data / "anatomical.nii", root / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii")
    return root


def test_build_good_and_rejects(src, key_env):
    res = build_manifest(src, load_key())
    m = res.manifest
    fmts = sorted(r.format for r in m)
    assert fmts == ["dicom", "dicom", "nifti"]
    reasons = " | ".join(f"{r['path']}: {r['reason']}" for r in res.rejects)
    assert "mixed orientations" in reasons and "uneven slice spacing" in reasons
    assert "plan.dcm: not an image (RT Plan Storage)" in reasons
    assert "notes.bin: not a DICOM file" in reasons
    ct = next(r for r in m if r.shape == [16, 16, 5])
    assert ct.spacing[2] == pytest.approx(2.5)
    assert len(ct.files) == 5 and all(len(f.sha256) == 64 for f in ct.files)
    assert all(not f.path.startswith("/") for r in m for f in r.files)


def test_no_phi_in_manifest(src, key_env, tmp_path):
    res = build_manifest(src, load_key())
    out = tmp_path / "m.jsonl"
    res.manifest.write(out, rejects=res.rejects)
    text = out.read_text() + Manifest.summary_path(out).read_text() + Manifest.rejects_path(out).read_text()
    for f in (src / "patA" / "ct5n").iterdir():
        ds = pydicom.dcmread(f)
        for value in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                      ds.SOPInstanceUID, ds.get("StudyDate", "")):
            if value and len(value) > 3:
                assert value not in text, "identifying header value leaked into the manifest"


def test_digest_stable_and_sensitive(src, key_env, tmp_path):
    key = load_key()
    d1 = build_manifest(src, key).manifest.digest
    d2 = build_manifest(src, key).manifest.digest
    assert d1 == d2 and len(d1) == 64
    f = next((src / "patA" / "ct5n").iterdir())
    data = bytearray(f.read_bytes())
    data[-1] ^= 1  # change the last voxel's last byte
    f.write_bytes(bytes(data))
    assert build_manifest(src, key).manifest.digest != d1


def test_ids_are_keyed(src, key_env, tmp_path):
    from medgen.keys import create_key_file

    other = create_key_file(tmp_path / "other.key")
    a = {r.id for r in build_manifest(src, load_key()).manifest}
    b = {r.id for r in build_manifest(src, other).manifest}
    assert a.isdisjoint(b)


def test_split_by_subject(tmp_path, key_env):
    from medgen.manifest.records import FileEntry, Record

    recs = [Record(id=f"r{i:03d}", subject=f"s{i // 3:02d}", format="nifti", shape=[1, 1, 1],
                   spacing=[1, 1, 1], files=[FileEntry(path=f"f{i}.nii", sha256="0" * 64, size=1)])
            for i in range(60)]
    m = Manifest(recs)
    s1 = split_manifest(m, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    s2 = split_manifest(m, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    s3 = split_manifest(m, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=2)
    assert [r.split for r in s1] == [r.split for r in s2]
    assert [r.split for r in s1] != [r.split for r in s3]
    by_subject = {}
    for r in s1:
        by_subject.setdefault(r.subject, set()).add(r.split)
    assert all(len(v) == 1 for v in by_subject.values())
    counts = {k: len(s1.split(k)) for k in ("train", "val", "test")}
    assert counts == {"train": 42, "val": 9, "test": 9}


def test_validate_names_missing_and_changed(src, key_env, tmp_path):
    res = build_manifest(src, load_key())
    out = tmp_path / "m.jsonl"
    res.manifest.write(out)
    m = Manifest.load(out)
    assert m.root == src.resolve()
    assert validate_manifest(m).passed
    files = sorted((src / "patA" / "ct5n").iterdir())
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes() + b"\0")
    rep = validate_manifest(Manifest.load(out))
    assert rep.missing == [files[0].relative_to(src).as_posix()]
    assert rep.changed == [files[1].relative_to(src).as_posix()]


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_cli_build_exit_codes_and_split(src, key_env, tmp_path):
    import os

    env = dict(os.environ)
    out = tmp_path / "m.jsonl"
    r = run_cli("manifest", "build", str(src), "-o", str(out), env=env)
    assert r.returncode == 3, r.stderr  # something was rejected
    assert "digest sha256:" in r.stdout
    for line in r.stderr.splitlines():
        if "rejected" in line:
            assert line.strip().count("\n") == 0
    r = run_cli("manifest", "validate", str(out), env=env)
    assert r.returncode == 0 and "PASS" in r.stdout
    r = run_cli("manifest", "split", str(out), "-o", str(tmp_path / "s.jsonl"), "--seed", "3", env=env)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert all(x["split"] in ("train", "val", "test") for x in recs)
    good = tmp_path / "good"
    shutil.copytree(src / "patA" / "ct5n", good / "ct5n")
    r = run_cli("manifest", "build", str(good), "-o", str(tmp_path / "g.jsonl"), env=env)
    assert r.returncode == 0, r.stderr


def test_cli_refuses_without_key(src, tmp_path, monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDGEN_KEY")}
    r = run_cli("manifest", "build", str(src), "-o", str(tmp_path / "m.jsonl"), env=env)
    assert r.returncode == 2 and "key" in r.stderr
    r = run_cli("manifest", "build", str(src), "-o", str(tmp_path / "m.jsonl"), "--create-key",
                str(tmp_path / "k" / "new.key"), env=env)
    assert r.returncode == 3 and (tmp_path / "k" / "new.key").exists()
    assert (tmp_path / "k" / "new.key").read_text().strip() not in r.stdout + r.stderr
