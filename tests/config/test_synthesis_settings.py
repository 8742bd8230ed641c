"""``medgen synthesize`` options and what they name are checked before torch is imported."""

from __future__ import annotations

import json

import pytest

from medgen.errors import ConfigError
from tests.config.conftest import medgen


@pytest.fixture
def ckpt(tmp_path):
    """A checkpoint folder's config.json and card.json (the check reads nothing else)."""

    def make(name="ldm", conditions=None, task="synth"):
        from medgen.models import parse_model_config

        cfg = parse_model_config({"name": name, "spatial_dims": 3,
                                  "conditions": conditions or []})
        d = tmp_path / f"ckpt-{name}"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
        (d / "card.json").write_text(json.dumps({"task": task}))
        return d

    return make


SIDE = [{"name": "side", "kind": "class", "classes": ["left", "right"]}]


def settings(model, **kw):
    from medgen.synth.config import SynthesisSettings

    return SynthesisSettings.from_cli(model=str(model), **{"n": 4, "memorization": False, **kw})


def test_good_settings_pass(ckpt):
    settings(ckpt(conditions=SIDE), conditions=["side=left"], sampler="ddim").check_inputs()


@pytest.mark.parametrize("kw,words", [
    ({"fmt": "dicm"}, ["--format", "did you mean 'dicom'"]),
    ({"indices": [1, 4]}, ["--index", "4 is outside 0..3"]),
    ({"memorization": True}, ["--train-manifest", "needs the model's training manifest"]),
    ({"keep_flagged": True}, ["--keep-flagged", "needs the memorization check"]),
    ({"sampler": "ddin"}, ["--sampler", "did you mean 'ddim'"]),
    ({"device": "gpu"}, ["--device", "options: auto, cpu, cuda"]),
])
def test_bad_options_name_the_option(ckpt, kw, words):
    with pytest.raises(ConfigError) as e:
        settings(ckpt(), **kw)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("model,kw,words", [
    (dict(conditions=SIDE), {"conditions": ["sid=left"]}, ["--condition", "unknown condition 'sid'"]),
    (dict(conditions=SIDE), {"conditions": []}, ["--condition", "needs a value"]),
    (dict(name="vae-gen"), {"steps": 10}, ["--steps", "is for ldm models"]),
    (dict(task="denoise"), {}, ["--model", "is not a synthesis model"]),
])
def test_checkpoint_conditions_and_sampler_are_checked(ckpt, model, kw, words):
    with pytest.raises(ConfigError) as e:
        settings(ckpt(**model), **kw).check_inputs()
    for w in words:
        assert w in str(e.value)


def test_memorization_manifest_and_split_are_checked(ckpt, manifests):
    s = settings(ckpt(), memorization=True, train_manifest=str(manifests["unsplit"]))
    with pytest.raises(ConfigError, match="--train-manifest: fresh.jsonl has no train/val split"):
        s.check_inputs()
    settings(ckpt(), memorization=True, train_manifest=str(manifests["split"])).check_inputs()


def test_cli_fails_fast(ckpt, tmp_path):
    from tests.config.test_fail_fast import assert_fails_fast

    out = tmp_path / "out"
    rep, _, err = medgen("synthesize", "--model", ckpt(conditions=SIDE), "-n", "2", out,
                         "--condition", "side=up", "--no-memorization-check", cwd=tmp_path)
    assert_fails_fast(rep, err, "--condition", "side")
    assert not out.exists()
