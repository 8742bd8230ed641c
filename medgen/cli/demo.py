"""``medgen demo``: the complete path on bundled sample data, for real, in a few minutes on a CPU.

It runs ``pipelines/denoise-mri.yaml`` with its work folder under ``--out``: sample data (public
files shipped inside installed packages + generated phantoms) -> de-identify -> manifest (split by
subject) -> degraded test copies -> train a tiny denoiser -> batch denoise -> paired evaluation ->
audit of every step's sealed MLflow run. Runs go where every command's runs go (one rule:
``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``), so the printed
``mlflow ui`` line shows the demo beside everything else of the tour.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _pipeline_file(name: str) -> Path:
    import medgen

    p = Path(medgen.__file__).resolve().parents[1] / "pipelines" / f"{name}.yaml"
    if not p.exists():
        from medgen.errors import ConfigError

        raise ConfigError(name, "pipeline file not found (run the demo from a medgen checkout)")
    return p


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Where the demo writes everything."),
    pipeline: str = typer.Option("denoise-mri", "--pipeline", help="Shipped pipeline to run."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """De-identify -> manifest -> train a tiny denoiser -> batch denoise -> evaluate -> audit."""
    from medgen.cli._common import console, fail
    from medgen.errors import MedgenError
    from medgen.pipeline import load_pipeline
    from medgen.pipeline.runner import Runner

    con = console(stderr=True)
    say = (lambda m: None) if quiet else (lambda m: con.print(m, markup=False))
    from medgen.track.store import resolve_tracking_uri, store_line

    out = out.resolve()
    uri = resolve_tracking_uri(tracking_uri)
    try:
        spec = load_pipeline(_pipeline_file(pipeline), [f"workdir={out}",
                                                       f"tracking.tracking_uri={uri}"])
        say(f"medgen demo: pipeline '{spec.name}' ({len(spec.steps)} steps) into {out}")
        res = Runner(spec, say=say).run()
    except MedgenError as exc:
        fail(exc)
    steps = {s.name: s for s in res.steps}
    ev = steps.get("evaluate")
    audit = steps.get("audit")
    summary = {"workdir": str(out), "pipeline_run_id": res.run_id,
               "steps": {s.name: s.status for s in res.steps},
               "evaluation": {k: v for k, v in (ev.outputs if ev else {}).items() if k != "report"},
               "audit": audit.outputs if audit else {}}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if not quiet:
        if ev and ev.outputs.get("psnr") is not None:
            o = ev.outputs
            con.print(f"evaluation on {o.get('n')} held-out volume(s): PSNR {o['psnr']:.2f} dB "
                      f"(noisy input {o.get('psnr_input', float('nan')):.2f} dB, gain "
                      f"{o.get('psnr_gain', float('nan')):+.2f} dB), SSIM {o['ssim']:.3f}", markup=False)
        con.print(f"outputs: {out}/eval/denoised  (clean references {out}/eval/clean, "
                  f"noisy inputs {out}/eval/noisy)", markup=False)
        con.print(f"audit reports: {out}/audit/<step>/audit_report.html", markup=False)
        con.print(store_line(uri), markup=False)
        con.print(f"audit again:    medgen audit {res.run_id}"
                  + ("" if uri == resolve_tracking_uri(None) else f" --tracking-uri {uri}"),
                  markup=False)
    raise typer.Exit(res.exit_code)
