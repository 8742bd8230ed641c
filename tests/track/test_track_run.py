"""Runs against the real embedded sqlite store (no mocks): config, manifests, lineage, metrics,
figures, run status on failure / interrupt, and never attaching to a stale run."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from medgen.config.base import StrictModel
from medgen.config.load import dump_config
from medgen.track import PHIError, client_for, start_run
from medgen.utils.hashing import sha256_file

REPO = Path(__file__).resolve().parents[2]


class Optim(StrictModel):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


class Cfg(StrictModel):
    model: str = "vae"
    seed: int = 20240101  # date-shaped number: must survive as a param
    optim: Optim = Optim()
    notes: str = "n" * 7000  # longer than MLflow's param limit


def _download_text(client, run_id: str, path: str, dst: Path) -> str:
    local = client.download_artifacts(run_id, path, str(dst))
    return Path(local).read_text()


def test_default_store_is_sqlite_in_cwd_and_run_is_fresh_and_named(local_store, store_dir):
    with start_run("medgen-test", "first") as run:
        run.log_metrics({"train/loss": 1.5}, step=1)
        run.log_metrics({"train/loss": 0.5}, step=2)
    assert run.tracking_uri == local_store
    assert (store_dir / "mlflow.db").is_file()
    client = client_for(local_store)
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == "first"
    assert r.data.tags["mlflow.user"] == "medgen"
    assert r.info.artifact_uri.startswith((store_dir / "mlartifacts").as_uri())
    hist = client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(1, 1.5), (2, 0.5)]
    # a second run with the same name is a new run
    with start_run("medgen-test", "first") as run2:
        pass
    assert run2.run_id != run.run_id


def test_log_config_params_yaml_and_sha(local_store, tmp_path):
    cfg = Cfg()
    with start_run("medgen-test", "config") as run:
        digest = run.log_config(cfg)
    client = client_for(local_store)
    r = client.get_run(run.run_id)
    expected = hashlib.sha256(dump_config(cfg).encode()).hexdigest()
    assert digest == expected == r.data.tags["medgen.config_sha256"]
    p = r.data.params
    assert p["model"] == "vae" and p["seed"] == "20240101" and p["optim.lr"] == "0.001"
    assert json.loads(p["optim.betas"]) == [0.9, 0.999]
    assert len(p["notes"]) <= 6000 and p["notes"].endswith("config/resolved.yaml]")
    text = _download_text(client, run.run_id, "config/resolved.yaml", tmp_path)
    assert text == dump_config(cfg)  # nothing to redact: the artifact is the full config
    assert hashlib.sha256(text.encode()).hexdigest() == r.data.tags["medgen.config.artifact_sha256"]
    assert "medgen.phi.redacted_artifacts" not in r.data.tags


def test_manifest_digest_is_full_sha256_and_does_not_collide(local_store, tmp_path):
    # two manifests with the same first rows: MLflow's 8-hex dataset digest of the first rows
    # would collide; the full sha256 of the file does not
    head = "".join(f"item{i},{'a' * 64}\n" for i in range(50))
    m1, m2 = tmp_path / "m1.csv", tmp_path / "m2.csv"
    m1.write_text(head + "item50,x\n")
    m2.write_text(head + "item50,y\n")
    with start_run("medgen-test", "manifest") as run:
        d1 = run.log_manifest(m1, role="train")
        d2 = run.log_manifest(m2, role="val", log_file=True)
        d3 = run.log_manifest("AB" * 32, role="input")
    tags = client_for(local_store).get_run(run.run_id).data.tags
    assert tags["medgen.manifest.train.sha256"] == d1 == sha256_file(m1)
    assert tags["medgen.manifest.val.sha256"] == d2 == sha256_file(m2)
    assert d1 != d2 and len(d1) == 64
    assert tags["medgen.manifest.input.sha256"] == d3 == "ab" * 32
    arts = [a.path for a in client_for(local_store).list_artifacts(run.run_id, "manifests/val")]
    assert arts == ["manifests/val/m2.csv"]
    with pytest.raises(ValueError):
        with start_run("medgen-test", "bad-role") as run:
            run.log_manifest(m1, role="../x")


def test_lineage_records_git_env_seeds_and_no_host(local_store, tmp_path):
    import socket

    with start_run("medgen-test", "lineage") as run:
        logged = run.log_lineage(seeds={"seed": 7, "data": 11})
    client = client_for(local_store)
    tags = client.get_run(run.run_id).data.tags
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    porcelain = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
    diff = subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--no-color", "--no-ext-diff",
                           "--binary"], capture_output=True, check=True).stdout
    assert tags["medgen.git.commit"] == head == logged["medgen.git.commit"]
    assert tags["medgen.git.dirty"] == ("true" if porcelain else "false")
    assert tags["medgen.git.diff_sha256"] == hashlib.sha256(diff).hexdigest()
    lineage = [a.path for a in client.list_artifacts(run.run_id, "lineage")]
    assert ("lineage/git.diff" in lineage) == bool(diff)
    assert tags["medgen.version.numpy"] == np.__version__
    import mlflow
    import torch

    assert tags["medgen.version.mlflow"] == mlflow.__version__
    assert tags["medgen.torch"] == torch.__version__
    assert tags["medgen.torch.cuda"] == (torch.version.cuda or "none")
    assert tags["medgen.gpu"] == ("none" if not torch.cuda.is_available()
                                  else torch.cuda.get_device_name(0))
    assert tags["medgen.seed"] == "7" and tags["medgen.seed.data"] == "11"
    env = _download_text(client, run.run_id, "lineage/environment.txt", tmp_path)
    assert f"numpy=={np.__version__}" in env.splitlines()
    assert hashlib.sha256(env.encode()).hexdigest() == tags["medgen.env.lock_sha256"]
    host = socket.gethostname().split(".")[0]
    if len(host) >= 4:
        assert all(host not in v for v in tags.values())
        assert host not in env


def test_figure_grid_png_rows_and_planes(local_store, tmp_path):
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    clean = rng.random((20, 24, 16)).astype(np.float32)
    images = {"noisy": clean + rng.normal(0, 0.1, clean.shape), "denoised": clean * 0.9,
              "clean": clean[None]}  # a channel axis of 1 is accepted
    with start_run("medgen-test", "grid") as run:
        path = run.log_figure_grid(images, "val", step=3)
    assert path == "figures/val/step_0000003.png"
    local = client_for(local_store).download_artifacts(run.run_id, path, str(tmp_path))
    png = mpimg.imread(local)
    # 4 rows (noisy, denoised, clean, auto difference) x 3 planes of 2.4 in at 100 dpi
    assert png.shape[:2] == (960, 720)
    with pytest.raises(ValueError):
        with start_run("medgen-test", "grid-bad") as run:
            run.log_figure_grid({"x": np.zeros((2, 2, 2, 2))})


def test_failing_block_marks_run_failed_with_reason(local_store):
    with pytest.raises(RuntimeError):
        with start_run("medgen-test", "boom") as run:
            raise RuntimeError("loss is NaN at step 3")
    r = client_for(local_store).get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.tags["medgen.error"] == "RuntimeError: loss is NaN at step 3"


def test_keyboard_interrupt_marks_run_killed(local_store):
    with pytest.raises(KeyboardInterrupt):
        with start_run("medgen-test", "interrupted") as run:
            raise KeyboardInterrupt
    assert client_for(local_store).get_run(run.run_id).info.status == "KILLED"


def test_never_attaches_to_stale_running_run(local_store, monkeypatch, caplog):
    client = client_for(local_store)
    exp = client.get_experiment_by_name("medgen-test")
    stale = client.create_run(exp.experiment_id, run_name="stale")  # left RUNNING, like a kill -9
    monkeypatch.setenv("MLFLOW_RUN_ID", stale.info.run_id)
    with caplog.at_level("WARNING", logger="medgen.track"):
        with start_run("medgen-test", "fresh") as run:
            run.log_params({"a": 1})
    assert run.run_id != stale.info.run_id
    assert "MLFLOW_RUN_ID" in caplog.text
    s = client.get_run(stale.info.run_id)
    assert s.info.status == "RUNNING" and s.data.params == {}


def test_nested_runs_and_parent(local_store):
    with start_run("medgen-test", "pipeline") as parent:
        parent.register_identifiers(["DOE^JOHN"])
        with parent.child("step-train") as child:
            child.set_tags({"note": "by doe_john"})  # caught only via the parent's registry
        parent.set_tags({"after": "DOE^JOHN"})
    client = client_for(local_store)
    c = client.get_run(child.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.run_id
    assert c.data.tags["note"] == "by REDACTED-id"
    # each run counts its own redactions although they share one guard
    assert c.data.tags["medgen.phi.redactions"] == "1"
    assert client.get_run(parent.run_id).data.tags["medgen.phi.redactions"] == "1"
    with pytest.raises(Exception):  # noqa: B017 - MLflow's own not-found error
        with start_run("medgen-test", "orphan", parent_run_id="0" * 32):
            pass


def test_caller_file_with_identifiers_is_refused_not_rewritten(local_store, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("reviewed by DOE^JOHN\n")
    before = f.read_bytes()
    with start_run("medgen-test", "refuse") as run:
        with pytest.raises(PHIError) as err:
            run.log_artifact(f, "notes")
        json_sha = run.log_json({"uid": "2.25.1234567890123", "n": 3}, "out/manifest.json",
                                on_phi="raise", sha256_tag="medgen.audit.sha256")
    assert "DOE" not in str(err.value) and "notes/notes.txt" in str(err.value)
    assert f.read_bytes() == before
    client = client_for(local_store)
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["out"]
    assert client.get_run(run.run_id).data.tags["medgen.audit.sha256"] == json_sha
    local = client.download_artifacts(run.run_id, "out/manifest.json", str(tmp_path / "dl"))
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == json_sha


class _Plain(BaseModel):
    x: int = 1


def test_log_config_accepts_plain_models_and_dicts(local_store):
    with start_run("medgen-test", "plain") as run:
        run.log_config(_Plain(), artifact_file="config/a.yaml")
    with start_run("medgen-test", "dict") as run2:
        run2.log_config({"a": {"b": [1, 2]}, "c": None})
    client = client_for(local_store)
    assert client.get_run(run.run_id).data.params == {"x": "1"}
    assert client.get_run(run2.run_id).data.params == {"a.b": "[1,2]", "c": ""}


def test_mlflow_dataset_digest_collides_where_the_manifest_tag_does_not(local_store, tmp_path):
    """The reason for ``medgen.manifest.<role>.sha256``: MLflow's dataset digest (8 hex chars of
    the first 10,000 rows) is the same for two manifests that differ after those rows."""
    import mlflow.data

    a = np.zeros((10_001, 2))
    b = a.copy()
    b[-1, 0] = 1.0
    assert mlflow.data.from_numpy(a).digest == mlflow.data.from_numpy(b).digest  # MLflow collides
    pa, pb = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(pa, a)
    np.save(pb, b)
    with start_run("medgen-test", "digest") as run:
        da = run.log_manifest(pa, role="a")
        db = run.log_manifest(pb, role="b")
    assert da != db and len(da) == len(db) == 64


def test_late_registration_rewrites_tags_and_refuses_params_already_logged(local_store):
    with pytest.raises(PHIError) as err:
        with start_run("medgen-test", "late", tags={"reader": "doe_john"}) as run:
            run.log_params({"who": "doe_john"})
            run.register_identifiers(["DOE^JOHN"])
    assert "john" not in str(err.value).lower()
    r = client_for(local_store).get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.tags["reader"] == "REDACTED-id"  # rewritten in place
    assert r.data.tags["medgen.phi.redactions"] == "1"
    assert r.data.params["who"] == "doe_john"  # immutable in MLflow: hence the loud failure


def test_figure_grid_accepts_2d_and_torch(local_store, tmp_path):
    import matplotlib.image as mpimg
    import torch

    with start_run("medgen-test", "grid2d") as run:
        path = run.log_figure_grid({"noisy": torch.rand(1, 16, 16), "clean": np.zeros((16, 16))},
                                   "slices")
    assert path == "figures/slices/grid.png"
    png = mpimg.imread(client_for(local_store).download_artifacts(run.run_id, path, str(tmp_path)))
    assert png.shape[:2] == (480, 240)  # 2 rows x 1 panel


def test_seal_mode_refuses_instead_of_rewriting(local_store):
    with start_run("medgen-test", "seal") as run:
        with pytest.raises(PHIError) as err:
            run.log_json({"created": "2026-01-02"}, "audit_19700101.json", on_phi="raise")
        with pytest.raises(PHIError):
            run.log_text("by DOE^JOHN", "notes.txt", on_phi="raise")
        with pytest.raises(ValueError):
            run.log_text("x", "y.txt", on_phi="ignore")
    assert "19700101" not in str(err.value) and "2026-01-02" not in str(err.value)
    assert client_for(local_store).list_artifacts(run.run_id) == []
