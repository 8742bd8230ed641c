"""A pipeline run's audit re-audits every step run: an untouched pipeline PASSes, a step run
changed after the fact (or re-sealed to hide it) makes the pipeline FAIL, naming the step.
``medgen run`` follows an exported ``MEDGEN_KEY_FILE`` and prints the one store rule's store."""

from __future__ import annotations

import sqlite3

import pytest

from .conftest import clean_env, medgen

SMALL = """
version: 1
name: small
workdir: {workdir}
steps:
  - {{name: sample, kind: sample-data, dst: "${{workdir}}/sample"}}
  - name: manifest
    kind: manifest
    src: "${{steps.sample.nifti}}"
    output: "${{workdir}}/m.jsonl"
    ratios: {{train: 0.5, test: 0.5}}
  - name: degrade
    kind: degrade
    manifest: "${{steps.manifest.manifest}}"
    split: test
    preset: gaussian-strong
    dst: "${{workdir}}/noisy"
    reference_dst: "${{workdir}}/clean"
  - name: evaluate
    kind: evaluate
    reference: "${{steps.degrade.reference_dst}}"
    outputs: "${{steps.degrade.dst}}"
  - {{name: audit, kind: audit, rerun: 0}}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from mlflow import MlflowClient

    from medgen.keys import create_key_file

    base = tmp_path_factory.mktemp("pipe")
    proj = base / "proj"
    proj.mkdir()
    key = create_key_file(base / "secrets" / "team.key")
    (proj / "small.yaml").write_text(SMALL.format(workdir=base / "work"))  # outside the cwd
    r = medgen("run", "small.yaml", cwd=proj, env=clean_env(MEDGEN_KEY_FILE=str(base / "secrets" / "team.key")))
    assert r.returncode == 0, r.stdout + r.stderr
    uri = "sqlite:///" + str(proj / "mlflow.db")  # the one rule: ./mlflow.db of the cwd
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("medgen-pipelines").experiment_id])
    parent = next(x for x in runs if x.data.tags.get("medgen.task") == "pipeline").info.run_id
    steps = {x.data.tags["medgen.task"]: x.info.run_id for x in runs
             if x.data.tags.get("mlflow.parentRunId") == parent}
    return {"base": base, "proj": proj, "uri": uri, "parent": parent, "steps": steps,
            "stderr": r.stderr, "key": key}


def test_run_uses_the_exported_key_and_prints_the_store(pipeline):
    assert f"key: $MEDGEN_KEY_FILE (fingerprint {pipeline['key'].fingerprint})" in pipeline["stderr"]
    assert not (pipeline["base"] / "work" / "secrets").exists()
    assert f"MLflow store: {pipeline['uri']}" in pipeline["stderr"]
    assert "INFO" not in pipeline["stderr"]


def test_untouched_pipeline_passes(pipeline, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(pipeline["base"])
    rep = audit_run(pipeline["parent"], tracking_uri=pipeline["uri"], rerun=1)
    assert rep.passed, rep.failures
    assert "3 step run(s) of the pipeline re-audited" in rep.checks
    for kind in ("manifest", "degrade", "evaluate"):
        rid = pipeline["steps"][kind]
        assert f"step '{kind}' (run {rid}): PASS" in " | ".join(rep.checks)
    assert not any("no re-run check for runs of kind 'pipeline'" in w for w in rep.warnings)


def test_tampered_step_run_fails_the_pipeline(pipeline, monkeypatch):
    from mlflow import MlflowClient

    from medgen.audit import audit_run

    monkeypatch.chdir(pipeline["base"])
    rid = pipeline["steps"]["degrade"]
    MlflowClient(pipeline["uri"]).log_metric(rid, "degrade/extra", 1.0)
    try:
        rep = audit_run(pipeline["parent"], tracking_uri=pipeline["uri"])
    finally:
        db = sqlite3.connect(pipeline["proj"] / "mlflow.db")
        db.execute("delete from metrics where run_uuid=? and key='degrade/extra'", (rid,))
        db.execute("delete from latest_metrics where run_uuid=? and key='degrade/extra'", (rid,))
        db.commit()
        db.close()
    assert not rep.passed
    assert f"step 'degrade' (run {rid}): metric 'degrade/extra' history was changed after the " \
           "run was sealed" in rep.failures


def test_resealed_step_run_fails_the_pipeline(pipeline, monkeypatch):
    """A step run changed AND re-sealed consistently passes on its own; the pipeline's seal,
    which holds the step's seal digest, catches it."""
    from mlflow import MlflowClient

    from medgen.audit import audit_run, seal_run
    from medgen.track import reopen_run

    monkeypatch.chdir(pipeline["base"])
    rid = pipeline["steps"]["evaluate"]
    c = MlflowClient(pipeline["uri"])
    old = c.get_run(rid).data.tags["medgen.audit.sha256"]
    c.log_metric(rid, "eval/psnr", 99.0, step=7)
    handle = reopen_run(rid, tracking_uri=pipeline["uri"])
    seal_run(handle, kind="evaluate", lineage={"summary": "rewritten"})
    handle.detach()
    assert audit_run(rid, tracking_uri=pipeline["uri"]).passed
    rep = audit_run(pipeline["parent"], tracking_uri=pipeline["uri"])
    assert not rep.passed
    assert f"step 'evaluate' (run {rid}) was re-sealed or unsealed after the pipeline sealed it" \
        in rep.failures
    assert c.get_run(rid).data.tags["medgen.audit.sha256"] != old
