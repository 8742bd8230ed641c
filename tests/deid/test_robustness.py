"""Every pydicom test file and every pydicom-data file: a re-readable output or a one-line reason."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_files

from medgen.deid import deidentify, verify
from medgen.utils.hashing import sha256_file


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def test_all_pydicom_and_pydicom_data_files(tmp_path, key, pydicom_files, pydicom_data_dir):
    listed = {Path(p).resolve() for p in get_testdata_files()}
    roots = (pydicom_files.resolve(), pydicom_data_dir.resolve())
    assert listed and all(any(r in p.parents for r in roots) for p in listed)  # all covered
    assert (pydicom_files / "dicomdirtests").is_dir()
    total_ok = 0
    for n, src in enumerate([pydicom_files, pydicom_data_dir]):
        before = _hashes(src)
        dst = tmp_path / f"out{n}"
        rep = deidentify(src, dst, key=key, workers=2, ocr=False)
        assert _hashes(src) == before  # inputs never modified
        lines = [json.loads(x) for x in (dst / "_deid" / "audit.jsonl").read_text().splitlines()]
        assert len(lines) == rep.ok + len(rep.quarantined)
        assert len(lines) >= len([k for k in before if not k.endswith(".img")])
        for rec in lines:
            if rec["status"] == "ok":
                out = dst / rec["item"]
                ds = pydicom.dcmread(out) if rec["kind"] == "dicom" else None
                if ds is not None:
                    assert ds.PatientIdentityRemoved == "YES"
                    if "PixelData" in ds:
                        assert len(ds.PixelData) > 0
                assert rec["out_sha256"] == sha256_file(out)
            else:
                reason = rec["reason"]
                assert reason and "\n" not in reason and len(reason) < 200
        assert rep.exit_code == (3 if rep.quarantined else 0)
        total_ok += rep.ok
        assert verify(dst).ok  # the outputs pass the independent verifier as a whole
    assert total_ok > 120


ALL_COMPATIBLE = ("clean-descriptors", "clean-structured-content", "clean-graphics",
                  "retain-safe-private", "retain-patient-characteristics",
                  "retain-device-identity", "retain-institution-identity",
                  "retain-long-modified-dates", "retain-uids")


def test_pydicom_files_with_every_option(tmp_path, key, pydicom_files):
    """The option code paths (C actions, safe private, date shifts) on every real file: only the
    expected quarantine reasons, never an engine error or a verifier finding."""
    rep = deidentify(pydicom_files, tmp_path / "o", key=key, options=ALL_COMPATIBLE, workers=2,
                     ocr=False)
    expected = ("burned-in", "DICOMDIR", "unsupported file type", "no SOP Class UID",
                "not a DICOM file", "truncated DICOM", "encapsulated document",
                "corrupt DICOM header")
    odd = [r for _, r in rep.quarantined if not any(e in r for e in expected)]
    assert not odd, odd
    assert rep.ok > 100
    assert verify(tmp_path / "o", options=ALL_COMPATIBLE).ok
