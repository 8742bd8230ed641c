"""``medgen run pipelines/NAME.yaml [--set ...] [--dry-run]``."""

from __future__ import annotations

from pathlib import Path

import typer


def run(
    pipeline: Path = typer.Argument(..., help="Pipeline spec (YAML), e.g. pipelines/denoise-mri.yaml."),
    set_: list[str] = typer.Option(None, "--set", help="Override a spec value: a.b=c (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every step (configs, presets, models, inputs), print the resolved steps, what would be skipped and a rough time estimate per step; run nothing."),
    force: list[str] = typer.Option(None, "--force", help="Re-run this step even if done (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-step lines; warnings are still summarised at the end."),
):
    """Run a pipeline's steps in order as one MLflow parent run; finished steps are skipped.

    Every step is resolved and validated before the first one runs: a bad value (a config, preset
    or model that does not exist, a --force that names no step) exits 2 in seconds.
    """
    from medgen.cli._common import console, fail
    from medgen.errors import MedgenError
    from medgen.pipeline import load_pipeline
    from medgen.pipeline.runner import Runner
    from medgen.utils.log import WarningCollector

    con = console(stderr=True)
    say = (lambda m: None) if quiet else (lambda m: con.print(m, markup=False))
    with WarningCollector() as warnings:
        try:
            spec = load_pipeline(pipeline, list(set_ or []))
            runner = Runner(spec, dry_run=dry_run, say=say, force=tuple(force or ()))
            res = runner.run()
        except MedgenError as exc:
            fail(exc)
        for w in runner.warnings:
            warnings.add(w)
    lines = warnings.summary()
    if lines:
        typer.echo(f"{len(lines)} warning(s):", err=True)
        for line in lines:
            typer.echo(f"warning: {line}", err=True)
    if not dry_run:
        from medgen.track.store import store_line

        con.print(store_line(res.tracking_uri), markup=False)
        typer.echo(f"pipeline {spec.name}: run {res.run_id}; outputs under {res.workdir}")
    raise typer.Exit(res.exit_code)
