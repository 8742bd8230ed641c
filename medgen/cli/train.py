"""``medgen train CONFIG.yaml [--set k=v]``."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training config (YAML)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config value: a.b=c (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow server (default: ./mlflow.db or $MLFLOW_TRACKING_URI)."),
    run_name: str = typer.Option(None, "--run-name"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (for schedulers)."),
):
    """Train a model from a config; checkpoints land in OUTPUT_DIR/RUN_NAME/checkpoints/{best,last}."""
    import json

    from medgen.cli._common import console, fail
    from medgen.config import load_config
    from medgen.errors import MedgenError
    from medgen.train.config import TrainConfig

    overrides = list(set_ or [])
    if tracking_uri:
        overrides.append(f"tracking.tracking_uri={tracking_uri}")
    try:
        cfg = load_config(TrainConfig, config, overrides)
    except MedgenError as exc:
        fail(exc)
    from medgen.train.trainer import Trainer

    con = console(stderr=True)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    prog = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  {task.fields[sps]:.2f} steps/s"),
                    TimeRemainingColumn(), console=con, disable=quiet)
    task = prog.add_task("train", total=cfg.optim.max_steps, loss=float("nan"), sps=0.0)

    def on_step(step, total, loss, sps):
        prog.update(task, completed=step, loss=loss, sps=sps)

    try:
        with prog:
            trainer = Trainer(cfg, run_name=run_name, resume=resume, quiet=quiet, progress=on_step)
            res = trainer.fit()
    except MedgenError as exc:
        fail(exc)
    typer.echo(json.dumps({"run_dir": str(res.run_dir), "last": str(res.last),
                           "best": str(res.best) if res.best else None, "step": res.step,
                           "weights_sha256": res.weights_sha256, "mlflow_run_id": res.mlflow_run_id,
                           "metrics": res.metrics}))
