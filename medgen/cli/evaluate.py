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


@app.command("paired")
def paired(
    reference: Path = typer.Option(..., "--reference", help="Folder of real target volumes (NIfTI), e.g. the real CT."),
    outputs: Path = typer.Option(..., "--outputs", help="Folder the model wrote (same relative paths as the references)."),
    inputs: Path = typer.Option(None, "--inputs", help="Model inputs (same relative paths): the identity baseline."),
    hu: bool = typer.Option(False, "--hu", help="The references are CT in Hounsfield units: MAE is reported as mae_hu (checked: the reference minimum must look like air, < -500)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the per-item JSON here (default: OUTPUTS/paired_eval.json)."),
    experiment: str = typer.Option("medgen-evaluate", "--experiment"),
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
    no_tracking: bool = typer.Option(False, "--no-tracking"),
):
    """PSNR / SSIM / MAE of OUTPUTS against REFERENCE, matched by relative path (translation,
    denoising, super-resolution), with the inputs as the identity baseline; logged to MLflow."""
    import json

    import numpy as np

    from medgen.cli._common import fail
    from medgen.errors import ConfigError
    from medgen.evaluate.paired import evaluate_paired
    from medgen.utils.atomic import atomic_write_text

    for name, p in (("--reference", reference), ("--outputs", outputs), ("--inputs", inputs)):
        if p is not None and not p.is_dir():
            fail(ConfigError(name, f"'{p.name}' is not a folder"))
    rep = evaluate_paired(reference, outputs, inputs, mae=True)
    if rep["summary"]["n"] == 0:
        fail(ConfigError("--outputs", "no output matches a reference by relative path"))
    if hu:
        from medgen.io import read_volume

        first = next(r["item"] for r in rep["items"] if "error" not in r)
        if float(np.min(read_volume(reference / first).array)) > -500:
            fail(ConfigError("--hu", f"reference {first} has no air below -500: not CT in HU"))
        for d in (rep["summary"], *rep["items"]):
            for k in ("mae", "mae_input"):
                if k in d:
                    d[k + "_hu"] = d.pop(k)
    path = out or outputs / "paired_eval.json"
    atomic_write_text(path, json.dumps(rep, indent=1, sort_keys=True) + "\n")
    run_id = None
    if not no_tracking:
        from medgen.track import start_run

        with start_run(experiment, f"paired-{outputs.name}", tracking_uri=tracking_uri,
                       roots={"reference": str(reference.resolve()), "outputs": str(outputs.resolve())},
                       tags={"medgen.evaluation": "paired"}) as run:
            run.log_params({"units": "HU" if hu else "reference", "baseline": inputs is not None})
            run.log_metrics({f"paired/{k}": v for k, v in rep["summary"].items()})
            run_id = run.run_id
    for r in rep["items"]:
        if "error" in r:
            typer.echo(f"skipped: {r['item']}: {r['error']}", err=True)
    typer.echo(json.dumps({"json": str(path), "run_id": run_id,
                           **{k: round(v, 6) for k, v in rep["summary"].items()}}, sort_keys=True))
