"""MLflow records of batch-inference jobs (one run per job; no PHI).

What a run holds:

* params: task, engine, model family, how the model was given (checkpoint folder name or MLflow
  URI), settings, output format, item count;
* tags: ``medgen.model.weights_sha256``, ``medgen.model.config_sha256``, ``medgen.job_digest``,
  ``medgen.manifest.input.sha256`` (the *input manifest digest*: sha256 of the sorted
  ``[item id, input sha256]`` list), ``medgen.output_manifest.sha256`` (of the artifact);
* artifacts: ``outputs/output_manifest.json`` (keyed item ids, input sha256 and the sha256 of
  every output file, canonical JSON; the same bytes as ``DST/output_manifest.json``) and
  ``outputs/summary.json`` (failures by item id and status only);
* metrics: items ok / skipped / failed / quarantined / retried, voxels, seconds, voxels per second,
  forward seconds, peak RSS.

No relative input path reaches MLflow (issue 13.3): item ids are keyed pseudonyms
(:mod:`medgen.infer.items`), output files are named ``<item id>.nii.gz`` / ``<item id>/IM00001.dcm``,
and the summary's failure list carries no paths or free text. Relative paths stay in DST's own
ledger, quarantine list and summary, which are never uploaded. Everything logged still passes
medgen's PHI guard (:mod:`medgen.track.phi`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medgen.track.models import model_reference

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Job, JobSummary
    from medgen.track.run import Run

TAG_WEIGHTS = "medgen.model.weights_sha256"
TAG_CONFIG = "medgen.model.config_sha256"
TAG_JOB = "medgen.job_digest"
TAG_OUTPUT_MANIFEST = "medgen.output_manifest.sha256"

__all__ = ["log_job_end", "log_job_start", "model_reference", "seal_job"]


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
    from medgen.infer.summary import shared_summary

    run.log_manifest(summary.input_digest, role="input")
    run.log_json(job.output_manifest(), "outputs/output_manifest.json", canonical=True,
                 sha256_tag=TAG_OUTPUT_MANIFEST)
    run.log_json(shared_summary(summary), "outputs/summary.json")
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

    The seal recipe lives with the job's auditor (:func:`medgen.infer.auditor.seal_job`), which
    reads it back in ``medgen audit RUN [--rerun N]``.
    """
    from medgen.infer.auditor import seal_job as _seal

    return _seal(run, job, summary, model=model)
