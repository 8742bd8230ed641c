"""MLflow records of batch-inference jobs (one run per job; no PHI).

What a run holds:

* params: task, engine, model family, how the model was given (checkpoint folder name or MLflow
  URI), settings, output format, item count;
* tags: ``medgen.model.weights_sha256``, ``medgen.model.config_sha256``, ``medgen.job_digest``,
  ``medgen.manifest.input.sha256`` (the *input manifest digest*: sha256 of the sorted
  ``[item id, input sha256]`` list), ``medgen.output_manifest.sha256`` (of the artifact);
* artifacts: ``outputs/output_manifest.json`` (item id, relative output path, sha256 of every
  output file, canonical JSON) and ``outputs/summary.json``;
* metrics: items ok / skipped / failed / quarantined / retried, voxels, seconds, voxels per second,
  forward seconds, peak RSS.

Everything passes medgen's PHI guard (:mod:`medgen.track.phi`); relative paths that look
identifying are redacted in the logged copy, never in the job's own files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Job, JobSummary
    from medgen.track.run import Run

TAG_WEIGHTS = "medgen.model.weights_sha256"
TAG_CONFIG = "medgen.model.config_sha256"
TAG_JOB = "medgen.job_digest"
TAG_OUTPUT_MANIFEST = "medgen.output_manifest.sha256"


def model_reference(model: str) -> dict[str, str]:
    """A non-identifying description of ``--model`` (folder name, or the MLflow URI)."""
    if model.startswith("runs:/"):  # split: the guard would take "/<path>" after a hex id for a path
        run_id, _, path = model[len("runs:/"):].partition("/")
        return {"model_run_id": run_id, "model_artifact_path": path}
    if model.startswith("models:/"):
        return {"model_uri": model}
    return {"model_dir": Path(model).name}


def log_job_start(run: Run, job: Job, *, model: str, engine: str,
                  extra: Mapping[str, Any] | None = None) -> None:
    p = job.predictor
    assert p is not None
    params: dict[str, Any] = {"task": job.task, "engine": engine,
                              "model_name": getattr(p.card, "model_name", "unknown"),
                              "output_format": job.output_format, "n_items": len(job.items),
                              "factory": job.spec.factory, "device": str(p.device),
                              "overwrite": job.overwrite, "retries": job.retries}
    params.update(model_reference(model))
    for k, v in p.settings.to_dict().items():
        params[f"settings.{k}"] = "" if v is None else v
    for k, v in dict(job.spec.options).items():
        params[f"options.{k}"] = v
    params.update(extra or {})
    run.log_params(params)
    run.set_tags({TAG_WEIGHTS: p.weights_sha256 or "", TAG_CONFIG: getattr(p.card, "config_sha256", "") or "",
                  TAG_JOB: job.job_digest, "medgen.task": job.task})


def log_job_end(run: Run, job: Job, summary: JobSummary) -> None:
    run.log_manifest(summary.input_digest, role="input")
    run.log_json(job.output_manifest(), "outputs/output_manifest.json", canonical=True,
                 sha256_tag=TAG_OUTPUT_MANIFEST)
    d = summary.to_dict()
    run.log_json(d, "outputs/summary.json")
    metrics = {"items_ok": summary.ok, "items_skipped": summary.skipped,
               "items_failed": summary.failed, "items_quarantined": summary.quarantined,
               "items_retried": summary.retried, "voxels": summary.voxels,
               "seconds": summary.seconds, "voxels_per_s": summary.voxels_per_s,
               "peak_rss_mb": summary.peak_rss_mb}
    if summary.forward_seconds is not None:
        metrics["forward_seconds"] = summary.forward_seconds
    if summary.cuda_max_allocated_mb is not None:
        metrics["cuda_max_allocated_mb"] = summary.cuda_max_allocated_mb
    run.log_metrics(metrics)


def seal_job(run: Run, job: Job, summary: JobSummary, *, model: str) -> str:
    """Seal the job's run (``audit.json``): call after everything else is logged.

    The re-run block lets ``medgen audit RUN --rerun N`` rebuild the predictor from the same
    checkpoint and settings and recompute N items (:func:`medgen.infer.auditor.rerun_items`). Path
    hints are relative to the working directory and dropped when they look identifying.
    """
    from medgen.audit import seal_run
    from medgen.audit.seal import rel_hint

    def safe(hint):
        return hint if hint and not run.guard.findings(hint) else None

    p = job.predictor
    model_hint = model if model.startswith(("runs:/", "models:/")) else safe(rel_hint(model))
    rerun = {"task": job.task, "src_hint": safe(rel_hint(job.src)), "model_hint": model_hint,
             "root_hint": safe(rel_hint(job.root)) if job.root else None,
             "settings": p.settings.to_dict() if p is not None else {},
             "factory": job.spec.factory, "options": dict(job.spec.options),
             "output_format": job.output_format}
    lineage = {"weights_sha256": summary.weights_sha256, "job_digest": summary.job_digest,
               "input_digest": summary.input_digest,
               "output_manifest_sha256": summary.output_manifest_sha256,
               "ok": summary.ok, "failed": summary.failed, "quarantined": summary.quarantined}
    return seal_run(run, kind="infer", lineage=lineage, rerun=rerun)
