"""``medgen audit RUN_ID``."""

from __future__ import annotations

from pathlib import Path

import typer


def _pairs(items: list[str] | None, what: str, bare: str | None = None) -> dict[str, str]:
    from medgen.cli._common import fail

    out = {}
    for item in items or []:
        if "=" not in item:
            if bare is None:
                fail(f"{what} expects NAME=PATH, got '{item}'")
            out[bare] = item
            continue
        k, v = item.split("=", 1)
        out[k] = v
    return out


def audit(
    run_id: str = typer.Argument(..., help="MLflow run id to audit."),
    rerun: int = typer.Option(0, "--rerun", help="Re-run N items (or a training smoke step) and compare outputs."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store to read (default: $MLFLOW_TRACKING_URI, else ./mlflow.db). Never created."),
    manifest: list[str] = typer.Option(None, "--manifest", help="ROLE=PATH of a manifest the run used, when not found by itself (repeatable)."),
    data_root: list[str] = typer.Option(None, "--data-root", help="NAME=DIR: where a data root the run recorded lives now (repeatable; a bare DIR is the root 'data'). Default: the roots recorded when the run was sealed."),
    audit_key_file: Path = typer.Option(None, "--audit-key-file", help="Key that signed the run ($MEDGEN_AUDIT_KEY_FILE)."),
    out: Path = typer.Option(None, "--out", help="Where to save audit_report.json/.html (default audit_reports/RUN_ID)."),
):
    """Check a sealed run: edits to artifacts/params/tags/metrics, the data on disk, linked runs
    (pipeline steps, earlier training attempts), code and environment differences, and (with
    --rerun) a re-run compared with the recorded outputs. Exit 0 PASS, 3 FAIL, 2 usage (unknown
    run or store: one line, nothing created)."""
    from mlflow.exceptions import MlflowException

    from medgen.audit import audit_run
    from medgen.cli._common import fail
    from medgen.errors import EXIT_OK, EXIT_PARTIAL, MedgenError
    from medgen.track.store import resolve_tracking_uri, store_line

    mans = _pairs(manifest, "--manifest")
    roots = _pairs(data_root, "--data-root", bare="data")
    try:
        rep = audit_run(run_id, tracking_uri=tracking_uri, rerun=rerun, manifests=mans,
                        data_root=roots, audit_key_file=str(audit_key_file) if audit_key_file else None)
    except MedgenError as exc:
        fail(exc)
    except MlflowException as exc:
        fail(f"MLflow could not read the run: {str(exc).splitlines()[0][:200]}")
    jp, hp = rep.write(out or Path("audit_reports") / run_id)
    for c in rep.checks:
        typer.echo(f"  ok   {c}")
    for w in rep.warnings:
        typer.echo(f"  warn {w}")
    for d in rep.differences_from_now:
        typer.echo(f"  diff {d}")
    for f in rep.failures:
        typer.echo(f"  FAIL {f}")
    typer.echo(store_line(resolve_tracking_uri(tracking_uri)), err=True)
    typer.echo(f"{'PASS' if rep.passed else 'FAIL'}: run {run_id} ({rep.kind}); report {jp} and {hp}")
    raise typer.Exit(EXIT_OK if rep.passed else EXIT_PARTIAL)
