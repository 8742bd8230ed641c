"""``medgen deid SRC DST`` and ``medgen deid verify DST [--original SRC]``.

The group's default action is ``run``: ``medgen deid SRC DST`` is ``medgen deid run SRC DST``.
Only typer is imported at module level (``medgen --help`` must stay fast).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from medgen.errors import EXIT_USAGE, MedgenError


class _DefaultRun(TyperGroup):
    """Route ``medgen deid SRC DST ...`` to the ``run`` command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultRun, no_args_is_help=True, add_completion=False,
                  help="De-identify DICOM, NIfTI and BIDS sidecars (PS3.15 Table E.1-1) and "
                       "verify the result. `medgen deid SRC DST` runs; `medgen deid verify DST` "
                       "checks.")


def _fail(exc: MedgenError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(EXIT_USAGE)


@app.command("run")
def run(
    src: Path = typer.Argument(..., help="Input file or folder (never modified)."),
    dst: Path = typer.Argument(..., help="Output folder (must not be inside SRC)."),
    key_file: Path = typer.Option(None, "--key-file", help="Pseudonymization key file "
                                  "(else $MEDGEN_KEY_FILE or $MEDGEN_KEY). Never pass the key "
                                  "itself on the command line."),
    create_key: Path = typer.Option(None, "--create-key", help="Create a new key file at this "
                                    "path (refuses to overwrite) and use it."),
    option: list[str] = typer.Option([], "--option", "-o", help="PS3.15 option by name, e.g. "
                                     "retain-long-modified-dates (repeatable; see `medgen deid "
                                     "options`)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes."),
    pixel_rules: Path = typer.Option(None, "--pixel-rules", help="YAML pixel rules for burned-in "
                                     "annotations (see configs/deid/pixel_rules.example.yaml)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the per-file verifier "
                                   "(not recommended)."),
    no_ocr: bool = typer.Option(False, "--no-ocr", help="Do not read burned-in text with OCR: "
                                "at-risk images (US, SC, BurnedInAnnotation YES, ...) without a "
                                "matching pixel rule are quarantined."),
    blank_unsure: bool = typer.Option(False, "--blank-unsure", help="Blank words OCR reads with "
                                      "low confidence that may be identifiers, instead of "
                                      "quarantining the file."),
    audit: Path = typer.Option(None, "--audit", help="Audit log path (default "
                               "DST/_deid/audit.jsonl)."),
) -> None:
    """De-identify SRC into DST. Exit 0: all ok; 3: some files quarantined; 2: usage error."""
    from medgen.deid import deidentify
    from medgen.deid.table import check_options
    from medgen.keys import create_key_file, load_key

    try:
        check_options(tuple(option))
        if create_key is not None and key_file is not None:
            raise MedgenError("--create-key", "use either --create-key or --key-file")
        if create_key is not None:
            if create_key.exists():
                raise MedgenError("--create-key", "file exists; refusing to overwrite a key")
            key = create_key_file(create_key)
            typer.echo(f"created a new pseudonymization key at {create_key} (fingerprint "
                       f"{key.fingerprint}); keep it secret and back it up: the same key is needed "
                       "to link later batches", err=True)
        else:
            key = load_key(key_file)
        n_done = [0]

        def progress(done: int, total: int) -> None:
            if sys.stderr.isatty() and (done % 50 == 0 or done == total):
                typer.echo(f"\r{done}/{total} files", err=True, nl=done == total)
            n_done[0] = done

        rep = deidentify(src, dst, key=key, options=tuple(option), workers=workers,
                         pixel_rules=pixel_rules, verify=not no_verify, audit=audit,
                         progress=progress, ocr=not no_ocr, blank_unsure=blank_unsure)
    except MedgenError as exc:
        _fail(exc)
        return
    for item, reason in rep.quarantined:
        typer.echo(f"quarantined: {item}: {reason}", err=True)
    table = rep.modality_table()
    if table:
        typer.echo(f"{'modality':10s} {'kept':>6s} {'redacted':>9s} {'ocr-clean':>10s} "
                   f"{'quarantined':>12s}")
        for mod, kept, red, clean, quar in table:
            typer.echo(f"{mod:10s} {kept:6d} {red:9d} {clean:10d} {quar:12d}")
    typer.echo(f"de-identified {rep.ok} file(s), quarantined {len(rep.quarantined)}; key "
               f"{rep.key_fingerprint}; table {rep.table_edition}; options "
               f"{','.join(rep.options) or '(basic profile)'}; audit {rep.audit_path}")
    raise typer.Exit(rep.exit_code)


@app.command("verify")
def verify_cmd(
    dst: Path = typer.Argument(..., help="Folder (or file) of de-identified outputs."),
    original: Path = typer.Option(None, "--original", help="The originals: also search the "
                                  "outputs for any of their identifying values."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Options the outputs were made "
                                     "with (default: read from DST/_deid/audit.jsonl)."),
    max_show: int = typer.Option(50, "--max-show", help="Findings to print."),
    pixels: bool = typer.Option(False, "--pixels", help="Also read burned-in text of at-risk "
                                "images (US, SC, ...) with OCR and report dates or identifiers."),
) -> None:
    """Independent scan of DST. Exit 0: no findings; 1: findings; 2: usage error."""
    from medgen.deid import verify
    from medgen.deid.table import check_options

    if not dst.exists():
        _fail(MedgenError("DST", "does not exist"))
    opts: tuple[str, ...] = tuple(option or ())
    audit = dst / "_deid" / "audit.jsonl"
    if not option and audit.is_file():
        with open(audit, encoding="utf-8") as fh:
            first = fh.readline()
        if first:
            opts = tuple(json.loads(first).get("options", []))
    try:
        opts = check_options(opts)
    except MedgenError as exc:
        _fail(exc)
    rep = verify(dst, original=original, options=opts, pixels=pixels)
    for f in rep.findings[:max_show]:
        typer.echo(f"finding: {f}")
    if len(rep.findings) > max_show:
        typer.echo(f"... and {len(rep.findings) - max_show} more")
    typer.echo(f"verified {rep.files_checked} file(s): {len(rep.findings)} finding(s); options "
               f"{','.join(opts) or '(basic profile)'}"
               + ("; originals searched" if original else ""))
    raise typer.Exit(0 if rep.ok else 1)


@app.command("options")
def options_cmd() -> None:
    """List the PS3.15 options (name, CID 7050 code, meaning) and the table edition."""
    from medgen.deid.table import table_data

    d = table_data()
    typer.echo(f"Table E.1-1 edition {d['edition']} ({d['row_count']} rows)")
    for o in d["options"]:
        typer.echo(f"  {o['name']:32s} {o['code']}  {o['meaning']}")
