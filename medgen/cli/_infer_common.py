"""Options and the run loop shared by ``medgen denoise``, ``medgen upscale`` and ``medgen translate``.

A command declares only its own arguments and decorates itself with :func:`infer_command`; the
decorator appends every shared option (device, window, engine, tracking, ...) to its signature and
hands them over as one :class:`InferOptions`::

    @infer_command
    def upscale(model: str = MODEL, src: Path = SRC, dst: Path = DST,
                factor: str = typer.Option(None, "--factor"), *, opts: InferOptions):
        raise typer.Exit(run_infer("upscale", model, src, dst, opts,
                                   factory="medgen.sr.infer:UpscalePredictor",
                                   options={"factor": factor}))

Only typer is imported at module level (``medgen --help`` stays fast).
"""

import functools
import inspect
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer

MODEL = typer.Option(..., "--model", "-m",
                     help="Checkpoint folder, or an MLflow URI: runs:/<run_id>/checkpoints/best, "
                          "models:/<name>/<version>.")
SRC = typer.Argument(..., help="Folder of DICOM series and/or NIfTI files, a NIfTI file, or a "
                               "manifest (.jsonl).")
DST = typer.Argument(..., help="Output folder (mirrors the input tree; holds ledger.jsonl).")


@dataclass
class InferOptions:
    """Every shared option of the batch-inference commands."""

    device: str = "auto"
    roi: str | None = None
    overlap: float = 0.25
    sw_batch_size: int | None = None
    amp: str = "auto"
    channels_last: str = "auto"
    threads: int | None = None
    weights: str = "auto"
    resample: bool = False
    spacing_tol: float = 0.2
    output_format: str = "auto"
    overwrite: bool = False
    retries: int = 2
    retry_delay: float = 1.0
    engine: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    dask_processes: bool = True
    prefetch: int = 2
    root: Path | None = None
    quiet: bool = False
    track: bool = True
    tracking_uri: str | None = None
    run_name: str | None = None


_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (str, typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")),
    "roi": (str | None, typer.Option(None, "--roi", help="Sliding window, e.g. 96 or 96,96,64 "
                                        "(default: planned - the fewest computed voxels that "
                                        "fit in memory, often the whole volume).")),
    "overlap": (float, typer.Option(0.25, "--overlap", help="Window overlap in [0, 1).")),
    "sw_batch_size": (int | None, typer.Option(None, "--sw-batch-size",
                                                  help="Windows per forward (default: 1 on CPU, "
                                                       "planned from free memory on CUDA).")),
    "amp": (str, typer.Option("auto", "--amp", help="Mixed precision on CUDA: auto, bf16, fp16, off.")),
    "channels_last": (str, typer.Option("auto", "--channels-last",
                                        help="channels-last-3d on CUDA: auto (measured), on, off.")),
    "threads": (int | None, typer.Option(None, "--threads", help="CPU threads for torch.")),
    "weights": (str, typer.Option("auto", "--weights", help="auto (EMA if present), model or ema.")),
    "resample": (bool, typer.Option(False, "--resample/--no-resample",
                                    help="Resample to the model card's spacing and back "
                                         "(default: warn when it differs).")),
    "spacing_tol": (float, typer.Option(0.2, "--spacing-tol",
                                        help="Relative spacing difference that triggers the "
                                             "warning or resampling.")),
    "output_format": (str, typer.Option("auto", "--output-format",
                                        help="auto (same as the input), nifti or dicom.")),
    "overwrite": (bool, typer.Option(False, "--overwrite",
                                     help="Redo every item, whatever the ledger says.")),
    "retries": (int, typer.Option(2, "--retries", help="Retries of transient errors per item.")),
    "retry_delay": (float, typer.Option(1.0, "--retry-delay",
                                        help="First retry backoff in seconds (doubles).")),
    "engine": (str, typer.Option("local", "--engine", help="local or dask (or a registered plugin).")),
    "workers": (int | None, typer.Option(None, "--workers",
                                            help="dask: start a LocalCluster of N workers; local: "
                                                 "N worker processes (default one per GPU).")),
    "scheduler": (str | None, typer.Option(None, "--scheduler",
                                              help="dask: join tcp://HOST:PORT.")),
    "dask_processes": (bool, typer.Option(True, "--dask-processes/--dask-threads",
                                          help="LocalCluster workers as processes or threads.")),
    "prefetch": (int, typer.Option(2, "--prefetch", help="Items read ahead / written behind.")),
    "root": (Path | None, typer.Option(None, "--root", help="Root of a manifest's files.")),
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="No progress bar (for schedulers).")),
    "track": (bool, typer.Option(True, "--track/--no-track", help="Record the job as an MLflow run.")),
    "tracking_uri": (str | None, typer.Option(None, "--tracking-uri",
                                                 help="MLflow store (default ./mlflow.db or "
                                                      "$MLFLOW_TRACKING_URI).")),
    "run_name": (str | None, typer.Option(None, "--run-name", help="MLflow run name.")),
}
assert set(_OPTIONS) == {f.name for f in fields(InferOptions)}


def infer_command(fn):
    """Append the shared options to ``fn``'s signature; ``fn`` receives them as ``opts``."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "opts"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
             for name, (ann, opt) in _OPTIONS.items()]
    hints = {p.name: p.annotation for p in own}
    try:
        import typing

        hints.update(typing.get_type_hints(fn))
    except Exception:  # noqa: BLE001 - fall back to the raw annotations
        pass
    hints.pop("opts", None)
    hints.pop("return", None)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        opts = InferOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS})
        return fn(*args, opts=opts, **kwargs)

    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own] + extra
    wrapper.__signature__ = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the new signature, not the original's
    return wrapper


def _fmt_rate(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}vox/s"
    return f"{v:.0f} vox/s"


class _Bar:
    """Rich progress on stderr: items done / total and voxels per second."""

    def __init__(self, task: str, quiet: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from medgen.cli._common import console

        self.voxels = 0
        self.t0 = None
        self.prog = Progress(TextColumn(f"[bold]{task}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"),
                             TimeElapsedColumn(), TimeRemainingColumn(),
                             console=console(stderr=True), disable=quiet, transient=False)
        self.task = None

    def __call__(self, event: str, data: dict) -> None:
        import time

        if event == "start":
            self.t0 = time.perf_counter()
            self.task = self.prog.add_task("items", total=data["total"], rate="", info="")
            return
        if self.task is None:
            return
        if event == "retry":
            self.prog.update(self.task, info=f"retrying {data.get('item')}")
            return
        if data.get("status") == "ok":
            self.voxels += int(data.get("voxels") or 0)
        dt = max(1e-9, time.perf_counter() - (self.t0 or time.perf_counter()))
        self.prog.update(self.task, advance=1, rate=_fmt_rate(self.voxels / dt),
                         info=f"{data.get('status')}")


def build_settings(model: str, src: Path, dst: Path, opts: InferOptions):
    """The job's typed settings (:class:`medgen.infer.settings.JobSettings`); a bad value is ONE
    ConfigError line naming the option, raised before torch is imported or anything is read."""
    from medgen.infer.settings import job_settings

    predictor = {"roi_size": opts.roi, "overlap": opts.overlap,
                 "sw_batch_size": opts.sw_batch_size, "device": opts.device, "amp": opts.amp,
                 "channels_last": opts.channels_last, "spacing_tol": opts.spacing_tol,
                 "resample": opts.resample, "weights": opts.weights, "threads": opts.threads}
    return job_settings(model=model, src=src, dst=dst, output_format=opts.output_format,
                        overwrite=opts.overwrite, retries=opts.retries,
                        retry_delay=opts.retry_delay, engine=opts.engine, workers=opts.workers,
                        scheduler=opts.scheduler, dask_processes=opts.dask_processes,
                        prefetch=opts.prefetch, root=opts.root, predictor=predictor)


def prepare_job(task: str, model: str, src: Path, dst: Path, opts: InferOptions, *,
                factory: str | None, options: dict[str, Any] | None):
    """Settings -> device -> paths (DST against the inputs) -> model -> items: cheapest checks
    first, so a bad value costs nothing."""
    from medgen.infer.job import Job
    from medgen.infer.predictor import PredictorSpec
    from medgen.infer.sources import check_overlap, open_source
    from medgen.track.models import resolve_model
    from medgen.utils.device import resolve_device

    cfg = build_settings(model, src, dst, opts)
    resolve_device(cfg.predictor.device)
    check_overlap(open_source(cfg.src, root=cfg.root).roots(), cfg.dst)
    ckpt = resolve_model(cfg.model, tracking_uri=opts.tracking_uri)
    spec = PredictorSpec.make(ckpt.resolve(), cfg.predictor, factory, options)
    job = Job(spec, cfg.src, cfg.dst, output_format=cfg.output_format, overwrite=cfg.overwrite,
              retries=cfg.retries, retry_delay=cfg.retry_delay, root=cfg.root,
              prefetch=cfg.prefetch, task=task)
    try:
        job.prepare(engine=cfg.engine)
    except BaseException:
        job.close()
        raise
    return job, cfg


def run_infer(task: str, model: str, src: Path, dst: Path, opts: InferOptions, *,
              factory: str | None = None, options: dict[str, Any] | None = None,
              experiment: str | None = None) -> int:
    """Run a batch-inference job from the command line; returns the exit code (0 / 2 / 3)."""
    from medgen.cli._common import fail
    from medgen.errors import EXIT_USAGE, MedgenError

    try:
        job, cfg = prepare_job(task, model, src, dst, opts, factory=factory, options=options)
    except MedgenError as exc:
        fail(exc, EXIT_USAGE)
    bar = _Bar(task, opts.quiet or not sys.stderr.isatty())
    run_kwargs = dict(engine=cfg.engine, workers=cfg.workers, scheduler=cfg.scheduler,
                      progress=bar, processes=cfg.dask_processes)
    try:
        if opts.track:
            summary = _run_tracked(task, job, model, src, dst, opts, run_kwargs, bar, experiment)
        else:
            with bar.prog:
                summary = job.run(**run_kwargs)
    except MedgenError as exc:
        fail(exc, EXIT_USAGE)
    finally:
        job.close()
    _report(task, summary, dst)
    return summary.exit_code


def _run_tracked(task, job, model, src, dst, opts, run_kwargs, bar, experiment):
    """The job inside an MLflow run (params first, outputs and the seal at the end)."""
    import logging

    from medgen.infer.tracking import log_job_end, log_job_start, seal_job
    from medgen.track import start_run

    name = opts.run_name or f"{task}-{job.job_digest[:8]}"
    with start_run(experiment or f"medgen-{task}", name, tracking_uri=opts.tracking_uri,
                   roots={"src": str(Path(src).resolve()), "dst": str(Path(dst).resolve())},
                   tags={"medgen.task": task}) as run:
        log_job_start(run, job, model=model, engine=run_kwargs["engine"])
        with bar.prog:
            summary = job.run(**run_kwargs)
        summary.tracking_run_id = run.run_id
        try:
            log_job_end(run, job, summary)
            seal_job(run, job, summary, model=model)
        except Exception as exc:  # noqa: BLE001 - outputs are done; say so, keep the code
            logging.getLogger("medgen.infer").warning("could not record the job in MLflow: %s",
                                                      type(exc).__name__)
    return summary


def _report(task: str, summary, dst: Path) -> None:
    """Failed/quarantined items (one line each), the summary line, and the JSON on stdout."""
    import json

    from medgen.cli._common import console

    err = console(stderr=True)
    for f in summary.failures:
        err.print(f"{f['status']}: item {f['item']} {f['error']}", markup=False)
    rate = _fmt_rate(summary.voxels_per_s)
    err.print(f"{task}: {summary.ok} ok, {summary.skipped} skipped, {summary.failed} failed, "
              f"{summary.quarantined} quarantined of {summary.n_items} in {summary.seconds:.1f} s "
              f"({rate}); ledger {Path(dst) / 'ledger.jsonl'}", markup=False)
    typer.echo(json.dumps({k: v for k, v in summary.to_dict().items() if k != "failures"},
                          sort_keys=True))
