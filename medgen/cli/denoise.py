"""``medgen denoise --model MODEL SRC_OR_MANIFEST DST``: resumable batch denoising."""

from pathlib import Path

import typer

from medgen.cli._infer_common import DST, MODEL, SRC, InferOptions, infer_command, run_infer


@infer_command
def denoise(model: str = MODEL, src: Path = SRC, dst: Path = DST, *, opts: InferOptions):
    """Denoise every DICOM series / NIfTI file under SRC (or in a manifest) into DST.

    Outputs mirror the input tree (NIfTI, or DICOM derived series) and appear whole or not at
    all. DST/ledger.jsonl records every attempt; re-running the same command skips finished
    items. Exit code 0: all ok; 3: some items failed or were quarantined; 2: usage error.
    """
    raise typer.Exit(run_infer("denoise", model, src, dst, opts))
