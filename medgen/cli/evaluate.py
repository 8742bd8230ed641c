"""``medgen evaluate synth --real MANIFEST --synthetic MANIFEST`` (a group: ``evaluate paired``
and others can be added by their own modules)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Evaluate generated data against real data.", no_args_is_help=True)


@app.command("synth")
def synth(
    real: Path = typer.Option(..., "--real", help="Real manifest (.jsonl)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic manifest, or the folder `medgen synthesize` wrote."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder (default: beside the synthetic manifest, quality/)."),
    real_root: Path = typer.Option(None, "--real-root", help="Root of the real manifest's paths."),
    real_split: str = typer.Option(None, "--real-split", help="Only this split of the real manifest (e.g. test)."),
    extractor: Path = typer.Option(None, "--extractor", help="Local feature extractor for FID (TorchScript file or checkpoint folder); never downloaded."),
    seed: int = typer.Option(0, "--seed"),
    max_real: int = typer.Option(64, "--max-real", min=2),
    max_synthetic: int = typer.Option(64, "--max-synthetic", min=2),
    n_perm: int = typer.Option(200, "--permutations", min=10, help="MMD permutation count."),
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
    no_tracking: bool = typer.Option(False, "--no-tracking"),
):
    """Quality report: MMD, MS-SSIM diversity, histogram distance, C2ST AUC, FID (local extractor)."""
    import json

    from medgen.cli._common import fail
    from medgen.errors import MedgenError
    from medgen.synth.evaluate import evaluate_synth

    sp = synthetic if synthetic.is_dir() else synthetic.parent
    try:
        rep = evaluate_synth(real, synthetic, out or sp / "quality", real_root=real_root,
                             real_split=real_split, extractor=extractor, seed=seed,
                             max_real=max_real, max_synthetic=max_synthetic, n_perm=n_perm,
                             tracking=not no_tracking, tracking_uri=tracking_uri)
    except MedgenError as exc:
        fail(exc)
    for r in rep["rejects"]:
        typer.echo(f"skipped: {r['record']}: {r['reason']}", err=True)
    fid = rep["fid"]["value"] if rep["fid"]["computed"] else rep["fid"]["reason"]
    typer.echo(json.dumps({"json": rep["json"], "html": rep["html"], "run_id": rep["run_id"],
                           **{k: round(v, 6) for k, v in rep["summary"].items()}, "fid": fid}))
