"""The training config tree: the task union, its cross-checks, version 1 -> 2, one-line errors."""

from __future__ import annotations

import logging

import pytest
import yaml

from medgen.config import load_config
from medgen.config.load import dump_config
from medgen.errors import ConfigError
from medgen.train.config import TrainConfig

BASE = {
    "version": 2,
    "model": {"name": "unet", "spatial_dims": 3, "channels": [4, 8], "num_res_units": 1},
    "data": {"manifest": "m.jsonl", "patch_size": [16, 16, 16]},
}
SR_MODEL = {"name": "rrdb_sr", "spatial_dims": 3, "scale_factors": [1, 1, 2], "features": 8,
            "growth": 4, "num_blocks": 1}


def cfg(overrides=(), **top):
    return load_config(TrainConfig, data={**BASE, **top}, overrides=list(overrides))


def err(overrides=(), **top) -> str:
    with pytest.raises(ConfigError) as e:
        cfg(overrides, **top)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_default_task_is_supervised_denoise_with_mr_noise():
    c = cfg()
    assert c.task.name == "denoise" and c.task.mode == "supervised"
    assert c.task.degradation == "mri-rician-mild" and not c.task.blindspot.enabled


def test_self_supervised_adds_no_noise_unless_asked():
    c = cfg(["task.mode=self-supervised"])
    assert c.task.degradation is None and c.task.blindspot.enabled
    c = cfg(["task.mode=self-supervised", "task.degradation=gaussian-mild"])
    assert c.task.degradation == "gaussian-mild"


def test_supervised_without_noise_is_refused():
    assert "supervised denoising needs task.degradation" in err(["task.degradation=null"])


def test_blindspot_needs_self_supervised():
    assert "blindspot.enabled needs mode: self-supervised" in err(["task.blindspot.enabled=true"])


def test_unknown_task_suggests():
    msg = err(["task.name=denoize"])
    assert "unknown task 'denoize' (did you mean 'denoise'?)" in msg
    assert "options: denoise, sr, synth, translate" in msg


def test_keys_of_another_task_are_unknown():
    msg = err(["task.factors=[1,1,2]"])
    assert "unknown key 'task.factors'" in msg


def test_misspelt_task_key_suggests_within_the_member():
    msg = err(task={"name": "sr", "profil": "rect"}, model=SR_MODEL)
    assert "unknown key 'task.profil' (did you mean 'profile'?)" in msg


def test_sr_profile_alias_and_options():
    c = cfg(task={"name": "sr", "profile": "rectangular", "adv_weight": 0}, model=SR_MODEL)
    assert c.task.profile == "rect"
    assert "profile: rect" in dump_config(c)  # the canonical name is what runs record
    msg = err(task={"name": "sr", "profile": "trapezoid"}, model=SR_MODEL)
    assert "task.profile: unknown slice profile 'trapezoid'" in msg
    assert "options: gaussian, rect (aliases: rectangular -> rect, box -> rect)" in msg


def test_model_must_suit_the_task():
    assert "task sr needs an SR generator (model.name: rrdb_sr), got 'unet'" in err(["task.name=sr"])
    ldm = {"name": "ldm", "spatial_dims": 3}
    assert "model 'ldm' is not trained by task 'denoise' (it is for: synth)" in err(model=ldm)


def test_sr_noise_preset_may_not_change_the_grid():
    msg = err(task={"name": "sr", "degradation": "thick-slice-x2"}, model=SR_MODEL)
    assert "changes the grid" in msg and "task.degradation" in msg


def test_bad_preset_name_suggests():
    msg = err(["task.degradation=mri-rician-mld"])
    assert "task.degradation" in msg and "did you mean 'mri-rician-mild'" in msg


def test_preset_for_another_modality_is_refused():
    msg = err(["card.modality=CT"])
    assert "'mri-rician-mild' is a MR preset but card.modality is CT" in msg
    assert cfg(["card.modality=CT", "task.degradation=ct-lowdose-25pct"])


def test_device_and_amp_are_checked():
    assert "unknown device 'gpu'" in err(["device=gpu"])
    assert "unknown amp 'bf17' (did you mean 'bf16'?)" in err(["amp=bf17"])


# --- version 1 ----------------------------------------------------------------------------------
V1_SR = {
    "version": 1, "task": "sr", "mode": "supervised",
    "model": SR_MODEL, "data": {"manifest": "m.jsonl", "patch_size": [16, 16, 16]},
    "degradation": {"preset": "mri-rician-mild"},
    "sr": {"factors": [1, 1, 2], "profile": "rect", "warmup_steps": 3, "adv_weight": 0},
}


def test_v1_loads_with_one_deprecation_line(caplog):
    with caplog.at_level(logging.WARNING, logger="medgen.config"):
        c = load_config(TrainConfig, data=V1_SR)
    assert c.version == 2 and c.task.name == "sr" and c.task.profile == "rect"
    assert c.task.degradation == "mri-rician-mild" and c.task.warmup_steps == 3
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "version 1 is deprecated" in notes[0] and "\n" not in notes[0]


def test_v1_set_keys_are_renamed_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="medgen.config"):
        c = load_config(TrainConfig, data=V1_SR, overrides=["sr.warmup_steps=7",
                                                           "degradation.preset=null"])
    assert c.task.warmup_steps == 7 and c.task.degradation is None
    assert any("--set sr.warmup_steps: deprecated key, read as task.warmup_steps" in r.getMessage()
               for r in caplog.records)


def test_v1_without_version_is_recognised_by_shape():
    raw = {k: v for k, v in V1_SR.items() if k != "version"}
    assert load_config(TrainConfig, data=raw).task.name == "sr"


def test_v1_denoise_sections_move_into_the_task():
    v1 = {**BASE, "version": 1, "mode": "self-supervised", "blindspot": {"fraction": 0.05},
          "loss": {"recon": "l2"}}
    c = load_config(TrainConfig, data=v1)
    assert c.task.mode == "self-supervised" and c.task.blindspot.fraction == 0.05
    assert c.task.loss.recon == "l2" and c.task.degradation is None


def test_v1_section_of_another_task_stays_an_error():
    v1 = {**BASE, "version": 1, "task": "denoise", "sr": {"factors": [1, 1, 2]}}
    with pytest.raises(ConfigError, match="unknown key 'task.sr'"):
        load_config(TrainConfig, data=v1)


def test_newer_version_says_upgrade_medgen():
    with pytest.raises(ConfigError, match="newer than this medgen"):
        load_config(TrainConfig, data={**BASE, "version": 3})


def test_shipped_v1_files_read_as_their_v2_rewrites(tmp_path):
    """Each configs/train file's version-1 form (rebuilt from the version-2 file) gives the same
    resolved config: the migration and the rewrite agree."""
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml")):
        new = load_config(TrainConfig, p)
        raw = yaml.safe_load(p.read_text())
        task = dict(raw.pop("task"))
        name = task.pop("name")
        v1 = {**raw, "version": 1, "task": name}
        if name == "denoise":
            for k in ("mode", "loss", "blindspot"):
                if k in task:
                    v1[k] = task.pop(k)
        if "degradation" in task:
            v1["degradation"] = {"preset": task.pop("degradation")}
        if name != "denoise" and task:
            v1[name] = task
        old = load_config(TrainConfig, data=v1)
        assert dump_config(old) == dump_config(new), p.name
