"""Canary corpus under the default profile: zero survivors; the verifier sees planted leaks."""

from __future__ import annotations

import json

import pydicom

from medgen.deid import verify

from .canary import CANARY_MARKERS, make_corpus, survivors
from .conftest import run_cli


def test_canary_corpus_has_zero_survivors(tmp_path, keyfile):
    src = tmp_path / "in"
    files = make_corpus(src, n=4)
    before = survivors(src)
    assert len(before) > 40, "the corpus must actually plant identifiers"  # sanity
    dst = tmp_path / "out"
    r = run_cli("deid", str(src), str(dst), "--key-file", str(keyfile))
    assert r.returncode == 0, r.stderr
    outs = sorted(p for p in dst.rglob("*.dcm"))
    assert len(outs) == len(files)
    assert survivors(dst) == []
    # progress / summary output names no input path or value
    assert "canary" not in (r.stdout + r.stderr).replace(str(tmp_path), "").lower()
    for p in outs:
        ds = pydicom.dcmread(p)
        assert ds.PatientIdentityRemoved == "YES"
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
        assert not any(e.tag.is_private for e in ds.iterall())
        assert (0x6000, 0x4000) not in ds and (0x6000, 0x3000) not in ds
        # sequences kept for referential integrity are still there, remapped, 3 deep
        d3 = ds.ReferencedImageSequence[0].SourceImageSequence[0].ReferencedImageSequence[0]
        assert d3.ReferencedSOPInstanceUID.startswith("2.25.")
        assert d3.PatientName == ds.PatientName == ds.PatientID  # the patient's pseudonym
        assert "TextValue" not in d3
    rep = verify(dst, original=src)
    assert rep.ok, rep.findings
    r2 = run_cli("deid", "verify", str(dst), "--original", str(src))
    assert r2.returncode == 0, r2.stdout
    audit = (dst / "_deid" / "audit.jsonl").read_text()
    assert not any(m in audit.lower() for m in CANARY_MARKERS)
    rec = json.loads(audit.splitlines()[0])
    assert rec["status"] == "ok" and rec["in_sha256"] and rec["out_sha256"]
    assert rec["key_fingerprint"] and rec["table_edition"].startswith("2024b")
    assert "00100010:Z" in rec["actions"]


def test_verifier_finds_planted_leaks(tmp_path, keyfile):
    src = tmp_path / "in"
    make_corpus(src, n=1)
    dst = tmp_path / "out"
    assert run_cli("deid", str(src), str(dst), "--key-file", str(keyfile)).returncode == 0
    out = next(dst.rglob("*.dcm"))
    assert verify(dst, original=src).ok
    ds = pydicom.dcmread(out)
    # 1) an attribute the table removes, with an original value, 2 deep
    ds.ReferencedImageSequence[0].SourceImageSequence[0].PatientComments = "John CanaryDoe"
    # 2) a private element
    ds.private_block(0x0009, "LEAK", create=True).add_new(0x01, "LO", "x")
    # 3) an original name written differently, in an allow-listed attribute
    ds.SeriesDescription = "canaryjohn  CANARYDOE"
    ds.save_as(out, enforce_file_format=True)
    rep = verify(dst, original=src)
    text = "\n".join(rep.findings)
    assert "(0010,4000) depth 2: present although the table says X" in text
    assert "private element present" in text
    assert "(0008,103E) depth 0" in text
    assert "canary" not in text.lower()  # findings never carry values
    r = run_cli("deid", "verify", str(dst), "--original", str(src))
    assert r.returncode == 1 and "finding" in r.stdout
    # without originals the structural findings remain
    assert not verify(dst).ok
