"""A denoise job is an MLflow run (real sqlite store); models load from runs:/ URIs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medgen.cli import app
from medgen.utils.hashing import sha256_bytes


def test_job_is_tracked_and_model_comes_from_a_runs_uri(tmp_path, tiny_ckpt, mixed_tree,
                                                        monkeypatch):
    from medgen.track import client_for, start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MEDGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with start_run("medgen-train", "tiny", tracking_uri=uri) as run:
        run.log_artifact(tiny_ckpt, "checkpoints/best")
        train_id = run.run_id
    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["denoise", "--model", f"runs:/{train_id}/checkpoints/best",
                                   str(mixed_tree), str(dst), "--tracking-uri", uri,
                                   "--threads", "1", "--quiet"])
    assert res.exit_code == 3, res.output
    summary = json.loads([x for x in res.stdout.splitlines() if x.startswith("{")][-1])
    assert summary["ok"] == 3 and summary["tracking_run_id"]
    # the checkpoint was downloaded once into the cache (digests verified on load)
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1
    assert sorted(f.name for f in cached[0].iterdir()) == ["card.json", "config.json",
                                                           "model.safetensors"]
    # a registered model version resolves the same way (models:/ URI)
    from medgen.track.models import resolve_model

    c = client_for(uri)
    c.create_registered_model("tiny-denoiser")
    c.create_model_version("tiny-denoiser", source=f"runs:/{train_id}/checkpoints/best",
                           run_id=train_id)
    reg = resolve_model("models:/tiny-denoiser/1", tracking_uri=uri)
    assert (reg / "model.safetensors").read_bytes() == (tiny_ckpt / "model.safetensors").read_bytes()

    client = client_for(uri)
    r = client.get_run(summary["tracking_run_id"])
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.name == "medgen-denoise"
    card = json.loads((tiny_ckpt / "card.json").read_text())
    assert r.data.tags["medgen.model.weights_sha256"] == card["weights_sha256"]
    assert r.data.tags["medgen.job_digest"] == summary["job_digest"]
    assert r.data.tags["medgen.manifest.input.sha256"] == summary["input_digest"]
    assert r.data.params["model_run_id"] == train_id
    assert r.data.params["model_artifact_path"] == "checkpoints/best"
    assert r.data.metrics["items_ok"] == 3 and r.data.metrics["items_quarantined"] == 4
    assert r.data.tags.get("medgen.audit.sha256")  # the run was sealed (runs:/ model included)
    assert r.data.metrics["voxels_per_s"] > 0
    # the output manifest artifact: sha256 of every output, sealed by a tag
    local = client.download_artifacts(r.info.run_id, "outputs/output_manifest.json", str(tmp_path))
    data = open(local, "rb").read()
    assert sha256_bytes(data) == r.data.tags["medgen.output_manifest.sha256"]
    man = json.loads(data)
    assert len(man["items"]) == 3
    on_disk = json.loads((dst / "output_manifest.json").read_text())
    assert man == on_disk
    # no absolute paths (PHI may live in them) in params, tags or the manifest
    text = json.dumps([r.data.params, r.data.tags]) + data.decode()
    assert str(tmp_path) not in text and str(mixed_tree) not in text


def test_nothing_of_the_input_paths_reaches_mlflow(tmp_path, tiny_ckpt, ct5n_dir, monkeypatch):
    """13.3: canary identifiers in folder and file names (a name without carets, a digit-run ID,
    a date) never reach params, tags or artifacts; DST's own ledger keeps the relative paths."""
    import shutil

    from medgen.track import client_for

    from .infer_helpers import write_phantom

    src = tmp_path / "in"
    write_phantom(src / "visit_Zyxwv_Qrstu_4" / "MRN99887766_t1.nii.gz", seed=1)
    write_phantom(src / "visit_Zyxwv_Qrstu_4" / "2024-03-05_flair.nii.gz", seed=2)
    shutil.copytree(ct5n_dir, src / "Zyxwv_Qrstu_19700101")
    (src / "Zyxwv_Qrstu_19700101" / "MRN99887766.txt.dcm").write_bytes(b"not dicom")  # a reject
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["denoise", "--model", str(tiny_ckpt), str(src), str(dst),
                                   "--tracking-uri", uri, "--threads", "1", "--quiet"])
    assert res.exit_code == 3, res.output
    run_id = json.loads([x for x in res.stdout.splitlines() if x.startswith("{")][-1])["tracking_run_id"]
    client = client_for(uri)
    r = client.get_run(run_id)
    texts = [json.dumps([r.data.params, r.data.tags])]
    art = tmp_path / "artifacts"
    local = client.download_artifacts(run_id, "", str(art))
    for f in Path(local).rglob("*"):
        if f.is_file():
            texts.append(f.relative_to(local).as_posix())
            texts.append(f.read_bytes().decode("utf-8", "replace"))
    blob = "\n".join(texts)
    assert "outputs/output_manifest.json" in blob and len(blob) > 1000
    for canary in ("Zyxwv", "Qrstu", "99887766", "2024-03-05", "19700101", "visit_", "MRN", "flair"):
        assert canary not in blob, canary
    # the operator's own files in DST keep the relative paths (they never leave DST)
    assert "MRN99887766_t1.nii.gz" in (dst / "ledger.jsonl").read_text()
    assert (dst / "visit_Zyxwv_Qrstu_4" / "MRN99887766_t1.nii.gz").is_file()
