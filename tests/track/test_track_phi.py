"""The PHI guard on its own: what it redacts, what it keeps, and strict refusal."""

from __future__ import annotations

import pytest

from medgen.track import PHIError, PHIGuard, phi_findings, phi_guard


@pytest.mark.parametrize("value, kind", [
    ("DOE^JOHN", "a person name"),
    ("Patient: VAN DER BERG^JAN^^DR", "a person name"),
    ("19700101", "a date"),
    ("acquired 20191231235959.123456+0100 on site", "a date"),
    ("1970-01-01T08:30:00Z", "a date"),
    ("born 31/12/1970", "a date"),
    ("1.2.840.113619.2.55.3.604688119.969.1268071029.320", "a DICOM UID"),
    ("/data/DOE_JOHN_19700101/series", "an absolute path"),
    ("/home/jsmith/scans/ct.nii.gz", "an absolute path"),
    ("~jsmith/scans", "an absolute path"),
    ("C:\\Users\\jsmith\\ct.dcm", "an absolute path"),
    ("sqlite:////home/jsmith/mlflow.db", "an absolute path"),
])
def test_detects_identifying_values(value, kind):
    assert kind in phi_findings(value)
    out = phi_guard(value)
    assert out != value
    for token in ("DOE", "JOHN", "19700101", "jsmith", "1268071029", "31/12/1970", "BERG"):
        if token in value:
            assert token not in out


@pytest.mark.parametrize("value", [
    "0.001", "train.lr", "val/psnr", "3.11.2", "2.13.0+cpu", "x^2",  # x^2: digit after caret
    "^[A-Z]+$", "http://127.0.0.1:5000/api/2.0", "relative/path/ct.nii.gz",
    "2.25.329800735698586629295641978511506172918",  # medgen's own derived UID root
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256 with a date-like run
    "a19700101b" * 4, "step_0000002.png", "mri-rician-mild",
])
def test_keeps_ordinary_values(value):
    assert phi_guard(value) == value
    assert phi_findings(value) == []


def test_numbers_only_checked_against_identifiers():
    g = PHIGuard()
    assert g.guard(20240101) == "20240101"  # a seed is not a birth date
    assert g.guard_obj({"seed": 20240101, "lr": 1e-3}) == {"seed": 20240101, "lr": 1e-3}
    g.register([987654321])
    assert g.guard(987654321) == "REDACTED-id"


def test_registered_identifiers_and_name_variants():
    g = PHIGuard()
    g.register(["DOE^JOHN", "PID-4711", None, b"ACC99812"])
    for text in ("DOE^JOHN", "doe_john", "John Doe", "JOHNDOE", "x/DOE-JOHN/y", "pid-4711",
                 "acc99812", "JOHN"):
        out = g.guard(text)
        assert "john" not in out.lower() and "4711" not in out and "99812" not in out, out
    # whole tokens only: a longer word that merely contains a component survives
    assert g.guard("johnny") == "johnny"
    assert g.guard("PID-47110") == "PID-47110"


def test_paths_under_declared_root_stay_readable():
    g = PHIGuard(roots={"data": "/data/in"})
    g.register(["DOE^JOHN"])
    assert g.guard("/data/in/site-a/ct.nii.gz") == "$data/site-a/ct.nii.gz"
    assert g.guard("/data/in") == "$data"
    assert g.guard("/data/in/DOE_JOHN_x/series") == "$data/REDACTED/series"
    assert g.guard("/data/in/scan_19700101/s1") == "$data/REDACTED/s1"
    # outside the root: an opaque, per-guard keyed placeholder, equal for equal paths
    a, b = g.guard("/elsewhere/x.dcm"), g.guard("/elsewhere/x.dcm")
    assert a == b and a.startswith("PATH-") and a.endswith(".dcm")
    assert PHIGuard().guard("/elsewhere/x.dcm") != a  # not linkable across runs


def test_free_text_keeps_context():
    out = phi_guard("loaded /data/DOE_JOHN_19700101/series at step 3, study 20010203")
    assert out.startswith("loaded PATH-") and out.endswith("at step 3, study REDACTED-date")


def test_strict_mode_refuses_with_one_line_reason_without_the_value():
    g = PHIGuard(strict=True)
    with pytest.raises(PHIError) as err:
        g.guard("DOE^JOHN 19700101", where="tag")
    msg = str(err.value)
    assert "\n" not in msg and "DOE" not in msg and "19700101" not in msg
    assert "person name" in msg and "date" in msg and msg.startswith("tag:")
    assert g.guard("clean value") == "clean value"


def test_guard_obj_recurses_into_keys_and_lists():
    g = PHIGuard()
    out = g.guard_obj({"DOE^JOHN": ["/data/x", 1, {"d": "1970-01-01"}], "ok": (True, None)})
    assert out == {"REDACTED-name": [out["REDACTED-name"][0], 1, {"d": "REDACTED-date"}],
                   "ok": [True, None]}
    assert out["REDACTED-name"][0].startswith("PATH-")
