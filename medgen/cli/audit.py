"""``medgen audit RUN_ID``."""

from __future__ import annotations

from pathlib import Path

import typer


def audit(
    run_id: str = typer.Argument(..., help="MLflow run id to audit."),
    rerun: int = typer.Option(0, "--rerun", help="Re-run N items (or a training smoke step) and compare outputs."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store (default ./mlflow.db or $MLFLOW_TRACKING_URI)."),
    manifest: list[str] = typer.Option(None, "--manifest", help="ROLE=PATH of an input manifest, when not logged with the run."),
    data_root: str = typer.Option(None, "--data-root", help="Folder the input manifest's paths are relative to."),
    audit_key_file: Path = typer.Option(None, "--audit-key-file", help="Key that signed the run ($MEDGEN_AUDIT_KEY_FILE)."),
    out: Path = typer.Option(None, "--out", help="Where to save audit_report.json/.html (default audit_reports/RUN_ID)."),
):
    """Check a sealed run: edits to artifacts/params/tags/metrics, inputs on disk, code and
    environment differences, and (with --rerun) a re-run compared with the recorded outputs."""
    from medgen.audit import audit_run
    from medgen.cli._common import fail
    from medgen.errors import EXIT_OK, EXIT_PARTIAL, MedgenError

    mans = {}
    for item in manifest or []:
        if "=" not in item:
            fail(f"--manifest expects ROLE=PATH, got '{item}'")
        k, v = item.split("=", 1)
        mans[k] = v
    try:
        rep = audit_run(run_id, tracking_uri=tracking_uri, rerun=rerun, manifests=mans,
                        data_root=data_root, audit_key_file=str(audit_key_file) if audit_key_file else None)
    except MedgenError as exc:
        fail(exc)
    jp, hp = rep.write(out or Path("audit_reports") / run_id)
    for c in rep.checks:
        typer.echo(f"  ok   {c}")
    for w in rep.warnings:
        typer.echo(f"  warn {w}")
    for d in rep.differences_from_now:
        typer.echo(f"  diff {d}")
    for f in rep.failures:
        typer.echo(f"  FAIL {f}")
    typer.echo(f"{'PASS' if rep.passed else 'FAIL'}: run {run_id}; report {jp} and {hp}")
    raise typer.Exit(EXIT_OK if rep.passed else EXIT_PARTIAL)
