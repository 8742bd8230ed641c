"""``medgen upscale --model MODEL SRC DST [--factor F]``: resumable batch super-resolution."""

from pathlib import Path

import typer

from medgen.cli._infer_common import DST, MODEL, SRC, InferOptions, infer_command, run_infer


@infer_command
def upscale(model: str = MODEL, src: Path = SRC, dst: Path = DST,
            factor: str = typer.Option(None, "--factor", "-f",
                                       help="Check/orient the upsampling: 4 (along the input's "
                                            "coarsest axis) or one per axis, e.g. 1x1x4 (any "
                                            "permutation of the model's factors). Default: the "
                                            "model's own factors and axes."),
            *, opts: InferOptions):
    """Super-resolve every DICOM series / NIfTI file under SRC (or in a manifest) into DST.

    Outputs cover the same world extent as their inputs on a finer grid (spacing divided by the
    factors; NIfTI, or DICOM derived series with new slice positions) and appear whole or not at
    all. DST/ledger.jsonl records every attempt; re-running the same command skips finished
    items. Exit code 0: all ok; 3: some items failed or were quarantined; 2: usage error.
    """
    if factor is not None:
        from medgen.cli._common import fail
        from medgen.errors import MedgenError
        from medgen.infer.sr import parse_factor

        try:
            parse_factor(factor)
        except MedgenError as exc:
            fail(exc)
    raise typer.Exit(run_infer("upscale", model, src, dst, opts,
                               factory="medgen.infer.sr:UpscalePredictor",
                               options={"factor": factor} if factor else None))
