"""``medgen train CONFIG.yaml [--set k=v]``."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training config (YAML)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config value: a.b=c (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint (the config must be the same, except --set optim.max_steps=N to extend the run)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow server (default: ./mlflow.db or $MLFLOW_TRACKING_URI)."),
    run_name: str = typer.Option(None, "--run-name"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (for schedulers); warnings are still summarised at the end."),
):
    """Train a model from a config; checkpoints land in OUTPUT_DIR/RUN_NAME/checkpoints/{best,last}.

    The config and everything it points to (manifest and splits, presets, checkpoints) are checked
    before torch is imported: a bad value fails in about a second with exit 2.
    """
    import json
    import logging

    from medgen.cli._common import fail
    from medgen.errors import MedgenError
    from medgen.utils.log import WarningCollector

    log = logging.getLogger("medgen.train")
    overrides = list(set_ or [])
    if tracking_uri:
        overrides.append(f"tracking.tracking_uri={tracking_uri}")
    with WarningCollector() as warnings:
        cfg = _load_and_check(config, overrides, fail, log)
        try:
            res = _fit(cfg, run_name=run_name, resume=resume, quiet=quiet)
        except MedgenError as exc:
            _summarise(warnings)
            fail(exc)
    lines = _summarise(warnings)
    if res.mlflow_run_id and not quiet:
        from medgen.track.store import resolve_tracking_uri, store_line

        typer.echo(store_line(resolve_tracking_uri(cfg.tracking.tracking_uri)), err=True)
    typer.echo(json.dumps({"run_dir": str(res.run_dir), "last": str(res.last),
                           "best": str(res.best) if res.best else None, "step": res.step,
                           "weights_sha256": res.weights_sha256, "mlflow_run_id": res.mlflow_run_id,
                           "metrics": res.metrics, "warnings": lines}))


def _load_and_check(config: Path, overrides: list[str], fail, log):
    """The validated config, its inputs checked (torch-free); exit 2 on the first problem."""
    from medgen.config import load_config
    from medgen.errors import MedgenError
    from medgen.train.config import TrainConfig
    from medgen.train.preflight import preflight

    try:
        cfg = load_config(TrainConfig, config, overrides)
        for line in preflight(cfg):
            log.warning("%s", line)
    except MedgenError as exc:
        fail(exc)
    return cfg


def _fit(cfg, *, run_name: str | None, resume: bool, quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from medgen.cli._common import console
    from medgen.train.trainer import Trainer

    prog = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  {task.fields[sps]:.2f} steps/s"),
                    TimeRemainingColumn(), console=console(stderr=True), disable=quiet)
    task = prog.add_task("train", total=cfg.optim.max_steps, loss=float("nan"), sps=0.0)

    def on_step(step, total, loss, sps):
        prog.update(task, completed=step, loss=loss, sps=sps)

    with prog:
        trainer = Trainer(cfg, run_name=run_name, resume=resume, quiet=quiet, progress=on_step)
        return trainer.fit()


def _summarise(warnings) -> list[str]:
    """Repeat every warning at the end, one line each (also with ``-q``)."""
    lines = warnings.summary()
    if lines:
        typer.echo(f"{len(lines)} warning(s):", err=True)
        for line in lines:
            typer.echo(f"warning: {line}", err=True)
    return lines
