"""Logging set-up for the command line (the library itself only ever logs)."""

from __future__ import annotations

import logging


def setup_cli_logging(level: int = logging.WARNING) -> None:
    logger = logging.getLogger("medgen")
    if any(getattr(h, "_medgen_cli", False) for h in logger.handlers):
        logger.setLevel(level)
        return
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    handler._medgen_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("medgen") else f"medgen.{name}")
