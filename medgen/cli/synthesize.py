"""``medgen synthesize --model CKPT -n N DST [--condition k=v] [--seed S] [--batch B]``."""

from __future__ import annotations

from pathlib import Path

import typer


def synthesize(
    dst: Path = typer.Argument(..., help="Output folder (samples/, manifest.jsonl, memorization.json)."),
    model: Path = typer.Option(..., "--model", "-m", help="Checkpoint folder of a vae-gen / ldm model."),
    n: int = typer.Option(..., "-n", "--n", min=1, help="Number of samples (indices 0..N-1)."),
    condition: list[str] = typer.Option(None, "--condition", "-c", help="NAME=VALUE for a conditional model (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; sample i uses a seed derived from (seed, i)."),
    batch: int = typer.Option(4, "--batch", min=1, help="Samples per forward pass (fixed blocks of indices)."),
    fmt: str = typer.Option("nifti", "--format", help="nifti or dicom."),
    index: list[int] = typer.Option(None, "--index", help="Regenerate only these indices (same seed, batch, N)."),
    train_manifest: Path = typer.Option(None, "--train-manifest", help="The model's training manifest (memorization check)."),
    root: Path = typer.Option(None, "--root", help="Root of the training manifest's paths."),
    train_split: str = typer.Option("train", "--train-split"),
    heldout_split: list[str] = typer.Option(None, "--heldout-split", help="Held-out splits calibrating the memorization check (default: val, test)."),
    no_memorization_check: bool = typer.Option(False, "--no-memorization-check", help="Skip the memorization check (recorded as skipped)."),
    keep_flagged: bool = typer.Option(False, "--keep-flagged", help="Export samples the memorization check flags (still reported)."),
    memorization_percentile: float = typer.Option(5.0, "--memorization-percentile"),
    memorization_margin: float = typer.Option(0.5, "--memorization-margin"),
    memorization_rule: str = typer.Option("both", "--memorization-rule", help="both or either metric below its threshold."),
    embedding: str = typer.Option("random", "--embedding", help="random (fixed random conv net) or autoencoder."),
    sampler: str = typer.Option(None, "--sampler", help="ldm: ddpm, ddim or rflow (default: the model's)."),
    steps: int = typer.Option(None, "--steps", min=1, help="ldm: sampling steps."),
    guidance: float = typer.Option(None, "--guidance", help="ldm: classifier-free guidance scale."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda:0 ..."),
    amp: str = typer.Option("auto", "--amp", help="auto, off, bf16, fp16 (CUDA only)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not log to MLflow."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Generate a synthetic set, check it for memorization, export it with a synthetic manifest."""
    import json

    from medgen.cli._common import fail, progress
    from medgen.errors import EXIT_PARTIAL, MedgenError
    from medgen.synth.config import SynthesisSettings

    try:  # every option and the checkpoint, conditions and manifest they name: before torch
        SynthesisSettings.from_cli(
            model=str(model), n=n, conditions=condition or [], seed=seed, batch=batch, fmt=fmt,
            indices=index or None, sampler=sampler, steps=steps, guidance=guidance,
            device=device, amp=amp, train_manifest=train_manifest and str(train_manifest),
            manifest_root=root and str(root), train_split=train_split,
            heldout_splits=list(heldout_split) if heldout_split else ["val", "test"],
            memorization=not no_memorization_check, keep_flagged=keep_flagged,
            memorization_percentile=memorization_percentile,
            memorization_margin=memorization_margin, memorization_rule=memorization_rule,
            embedding=embedding).check_inputs()
    except MedgenError as exc:
        fail(exc)
    from medgen.synth.sampling import synthesize as run

    bar = progress(None, "synthesize", quiet)
    task = bar.add_task("synthesize", total=len(index) if index else n, info="")

    def on_progress(done, total, info):
        bar.update(task, completed=done, total=total, info=info)

    try:
        with bar:
            res = run(model, n, dst, conditions=condition or [], seed=seed, batch=batch, fmt=fmt,
                      indices=index or None, sampler=sampler, steps=steps, guidance=guidance,
                      device=device, amp=amp, train_manifest=train_manifest, manifest_root=root,
                      train_split=train_split,
                      heldout_splits=tuple(heldout_split) if heldout_split else ("val", "test"),
                      memorization=not no_memorization_check, keep_flagged=keep_flagged,
                      memorization_percentile=memorization_percentile, memorization_margin=memorization_margin,
                      memorization_rule=memorization_rule, embedding=embedding, tracking=not no_tracking,
                      tracking_uri=tracking_uri, progress=on_progress)
    except MedgenError as exc:
        fail(exc)
    for f in res.failures:
        typer.echo(f"failed: sample {f['index']}: {f['reason']}", err=True)
    a = res.memorization
    typer.echo(json.dumps({
        "manifest": str(res.manifest), "n_written": res.n_written, "n_flagged": res.n_flagged,
        "n_withheld": res.n_withheld, "memorization_rate": a.get("rate"),
        "memorization": "skipped" if a.get("skipped") else "done", "synthesis_run": res.run_id,
        "seconds_per_sample": round(res.seconds_per_sample, 4), "failures": len(res.failures)}))
    if res.failures:
        raise typer.Exit(EXIT_PARTIAL)
