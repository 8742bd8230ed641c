"""Pipelines: references between steps, nested MLflow runs, step-by-step resume, dry run, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

SMALL = """
version: 1
name: small
workdir: {workdir}
tracking: {{tracking_uri: "sqlite:///{workdir}/mlflow.db"}}
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


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text(SMALL.format(workdir=tmp_path / "w"))
    return p


def test_small_pipeline_runs_nests_and_resumes(small, tmp_path):
    from mlflow import MlflowClient

    r = run("run", str(small), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok       audit" in r.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medgen-pipelines")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("medgen.task") == "pipeline"]
    assert len(parents) == 1
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {c.data.tags["medgen.task"] for c in children} >= {"manifest", "degrade", "evaluate"}
    assert all("medgen.audit.sha256" in x.data.tags for x in runs)
    ev = next(c for c in children if c.data.tags["medgen.task"] == "evaluate")
    assert ev.data.metrics["eval/n"] >= 1
    # second run: every step is skipped (spec and outputs unchanged)
    r2 = run("run", str(small), cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert r2.stderr.count("skipped") >= 4
    # changing a step's spec re-runs that step (and only steps whose resolved spec changed)
    r3 = run("run", str(small), "--set", "steps.2.preset=gaussian-mild", cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    assert "ok       degrade" in r3.stderr and "skipped  manifest" in r3.stderr


def test_dry_run_and_errors(small, tmp_path):
    r = run("run", str(small), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "planned  degrade" in r.stderr
    assert not (tmp_path / "w").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nsteps:\n  - {name: x, kind: trian}\n")
    r = run("run", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "trian" in r.stderr
    bad.write_text("version: 1\nname: bad\nsteps:\n  - {name: t, kind: train, config: train/no-such}\n")
    r = run("run", str(bad), cwd=tmp_path)  # refused when the spec loads, before any step
    assert r.returncode == 2 and "steps.0.config: config 'train/no-such' not found" in r.stderr


@pytest.mark.parametrize("name", ["denoise-mri", "denoise-ct-lowdose", "sr-thick-slice", "synth-brain"])
def test_shipped_pipelines_validate(name):
    from pathlib import Path

    from medgen.pipeline import load_pipeline

    p = Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.yaml"
    if not p.exists():
        pytest.fail(f"pipelines/{name}.yaml is missing")
    spec = load_pipeline(p)
    assert spec.steps[-1].kind == "audit"
