"""Helpers shared by CLI commands: consoles, progress bars, key resolution, exit handling."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from medgen.errors import EXIT_USAGE, MedgenError


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)  # one line per message


def fail(exc: MedgenError | str, code: int = EXIT_USAGE):
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def resolve_key(key_file: Path | None, create_key: Path | None):
    """--key-file / --create-key / $MEDGEN_KEY_FILE / $MEDGEN_KEY. Never a value on the command line."""
    from medgen.keys import create_key_file, load_key

    try:
        if create_key is not None:
            if create_key.exists():
                return load_key(create_key)
            key = create_key_file(create_key)
            typer.echo(f"created a new pseudonymization key at {create_key} "
                       f"(fingerprint {key.fingerprint}); keep it secret and keep it safe", err=True)
            return key
        return load_key(key_file)
    except MedgenError as exc:
        fail(exc)


def progress(total: int | None, description: str, quiet: bool = False):
    """A Rich progress bar on stderr, or a no-op when quiet / not a terminal-friendly job."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console(stderr=True), disable=quiet or not sys.stderr.isatty(),
                    transient=False)
