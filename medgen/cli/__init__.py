"""The ``medgen`` command line (Typer). One module per command group.

Keep this import-light: ``medgen --help`` must answer in well under a second, so torch, MONAI,
MLflow, pydicom and friends are imported inside the command functions, never at module level.
"""

from __future__ import annotations

import logging
import sys

import typer

from medgen import __version__
from medgen.errors import EXIT_USAGE, MedgenError

app = typer.Typer(
    name="medgen",
    help="Generative models for medical imaging: de-identify, build manifests, train, denoise, "
    "upscale, synthesize, audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"medgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv: debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    from medgen.utils.log import setup_cli_logging

    setup_cli_logging(level)
    if verbose == 0:
        import warnings

        # pydicom/nibabel warnings about odd encodings can quote file content; the one-line
        # errors and the reject lists are what a person reads.
        warnings.filterwarnings("ignore")


# --- commands, in workflow order (each module imports only typer at import time) -------------
from medgen.cli import (  # noqa: E402
    audit,
    config,
    convert,
    deid,
    demo,
    denoise,
    evaluate,
    manifest,
    run,
    synthesize,
    train,
    translate,
    upscale,
)

app.command("info")(convert.info)
app.command("convert")(convert.convert)
app.add_typer(deid.app, name="deid")
app.add_typer(manifest.app, name="manifest")
app.command("train")(train.train)
app.command("denoise")(denoise.denoise)
app.command("upscale")(upscale.upscale)
app.command("translate")(translate.translate)
app.command("synthesize")(synthesize.synthesize)
app.add_typer(evaluate.app, name="evaluate")
app.command("run")(run.run)
app.add_typer(config.app, name="config")
app.command("audit")(audit.audit)
app.command("demo")(demo.demo)


def main() -> None:
    try:
        app()
    except MedgenError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
