"""``medgen config check | upgrade`` - validate a config file, or rewrite an old one."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Config files: check one (and what it points to), or upgrade an old one.",
                  no_args_is_help=True)


def _kind(raw: dict) -> str:
    if "steps" in raw:
        return "pipeline"
    if "degradations" in raw:
        return "preset"
    if "data" in raw or "task" in raw:
        return "train"
    return "model"


@app.command("check")
def check(
    config: Path = typer.Argument(..., help="A training config, pipeline, preset or model YAML."),
    set_: list[str] = typer.Option(None, "--set", help="Override a value: a.b=c (repeatable)."),
):
    """Validate a config and what it names (manifest and splits, presets, checkpoints, step
    references) without running anything; exit 0 if usable, 2 with one line if not."""
    from medgen.cli._common import fail
    from medgen.config import load_yaml
    from medgen.errors import MedgenError

    try:
        kind = _kind(load_yaml(config))
        what, warnings = _CHECKS[kind](config, list(set_ or []))
    except MedgenError as exc:
        fail(exc)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"ok: {config.name}: {what}")


def _check_train(path: Path, sets: list[str]):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig
    from medgen.train.preflight import preflight

    cfg = load_config(TrainConfig, path, sets)
    return (f"training config v{cfg.version} (task {cfg.task.name}, model {cfg.model.name})",
            preflight(cfg))


def _check_pipeline(path: Path, sets: list[str]):
    from medgen.pipeline import load_pipeline
    from medgen.pipeline.estimate import fmt_seconds
    from medgen.pipeline.runner import Runner

    spec = load_pipeline(path, sets)
    runner = Runner(spec, dry_run=True, say=lambda m: None)
    plan = runner.plan()
    total = sum(r.seconds for r in plan)
    return (f"pipeline '{spec.name}', {len(plan)} steps, rough estimate {fmt_seconds(total)}",
            runner.warnings)


def _check_preset(path: Path, sets: list[str]):
    from medgen.transforms.presets import check_preset

    p = check_preset(path, sets or None)
    return f"degradation preset ({p.modality}, noise units {p.units}, {len(p.items())} item(s))", []


def _check_model(path: Path, sets: list[str]):
    from medgen.models import load_model_config

    cfg = load_model_config(path, sets or None)
    return f"model config ({cfg.name}, {cfg.spatial_dims}D)", []


_CHECKS = {"train": _check_train, "pipeline": _check_pipeline, "preset": _check_preset,
           "model": _check_model}


@app.command("upgrade")
def upgrade(
    config: Path = typer.Argument(..., help="A training config of an older version."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here (default: print)."),
):
    """Print (or write) a config in the current version's shape. Comments are not kept."""
    import yaml

    from medgen.cli._common import fail
    from medgen.config import load_yaml
    from medgen.config.versions import upgrade as upgrade_data
    from medgen.errors import MedgenError
    from medgen.train.config import TrainConfig

    try:
        raw, notes = upgrade_data(TrainConfig, load_yaml(config), config.name)
        TrainConfig.model_validate(raw)  # the result must load as it is
    except MedgenError as exc:
        fail(exc)
    except ValueError as exc:  # pydantic's ValidationError: say it as load_config would
        from medgen.config.base import format_validation_error

        fail(format_validation_error(exc, TrainConfig, config.name))
    first = {k: raw[k] for k in ("version", "task") if k in raw}
    text = yaml.safe_dump({**first, **raw}, sort_keys=False, default_flow_style=None)
    if output is None:
        typer.echo(text, nl=False)
    else:
        if output.resolve() == config.resolve():
            fail(f"{output.name}: refusing to overwrite the input; write elsewhere")
        from medgen.utils.atomic import atomic_write_text

        atomic_write_text(output, text)
    typer.echo(f"{config.name}: {'version ' + str(raw.get('version')) if notes else 'already current'}"
               " (comments are not carried over)", err=True)
