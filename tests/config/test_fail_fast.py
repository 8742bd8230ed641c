"""Every bad value fails before any work starts: exit 2, one line naming the key, no torch/MONAI/
MLflow imported, nothing created (issue 14), and the issue-21 traps at the config level."""

from __future__ import annotations

import json

import pytest

from tests.config.conftest import REPO, medgen

HEAVY_FREE = []  # what a fast failure may have imported of torch, monai, mlflow
#: generous bound for a loaded CI machine; the real proof of "before any work" is HEAVY_FREE
MAX_SECONDS = 10.0


def assert_fails_fast(rep, err, *words):
    lines = err.strip().splitlines()
    assert rep["code"] == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    assert rep["heavy"] == HEAVY_FREE, rep
    assert rep["seconds"] < MAX_SECONDS, rep
    return lines[0]


# --- medgen train --------------------------------------------------------------------------------
def test_bad_preset_name(manifests, tiny_yaml, tmp_path):
    cfg = tiny_yaml(manifests["split"])
    rep, out, err = medgen("train", cfg, "--set", "task.degradation=mri-rician-mlid", cwd=tmp_path)
    assert_fails_fast(rep, err, "task.degradation", "did you mean 'mri-rician-mild'")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_manifest(tiny_yaml, tmp_path):
    cfg = tiny_yaml(tmp_path / "nowhere.jsonl")
    rep, out, err = medgen("train", cfg, cwd=tmp_path)
    assert_fails_fast(rep, err, "data.manifest", "nowhere.jsonl", "not found")
    assert not (tmp_path / "runs").exists()


def test_unsplit_manifest_says_how_to_split(manifests, tiny_yaml, tmp_path):
    rep, out, err = medgen("train", tiny_yaml(manifests["unsplit"]), cwd=tmp_path)
    line = assert_fails_fast(rep, err, "data.manifest", "no train/val split")
    assert "medgen manifest split fresh.jsonl -o fresh.split.jsonl --ratios" in line
    assert "--seed 0" in line and "data.train_split: null" in line


def test_train_split_typo_suggests(manifests, tiny_yaml, tmp_path):
    rep, out, err = medgen("train", tiny_yaml(manifests["split"]), "--set",
                           "data.train_split=trian", cwd=tmp_path)
    assert_fails_fast(rep, err, "data.train_split", "did you mean 'train'", "splits: train 2, val 2")


@pytest.mark.parametrize("sets,words", [
    (["task.mode=self-supervisd"], ["task.mode", "did you mean 'self-supervised'"]),
    (["optim.max_step=3"], ["unknown key 'optim.max_step'", "did you mean 'max_steps'"]),
    (["model.name=unett"], ["unknown model 'unett'", "did you mean 'unet'"]),
    (["task.name=sr"], ["task sr needs an SR generator"]),
    (["device=gpu"], ["device", "options: auto, cpu, cuda, cuda:N"]),
    (["card.modality=CT"], ["MR preset but card.modality is CT"]),
])
def test_bad_values(manifests, tiny_yaml, tmp_path, sets, words):
    args = [x for s in sets for x in ("--set", s)]
    rep, out, err = medgen("train", tiny_yaml(manifests["split"]), *args, cwd=tmp_path)
    assert_fails_fast(rep, err, *words)


def test_zero_val_volumes_train_with_a_warning_that_survives_quiet(manifests, tiny_yaml, tmp_path):
    """A split without validation volumes trains, says so at the start and again at the end,
    also with -q (and in the JSON result a pipeline reads)."""
    rep, out, err = medgen("train", tiny_yaml(manifests["noval"]), "-q", cwd=tmp_path)
    assert rep["code"] == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["step"] == 1 and res["best"] is None
    assert any("data.val_split: split 'val' of noval.jsonl has 0 volumes" in w
               for w in res["warnings"])
    tail = err.strip().splitlines()[-2:]
    assert tail[0] == "1 warning(s):" and tail[1].startswith("warning: data.val_split")


# --- medgen run ----------------------------------------------------------------------------------
PIPE = str(REPO / "pipelines" / "sr-thick-slice.yaml")


def test_force_names_no_step(tmp_path):
    rep, out, err = medgen("run", PIPE, "--set", f"workdir={tmp_path / 'w'}", "--force", "trian",
                           cwd=tmp_path)
    assert_fails_fast(rep, err, "--force", "no step 'trian'", "did you mean 'train'")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("sets,words", [
    (["steps.4.config=train/sr-tinyy"], ["steps.4.config", "did you mean 'train/sr-tiny'"]),
    (["steps.4.set=[task.profile=rectangl]"], ["steps.4.config", "task.profile",
                                              "unknown slice profile"]),
    (["steps.2.ratios={train: 0.7, val: 0.1, test: 0.1}"], ["steps.2.ratios", "add up to 0.9"]),
    (["steps.3.preset=thick-slice-x3"], ["steps.3.preset", "did you mean 'thick-slice-x"]),
    (["steps.5.model=${steps.train.bset}"], ["steps.5.model", "did you mean 'best'"]),
    (["steps.5.model=/nonexistent/ckpt"], ["steps.5.model", "not a checkpoint folder"]),
    (["steps.1.kind=died"], ["steps.1.kind", "did you mean 'deid'"]),
    (["steps.7.steps=[trian]"], ["steps.7.steps", "did you mean 'train'"]),
    (["steps.1.options=[retain-uid]"], ["steps.1.options", "did you mean 'retain-uids'"]),
    (["steps.1.src=/nonexistent/dicom"], ["steps.1.src", "'dicom' not found"]),
])
def test_dry_run_validates_every_reference(tmp_path, sets, words):
    args = [x for s in sets for x in ("--set", s)]
    rep, out, err = medgen("run", PIPE, "--dry-run", "--set", f"workdir={tmp_path / 'w'}", *args,
                           cwd=tmp_path)
    assert_fails_fast(rep, err, *words)
    assert not (tmp_path / "w").exists()


def test_bad_value_fails_a_real_run_before_any_step(tmp_path):
    rep, out, err = medgen("run", PIPE, "--set", f"workdir={tmp_path / 'w'}", "--set",
                           "steps.4.set=[task.degradation=mri-rician-mld]", cwd=tmp_path)
    assert_fails_fast(rep, err, "steps.4.config", "task.degradation")
    assert not (tmp_path / "w").exists()  # not even the workdir or the key


def test_dry_run_prints_an_estimate_per_step(tmp_path):
    rep, out, err = medgen("run", PIPE, "--dry-run", "--set", f"workdir={tmp_path / 'w'}",
                           cwd=tmp_path)
    assert rep["code"] == 0 and rep["heavy"] == HEAVY_FREE, err
    lines = err.strip().splitlines()
    steps = [ln for ln in lines if ln.startswith("planned ")]
    assert len(steps) == 8 and all(" ~" in ln and " [" in ln for ln in steps)
    train = next(ln for ln in steps if ln.startswith("planned  train"))
    assert "40 steps x batch 2 x 16x16x16 patch" in train
    assert lines[-1].startswith("estimate: ~") and "medgen/pipeline/estimate.py" in lines[-1]


# --- medgen manifest split -------------------------------------------------------------------------
@pytest.mark.parametrize("ratios,words", [
    ("train=0.7,val=0.1,test=0.1", ["--ratios", "add up to 0.9, not 1"]),
    ("train=0.7,val=0.3,train=0.0", ["--ratios", "'train' given twice"]),
    ("train=1.2,val=-0.2", ["--ratios", "not a fraction"]),
    ("train:0.5,val:0.5", ["--ratios", "not name=fraction"]),
])
def test_split_ratios_are_checked(manifests, tmp_path, ratios, words):
    out_path = tmp_path / "s.jsonl"
    rep, out, err = medgen("manifest", "split", manifests["unsplit"], "-o", out_path,
                           "--ratios", ratios, cwd=tmp_path)
    assert_fails_fast(rep, err, *words)
    assert not out_path.exists()


def test_split_warns_when_a_split_gets_no_subject(manifests, tmp_path):
    rep, out, err = medgen("manifest", "split", manifests["unsplit"], "-o", tmp_path / "s.jsonl",
                           "--ratios", "a=0.4,b=0.3,c=0.1,d=0.1,e=0.1", cwd=tmp_path)
    assert rep["code"] == 0, err
    assert "got no volumes: 4 subject(s) for 5 split(s)" in err
    rep, out, err = medgen("manifest", "split", manifests["unsplit"], "-o", tmp_path / "t.jsonl",
                           "--ratios", "train=0.5,val=0.5", cwd=tmp_path)
    assert rep["code"] == 0 and "warning" not in err, err
