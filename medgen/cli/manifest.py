"""``medgen manifest build | validate | split``."""

from __future__ import annotations

from pathlib import Path

import typer

from medgen.errors import EXIT_OK, EXIT_PARTIAL, MedgenError

app = typer.Typer(help="Data manifests: build, validate and split (by subject).", no_args_is_help=True)


@app.command("build")
def build(
    src: Path = typer.Argument(..., exists=True, help="Folder of DICOM series and/or NIfTI files."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest to write (NAME.jsonl)."),
    key_file: Path = typer.Option(None, "--key-file", help="Pseudonymization key file (or $MEDGEN_KEY_FILE / $MEDGEN_KEY)."),
    create_key: Path = typer.Option(None, "--create-key", help="Create a new key file here if it does not exist, and use it."),
    allow_uneven: bool = typer.Option(False, "--allow-uneven", help="Accept series with missing slices / uneven spacing (resampled when read)."),
    workers: int = typer.Option(4, "--workers", help="Threads for hashing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
):
    """Scan SRC, hash every file and write one record per volume; bad files go to a reject list."""
    import time

    from medgen.cli._common import console, fail, resolve_key
    from medgen.manifest.build import build_manifest

    key = resolve_key(key_file, create_key)
    t0 = time.perf_counter()
    try:
        res = build_manifest(src, key, allow_uneven=allow_uneven, workers=workers)
    except MedgenError as exc:
        fail(exc)
    digest = res.manifest.write(output, rejects=res.rejects,
                                extra_summary={"key_fingerprint": key.fingerprint})
    dt = time.perf_counter() - t0
    out = console(stderr=True)
    n_files = sum(len(r.files) for r in res.manifest.records)
    if not quiet:
        out.print(f"manifest {output}: {len(res.manifest)} volume(s) from {n_files} file(s), "
                  f"{len(res.rejects)} rejected, {dt:.2f} s")
        for r in res.rejects[:20]:
            out.print(f"  rejected {r['path']}: {r['reason']}")
        if len(res.rejects) > 20:
            out.print(f"  ... {len(res.rejects) - 20} more in {res.manifest.rejects_path(output)}")
    typer.echo(f"digest sha256:{digest}")
    raise typer.Exit(EXIT_PARTIAL if res.rejects else EXIT_OK)


@app.command("validate")
def validate(
    manifest: Path = typer.Argument(..., help="Manifest (NAME.jsonl)."),
    root: Path = typer.Option(None, "--root", help="Folder the record paths are relative to (default: from the summary)."),
):
    """Re-hash every file; name missing and changed files. Exit 3 if any."""
    from medgen.cli._common import fail
    from medgen.manifest import Manifest
    from medgen.manifest.ops import validate_manifest

    try:
        m = Manifest.load(manifest, root)
        rep = validate_manifest(m)
    except MedgenError as exc:
        fail(exc)
    for p in rep.missing:
        typer.echo(f"missing {p}")
    for p in rep.changed:
        typer.echo(f"changed {p}")
    recorded = m.summary.get("digest")
    if recorded and recorded != m.digest:
        typer.echo(f"records edited: digest {m.digest} differs from the summary's {recorded}")
    ok = rep.passed and (not recorded or recorded == m.digest)
    typer.echo(f"{'PASS' if ok else 'FAIL'}: {rep.ok} file(s) ok, {len(rep.missing)} missing, "
               f"{len(rep.changed)} changed; digest sha256:{m.digest}")
    raise typer.Exit(EXIT_OK if ok else EXIT_PARTIAL)


@app.command("split")
def split(
    manifest: Path = typer.Argument(..., help="Manifest (NAME.jsonl)."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest with a split per record."),
    ratios: str = typer.Option("train=0.7,val=0.15,test=0.15", "--ratios",
                               help="name=fraction,... adding up to 1."),
    seed: int = typer.Option(0, "--seed"),
):
    """Assign train/val/test by subject with a seed: no subject is ever in two splits.

    The seed and ratios are recorded in the new manifest's summary (and so in every run that
    trains on it).
    """
    from medgen.cli._common import fail
    from medgen.config.fields import check_ratios
    from medgen.manifest import Manifest
    from medgen.manifest.ops import split_manifest

    try:
        parsed = check_ratios(ratios)
    except ValueError as exc:
        fail(f"--ratios: {exc}")
    try:
        m = Manifest.load(manifest)
        out = split_manifest(m, parsed, seed)
        extra = {k: v for k, v in m.summary.items() if k == "key_fingerprint"}
        extra.update({"split_seed": seed, "split_ratios": parsed, "parent_digest": m.digest})
        digest = out.write(output, extra_summary=extra)
    except MedgenError as exc:
        fail(exc)
    counts = {k: len(out.split(k)) for k in parsed}
    typer.echo(f"{output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    empty = [k for k, v in counts.items() if parsed[k] > 0 and v == 0]
    if empty:
        n = len({r.subject for r in m.records})
        typer.echo(f"warning: split(s) {', '.join(empty)} got no volumes: {n} subject(s) for "
                   f"{sum(1 for v in parsed.values() if v > 0)} split(s) (no subject is split "
                   "across splits)", err=True)
    typer.echo(f"digest sha256:{digest}")
