"""Logging set-up for the command line (the library itself only ever logs)."""

from __future__ import annotations

import logging


def setup_cli_logging(level: int = logging.WARNING) -> None:
    logger = logging.getLogger("medgen")
    if any(getattr(h, "_medgen_cli", False) for h in logger.handlers):
        logger.setLevel(level)
        return
    import sys

    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False, markup=False,
                                               rich_tracebacks=False)
    else:  # logs, pipelines, schedulers: one line per message (Rich would wrap at 80 columns)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._medgen_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("medgen") else f"medgen.{name}")


class WarningCollector(logging.Handler):
    """Keeps every WARNING+ line the ``medgen`` loggers emit during a command, so that the end of
    the command can repeat them in its summary (``-q`` hides progress, never warnings).

    Use as a context manager::

        with WarningCollector() as warnings:
            ...
        for line in warnings.summary():
            typer.echo(f"warning: {line}", err=True)
    """

    def __init__(self, logger: str = "medgen"):
        super().__init__(logging.WARNING)
        self._logger = logging.getLogger(logger)
        self._counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = " ".join(record.getMessage().split())  # one line, always
        self._counts[msg] = self._counts.get(msg, 0) + 1

    def add(self, message: str) -> None:
        """Record a warning that was not logged (e.g. one a subprocess printed)."""
        msg = " ".join(str(message).split())
        self._counts[msg] = self._counts.get(msg, 0) + 1

    def summary(self, limit: int = 20) -> list[str]:
        """Unique warnings in order of first appearance, ``(xN)`` when repeated."""
        lines = [m if n == 1 else f"{m} (x{n})" for m, n in self._counts.items()]
        if len(lines) > limit:
            lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
        return lines

    def __enter__(self) -> WarningCollector:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
