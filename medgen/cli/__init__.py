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


# --- command groups (each module imports only typer at import time) -------------------------
from medgen.cli import convert as _convert  # noqa: E402
from medgen.cli import manifest as _manifest  # noqa: E402

app.add_typer(_manifest.app, name="manifest")
app.command("convert")(_convert.convert)
app.command("info")(_convert.info)
from medgen.cli import demo as _demo  # noqa: E402

app.command("demo")(_demo.demo)
from medgen.cli import train as _train  # noqa: E402

app.command("train")(_train.train)
from medgen.cli import audit as _audit  # noqa: E402

app.command("audit")(_audit.audit)
from medgen.cli import run as _run  # noqa: E402

app.command("run")(_run.run)
# helpers register further groups below this line (one line each)
from medgen.cli import deid as _deid; app.add_typer(_deid.app, name="deid")  # noqa: E402, E702
from medgen.cli import denoise as _denoise; app.command("denoise")(_denoise.denoise)  # noqa: E402, E702
from medgen.cli import synthesize as _synth; app.command("synthesize")(_synth.synthesize)  # noqa: E402, E702
from medgen.cli import evaluate as _evaluate; app.add_typer(_evaluate.app, name="evaluate")  # noqa: E402, E702
from medgen.cli import upscale as _upscale; app.command("upscale")(_upscale.upscale)  # noqa: E402, E702
from medgen.cli import translate as _translate; app.command("translate")(_translate.translate)  # noqa: E402, E702


def main() -> None:
    try:
        app()
    except MedgenError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
