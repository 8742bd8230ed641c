"""Quality report: metrics move the right way, MS-SSIM adapted to small grids, FID only with a
local extractor, self-contained HTML, ``medgen evaluate synth`` with MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.synth.data import prepare
from medgen.synth.quality import (
    NO_EXTRACTOR,
    ms_ssim_pairs,
    ms_ssim_settings,
    quality_report,
    write_report,
)

from .conftest import class_phantom


def _set(seeds):
    return [prepare({"image": torch.as_tensor(class_phantom("left" if s % 2 else "right", s))[None]},
                    [16] * 3, 3)[0].numpy() for s in seeds]


@pytest.fixture(scope="module")
def sets():
    real = _set(range(300, 310))
    same = _set(range(400, 410))  # the same population, other subjects
    mean = np.mean(real, 0)
    collapsed = [mean + 0.002 * np.random.default_rng(i).standard_normal(mean.shape)
                 .astype(np.float32) for i in range(10)]  # mode collapse: one image
    return real, same, collapsed


def test_metrics_separate_a_collapsed_set(sets):
    real, same, collapsed = sets
    good = quality_report(real, same, seed=0, n_perm=100, c2st_epochs=40)
    bad = quality_report(real, collapsed, seed=0, n_perm=100, c2st_epochs=40)
    g, b = good["summary"], bad["summary"]
    assert b["diversity_ratio"] < 0.2 < g["diversity_ratio"]
    assert b["c2st_auc"] > 0.8 and b["c2st_auc"] > g["c2st_auc"]
    assert b["mmd2_downsampled"] > g["mmd2_downsampled"]
    assert b["mmd_p_downsampled"] <= 0.05
    assert good["fid"] == {"computed": False, "value": None, "reason": NO_EXTRACTOR}
    again = quality_report(real, same, seed=0, n_perm=100, c2st_epochs=40)
    assert again["summary"] == g  # seeded


@pytest.mark.parametrize("side", [16, 24, 48])
def test_ms_ssim_adapted_to_small_volumes(side):
    from monai.metrics import MultiScaleSSIMMetric

    rng = np.random.default_rng(0)
    a = [rng.random((side,) * 3).astype(np.float32) for _ in range(2)]
    with pytest.raises(ValueError, match="image height must be larger"):
        MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0)(
            torch.as_tensor(a[0])[None, None], torch.as_tensor(a[1])[None, None])
    st = ms_ssim_settings([side] * 3)
    assert st["scales"] >= 2 and abs(sum(st["weights"]) - 1) < 1e-9
    v = ms_ssim_pairs(a, [(0, 1), (0, 0)], st, 1.0)
    assert v[1] == pytest.approx(1.0, abs=1e-5) and v[0] < 0.9


def test_fid_with_a_local_torchscript_extractor(sets, tmp_path):
    real, same, _ = sets
    torch.manual_seed(0)
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(),
                                               torch.nn.AdaptiveAvgPool3d(2),
                                               torch.nn.Flatten()))
    path = tmp_path / "extractor.pt"
    net.save(str(path))
    rep = quality_report(real[:6], same[:6], extractor=path, n_perm=20, c2st_epochs=5)
    assert rep["fid"]["computed"] and rep["fid"]["value"] >= 0 and rep["fid"]["dim"] == 32
    assert rep["fid"]["extractor"] == "torchscript:extractor"


def test_html_is_self_contained(sets, tmp_path):
    real, same, _ = sets
    rep = quality_report(real[:4], same[:4], n_perm=20, c2st_epochs=5)
    memorization = {"summary": {"n_samples": 2, "n_flagged": 0, "rate": 0.0, "thresholds":
                         {"ncc": 0.01, "embedding": 0.01}},
             "samples": [{"ncc_distance": 0.1, "embedding_distance": 0.2}] * 2}
    j, h = write_report(rep, real[:4], same[:4], tmp_path, memorization=memorization)
    html = h.read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert json.loads(j.read_text())["summary"]["c2st_auc"] == rep["summary"]["c2st_auc"]


def test_cli_evaluate_synth(trained_vae, class_manifest, tmp_path):
    from typer.testing import CliRunner

    from medgen.cli import app
    from medgen.synth.sampling import synthesize

    res = synthesize(trained_vae.last, 6, tmp_path / "set", conditions=["side=left"],
                     train_manifest=class_manifest, tracking=False, keep_flagged=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = CliRunner().invoke(app, ["evaluate", "synth", "--real", str(class_manifest),
                                 "--synthetic", str(res.dst), "--permutations", "50",
                                 "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= out["c2st_auc"] <= 1 and out["fid"] == NO_EXTRACTOR
    assert (res.dst / "quality" / "quality.html").exists()
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.get_run(out["run_id"])
    assert "quality/c2st_auc" in run.data.metrics and "quality/memorization_rate" in run.data.metrics
    names = {a.path for a in client.list_artifacts(out["run_id"], "quality")}
    assert {"quality/quality.html", "quality/quality.json"} <= names
