"""The names in medgen.config.supported are the names the registries and configs accept."""

from __future__ import annotations

import typing

import pytest

from medgen.config.supported import (
    SupportedDegradation,
    SupportedModel,
    SupportedStepKind,
    SupportedTask,
)


def _literals(model_cls, field="name") -> set[str]:
    return {str(v) for v in typing.get_args(model_cls.model_fields[field].annotation)}


def test_tasks_registry_and_union_agree():
    from medgen.train.config import DenoiseTask, SRTask, SynthTask, TranslateTask
    from medgen.train.tasks import TASKS

    enum = {t.value for t in SupportedTask}
    assert set(TASKS.names()) == enum
    union = set().union(*(_literals(c) for c in (DenoiseTask, SRTask, SynthTask, TranslateTask)))
    assert union == enum


def test_model_registry_and_union_agree():
    from medgen.models.registry import MODELS, ModelConfig

    enum = {m.value for m in SupportedModel}
    assert enum <= set(MODELS.names())  # plugins may add more
    members = typing.get_args(typing.get_args(ModelConfig)[0])
    assert set().union(*(_literals(m) for m in members)) == enum
    for name in enum:  # every family says which tasks train it, in the task names
        assert set(MODELS.get(name).tasks) <= {t.value for t in SupportedTask}


def test_degradation_catalogue_and_registry_agree():
    from medgen.transforms.catalog import CATALOG
    from medgen.transforms.degradations import DEGRADATIONS

    enum = {d.value for d in SupportedDegradation}
    assert set(CATALOG) == enum
    assert enum <= set(DEGRADATIONS.names())
    for name in enum:  # the catalogue (torch-free) is what the registry uses
        assert DEGRADATIONS.get(name).defaults == CATALOG[name].defaults


def test_pipeline_step_kinds_agree():
    from medgen.pipeline import steps
    from medgen.pipeline.spec import Step

    members = typing.get_args(typing.get_args(Step)[0])
    kinds = set().union(*(_literals(m, "kind") for m in members))
    assert kinds == {k.value for k in SupportedStepKind}
    for k in kinds:  # every kind has an implementation
        assert callable(getattr(steps, "step_" + k.replace("-", "_")))


@pytest.mark.parametrize("value,expected", [("rect", "rect"), ("rectangular", "rect"),
                                            ("Rectangular", "rect"), ("box", "rect"),
                                            ("GAUSSIAN", "gaussian")])
def test_profile_aliases(value, expected):
    from medgen.config.fields import check_choice
    from medgen.config.supported import PROFILE_ALIASES, SupportedProfile

    assert check_choice(value, SupportedProfile, "slice profile", PROFILE_ALIASES) == expected


def test_choice_error_names_options_and_suggests():
    from medgen.config.fields import check_choice
    from medgen.config.supported import PROFILE_ALIASES, SupportedProfile

    with pytest.raises(ValueError) as e:
        check_choice("gausian", SupportedProfile, "slice profile", PROFILE_ALIASES)
    msg = str(e.value)
    assert "did you mean 'gaussian'" in msg and "options: gaussian, rect" in msg
    assert "rectangular -> rect" in msg


@pytest.mark.parametrize("dev,ok", [("auto", True), ("cpu", True), ("cuda", True),
                                    ("cuda:1", True), ("CUDA:0", True), ("gpu", False),
                                    ("cuda:x", False), ("", False)])
def test_device_field(dev, ok):
    from medgen.config.fields import check_device

    if ok:
        assert check_device(dev) == dev.lower()
    else:
        with pytest.raises(ValueError, match="options: auto, cpu, cuda, cuda:N"):
            check_device(dev)
