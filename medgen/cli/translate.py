"""``medgen translate --model MODEL SRC DST [--direction a2b|b2a]``: resumable batch translation."""

from pathlib import Path

import typer

from medgen.cli._infer_common import DST, MODEL, SRC, InferOptions, infer_command, run_infer


@infer_command
def translate(model: str = MODEL, src: Path = SRC, dst: Path = DST,
              direction: str = typer.Option("a2b", "--direction", "-d",
                                            help="a2b (pix2pix, cyclegan) or b2a (cyclegan only)."),
              *, opts: InferOptions):
    """Translate every DICOM series / NIfTI file under SRC (or in a manifest) into DST.

    Outputs keep the input's grid and are marked synthetic in their headers (NIfTI descrip;
    DICOM derived series with ImageType ...\\SYNTHETIC in the source's study). DST/ledger.jsonl
    records every attempt; re-running the same command skips finished items. Exit code 0: all
    ok; 3: some items failed or were quarantined; 2: usage error.
    """
    if direction not in ("a2b", "b2a"):
        from medgen.cli._common import fail
        from medgen.errors import ConfigError

        fail(ConfigError("--direction", f"'{direction}': a2b or b2a"))
    raise typer.Exit(run_infer("translate", model, src, dst, opts,
                               factory="medgen.infer.translate:TranslatePredictor",
                               options={"direction": direction}))
