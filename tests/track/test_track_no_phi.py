"""End to end: log identifying-looking paths and real DICOM header values through every channel,
then read EVERYTHING back from the store (embedded sqlite and a real ``mlflow server``) and assert
that no identifier survived, while the ordinary values did."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medgen.config.base import StrictModel
from medgen.track import client_for, start_run


class DataCfg(StrictModel):
    root: str
    out: str
    patient: str
    study_date: str
    study_uid: str
    site: str


class Cfg(StrictModel):
    model: str = "vae"
    seed: int = 1234
    data: DataCfg


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("local_store")
    uri, _ = request.getfixturevalue("mlflow_server")
    return uri


def _all_artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_all_artifacts(client, run_id, a.path) if a.is_dir else [a.path])
    return out


def test_no_identifier_reaches_the_store(tracking_uri, pydicom_files, tmp_path):
    ds = pydicom.dcmread(pydicom_files / "CT_small.dcm", stop_before_pixels=True)
    name, pid, study_date = str(ds.PatientName), str(ds.PatientID), str(ds.StudyDate)
    study_uid, series_uid, site = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstitutionName
    ident_path = "/data/DOE_JOHN_19700101/series"
    cfg = Cfg(data=DataCfg(root=ident_path, out="/home/jsmith/medgen-out", patient=name,
                           study_date=study_date, study_uid=study_uid, site=site))
    named_file = tmp_path / "DOE_JOHN_19700101.txt"
    named_file.write_text("clean content\n")
    folder = tmp_path / "reports"
    (folder / f"{name.replace('^', '_')}").mkdir(parents=True)
    (folder / f"{name.replace('^', '_')}" / f"{pid}.json").write_text('{"psnr": 31.5}\n')
    derived_uid = "2.25.329800735698586629295641978511506172918"
    vol = np.random.default_rng(0).random((8, 8, 8))

    with start_run("medgen-phi", f"train-{pid}", tracking_uri=tracking_uri,
                   tags={"reader": "DOE^JOHN", "series": series_uid},
                   description=f"inputs under {ident_path}") as run:
        # what a trainer does with the headers of its inputs
        run.register_identifiers([name, pid, site, study_uid, series_uid, "DOE^JOHN"])
        run.log_config(cfg)
        run.log_params({"input": f"{ident_path}/IM0001.dcm", f"site.{pid}": site})
        run.set_tags({"patient": pid, f"seen.{study_date}": "yes"})
        run.log_metrics({f"psnr/{pid}": 31.5, "psnr/DOE^JOHN": 30.0, "loss": 0.25}, step=1)
        run.log_text(f"Patient: {name} (DOE^JOHN) born 19700101, study {study_uid} at {site}, "
                     f"read from {ident_path}\n", "logs/header.txt")
        run.log_json({"study": study_uid, "derived": derived_uid, "when": "1970-01-01",
                      "where": ident_path, pid: 1}, "outputs/manifest.json")
        run.log_artifact(named_file, "notes")
        run.log_artifact(folder, "reports")
        run.log_figure_grid({"noisy": vol, f"clean {name}": vol}, "val", step=1)
        run.log_lineage(seeds=1234)

    client = client_for(tracking_uri)
    r = client.get_run(run.run_id)
    texts: list[str] = [r.info.run_name, *r.data.params.keys(), *r.data.params.values(),
                        *r.data.tags.keys(), *r.data.tags.values(), *r.data.metrics.keys()]
    paths = _all_artifacts(client, run.run_id)
    texts += paths
    local = Path(client.download_artifacts(run.run_id, "", str(tmp_path / "dl")))
    blobs = [p.read_bytes() for p in local.rglob("*") if p.is_file()]
    texts += [b.decode("utf-8", "replace") for b in blobs]
    texts += [p.name for p in local.rglob("*")]

    forbidden_substrings = ["DOE^JOHN", "DOE_JOHN", "19700101", "1970-01-01", "jsmith",
                            "CompressedSamples", study_date, study_uid, series_uid,
                            "1.3.6.1.4.1.5962", site, "/data/"]
    forbidden_tokens = [pid, "DOE", "JOHN"]
    for t in texts:
        low = t.lower()
        for f in forbidden_substrings:
            assert f.lower() not in low, f"{f!r} survived in {t[:80]!r}"
        for tok in forbidden_tokens:
            assert not re.search(rf"(?<![a-z0-9]){re.escape(tok.lower())}(?![a-z0-9])", low), \
                f"{tok!r} survived in {t[:80]!r}"

    # ...while ordinary values survive, so this test can tell redaction from wiping
    assert r.data.params["model"] == "vae" and r.data.params["seed"] == "1234"
    assert r.data.params["data.root"].startswith("PATH-")
    assert r.data.metrics["loss"] == 0.25
    manifest = (local / "outputs" / "manifest.json").read_text()
    assert derived_uid in manifest
    assert "notes/REDACTED-id_REDACTED-date.txt" in paths
    assert (local / "notes" / "REDACTED-id_REDACTED-date.txt").read_text() == "clean content\n"
    assert "reports/REDACTED-id/REDACTED-id.json" in paths
    assert any(p.startswith("figures/val/") for p in paths)
    assert int(r.data.tags["medgen.phi.redactions"]) > 5
    redacted = r.data.tags["medgen.phi.redacted_artifacts"].split(",")
    assert {"config/resolved.yaml", "logs/header.txt", "outputs/manifest.json"} <= set(redacted)
    assert r.data.tags["medgen.config_sha256"] != r.data.tags["medgen.config.artifact_sha256"]
