"""``medgen run pipelines/NAME.yaml [--set ...] [--dry-run]``."""

from __future__ import annotations

from pathlib import Path

import typer


def run(
    pipeline: Path = typer.Argument(..., help="Pipeline spec (YAML), e.g. pipelines/denoise-mri.yaml."),
    set_: list[str] = typer.Option(None, "--set", help="Override a spec value: a.b=c (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved steps and what would be skipped."),
    force: list[str] = typer.Option(None, "--force", help="Re-run this step even if done (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Run a pipeline's steps in order as one MLflow parent run; finished steps are skipped."""
    from medgen.cli._common import console, fail
    from medgen.errors import MedgenError
    from medgen.pipeline import load_pipeline
    from medgen.pipeline.runner import Runner

    con = console(stderr=True)
    say = (lambda m: None) if quiet else (lambda m: con.print(m, markup=False))
    try:
        spec = load_pipeline(pipeline, list(set_ or []))
        res = Runner(spec, dry_run=dry_run, say=say, force=tuple(force or ())).run()
    except MedgenError as exc:
        fail(exc)
    if not dry_run:
        typer.echo(f"pipeline {spec.name}: run {res.run_id}; outputs under {res.workdir}")
    raise typer.Exit(res.exit_code)
