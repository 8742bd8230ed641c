"""Every shipped config, preset and pipeline loads, validates and is of the current version."""

from __future__ import annotations

import logging

import pytest

from tests.config.conftest import REPO

CONFIGS = REPO / "configs"


def _ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


TRAIN = sorted((CONFIGS / "train").glob("*.yaml"))
MODELS = sorted((CONFIGS / "model").glob("*.yaml")) + sorted((CONFIGS / "tiny").glob("*.yaml"))
PRESETS = sorted((CONFIGS / "transforms").glob("*.yaml"))
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))


def test_something_is_shipped():
    assert TRAIN and MODELS and PRESETS and PIPELINES


@pytest.mark.parametrize("path", TRAIN, ids=_ids(TRAIN))
def test_training_configs_are_current_and_valid(path, caplog):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    with caplog.at_level(logging.WARNING, logger="medgen.config"):
        cfg = load_config(TrainConfig, path)
    assert cfg.version == 2 and not caplog.records  # no deprecation note for shipped files
    assert cfg.task.name in path.stem or cfg.task.name == "synth"


@pytest.mark.parametrize("path", MODELS, ids=_ids(MODELS))
def test_model_configs_validate(path):
    from medgen.models import load_model_config

    assert load_model_config(path).name


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_presets_validate_with_units(path):
    from medgen.transforms.presets import check_preset

    p = check_preset(path)
    assert p.units in ("window", "HU") and p.degradations


def test_deid_pixel_rules_example_validates():
    from medgen.deid.pixel_rules import load_pixel_rules

    load_pixel_rules(CONFIGS / "deid" / "pixel_rules.example.yaml")


@pytest.mark.parametrize("path", PIPELINES, ids=_ids(PIPELINES))
def test_pipelines_plan_with_every_reference_checked(path, tmp_path):
    """The dry-run plan resolves each step's config (with its --set items), preset and
    references, and gives every step an estimate."""
    from medgen.pipeline import load_pipeline
    from medgen.pipeline.runner import Runner

    spec = load_pipeline(path, [f"workdir={tmp_path / 'w'}"])
    said: list[str] = []
    runner = Runner(spec, dry_run=True, say=said.append)
    plan = runner.plan()
    assert [p.status for p in plan] == ["planned"] * len(spec.steps)
    assert all(p.seconds > 0 for p in plan) and said[-1].startswith("estimate: ~")
    assert not (tmp_path / "w").exists()
