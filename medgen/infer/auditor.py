"""The audit of batch-inference jobs (kind ``infer``: denoise, upscale, translate), a plugin of
:mod:`medgen.audit`, and the seal recipe it reads.

* ``check``: every item's input is re-hashed against the input sha256 sealed for it in
  ``outputs/output_manifest.json`` (items are matched by what their input hashes to: item ids
  are keyed with the job DST's own key).
* ``rerun``: the predictor is rebuilt from the same checkpoint and settings, ``N`` items are
  recomputed into a temporary folder and every output file's sha256 is compared with the sealed
  output manifest (bit-exact: deterministic CPU inference writes identical bytes).

Paths are sealed as references to named data roots (``input``, ``job_root``, ``model``; see
:class:`medgen.track.lineage.DataRoots`), so the audit finds the data wherever it lives; an MLflow
model URI is sealed as :func:`medgen.track.models.model_reference` gives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from medgen.audit import AuditContext, Finding, fail, ok

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.job import Job, JobSummary
    from medgen.track.run import Run


def seal_job(run: Run, job: Job, summary: JobSummary, *, model: str) -> str:
    """Seal a batch job's run (``audit.json``): call after everything else is logged."""
    from medgen.audit import seal_run
    from medgen.track.lineage import DataRoots
    from medgen.track.models import model_reference

    roots = DataRoots()
    g = run.guard
    src = roots.ref(job.src, "input", folder=job.src.is_dir(), guard=g)
    if model.startswith(("runs:/", "models:/")):
        model_ref = model_reference(model)  # a runs:/ URI split (the guard reads /path as a path)
    else:
        model_ref = roots.ref(model, "model", folder=True, guard=g)
    job_root = roots.ref(job.root, "job_root", folder=True, guard=g) if job.root else None
    p = job.predictor
    rerun = {"task": job.task, "src": src, "model": model_ref, "root": job_root,
             "settings": p.settings.to_dict() if p is not None else {},
             "factory": job.spec.factory, "options": dict(job.spec.options),
             "output_format": job.output_format}
    lineage = {"weights_sha256": summary.weights_sha256, "job_digest": summary.job_digest,
               "input_digest": summary.input_digest,
               "output_manifest_sha256": summary.output_manifest_sha256,
               "ok": summary.ok, "failed": summary.failed, "quarantined": summary.quarantined}
    return seal_run(run, kind="infer", lineage=lineage, rerun=rerun, roots=roots)


def _sealed_outputs(ctx: AuditContext) -> dict:
    om = ctx.artifact("outputs/output_manifest.json")
    return {r["item"]: r for r in json.loads(Path(om).read_text())["items"]}


def _src(ctx: AuditContext) -> tuple[Path | None, Path | None]:
    rr = ctx.record.get("rerun", {})
    return ctx.path(rr.get("src")), ctx.path(rr.get("root"))


def _by_input(src: Path, root: Path | None, output_format: str) -> dict:
    """Items found at the job's source now, by input sha256."""
    from medgen.infer.job import discover_items
    from medgen.infer.sources import open_source

    items = discover_items(src, None, output_format=output_format, root=root)
    source = open_source(src, root=root)
    found = {}
    for it in items:
        if not it.error:
            try:
                found.setdefault(source.fingerprint(it), it)
            except Exception:  # noqa: BLE001 - an unreadable input matches nothing
                continue
    return found


class InferAuditor:
    """Checks and re-runs of batch-inference jobs."""

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        src, root = _src(ctx)
        if src is None or not src.exists():
            yield fail("inputs of the job not found: pass --data-root input=DIR")
            return
        sealed = _sealed_outputs(ctx)
        found = _by_input(src, root, ctx.record.get("rerun", {}).get("output_format", "auto"))
        bad = [iid for iid, row in sorted(sealed.items()) if row.get("input_sha256") not in found]
        for iid in bad:
            yield fail(f"input of item {iid} is missing or was changed (no input hashes to its "
                       "sealed sha256)")
        if not bad:
            yield ok(f"{len(sealed)} input item(s) re-hashed: unchanged")

    def rerun(self, ctx: AuditContext, n: int) -> list[Finding]:
        return _rerun_items(ctx, n)


def _model_dir(ctx: AuditContext) -> Path | None:
    from medgen.track.models import model_from_reference, resolve_model

    ref = ctx.record.get("rerun", {}).get("model") or {}
    if "root" in ref:
        local = ctx.path(ref)
        return local.resolve() if local is not None and local.exists() else None
    uri = model_from_reference(ref)
    return resolve_model(uri, tracking_uri=ctx.tracking_uri).resolve() if uri else None


def _rerun_items(ctx: AuditContext, n: int) -> list[Finding]:
    """Rebuild the predictor, run ``n`` items into a temporary folder, compare output bytes."""
    from medgen.infer.job import Job
    from medgen.infer.predictor import PredictorSpec
    from medgen.infer.settings import InferenceSettings
    from medgen.infer.summary import files_by_part

    rr = ctx.record.get("rerun", {})
    src, root = _src(ctx)
    if src is None or not src.exists():
        return [fail("inference re-run impossible: the job's inputs are not found "
                     "(pass --data-root input=DIR)")]
    ckpt = _model_dir(ctx)
    if ckpt is None:
        return [fail("inference re-run impossible: the model is not found (pass --data-root model=DIR)")]
    sealed = _sealed_outputs(ctx)
    if not sealed:
        return [fail("inference re-run impossible: the job produced no outputs")]
    settings = dict(rr.get("settings") or {})
    settings["device"] = "cpu" if settings.get("device", "auto") in ("auto", "cpu") else settings["device"]
    spec = PredictorSpec.make(ckpt, InferenceSettings(**settings), rr.get("factory"),
                              rr.get("options") or {})
    job = Job(spec, src, ctx.workdir / "rerun", output_format=rr.get("output_format", "auto"),
              root=root, task=rr.get("task", "infer"))
    items = job.prepare()
    digests = {it.id: job.source.fingerprint(it) for it in items if not it.error}
    chosen = dict(sorted(sealed.items())[: max(1, n)])
    wanted = {r["input_sha256"] for r in chosen.values()}
    job.items = [it for it in items if digests.get(it.id) in wanted]
    try:
        job.run()
    finally:
        job.close()
    now = {r["input_sha256"]: r for r in job.output_manifest()["items"]}
    out = []
    for iid, row in chosen.items():
        want = files_by_part(row)
        got = files_by_part(now[row["input_sha256"]]) if row["input_sha256"] in now else {}
        if got == want:
            out.append(ok(f"item {iid}: re-run output bit-identical ({len(want)} file(s))"))
        else:
            out.append(fail(f"item {iid}: re-run output differs from the sealed output manifest"))
    return out
