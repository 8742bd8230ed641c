"""What a job reports: the summary (counts, throughput, digests) and the output manifest.

Two audiences, two contents (issue 13.3):

* **DST (local, the operator's)**: ``summary.json`` lists failed and quarantined items with their
  relative input path and reason, as stderr does; the ledger keeps relative paths too. These files
  never leave DST.
* **MLflow and anything shared** (:func:`shared_summary`, :func:`output_manifest`): items are named
  by their keyed ids only - never by input path text, which may hold names, IDs or dates
  (``visit_Doe_John``, ``MRN12345678_t1.nii.gz``). The output manifest names each output file by
  ``<item id>.nii.gz`` (a single-file output) or ``<item id>/IM00001.dcm`` (a file of a derived
  series folder; medgen chose those names); ``DST/output_manifest.json`` is the
  same bytes as the MLflow artifact, so its sha256 tag proves the file in DST.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from medgen.errors import EXIT_OK, EXIT_PARTIAL
from medgen.utils.hashing import sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.items import Item

OUTPUT_MANIFEST_KIND = "medgen-infer-outputs"
OUTPUT_MANIFEST_VERSION = 2


@dataclass
class JobSummary:
    """Counts, throughput and digests of one run of a job (``DST/summary.json``)."""

    task: str
    engine: str
    n_items: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    quarantined: int = 0
    retried: int = 0
    voxels: int = 0
    seconds: float = 0.0
    forward_seconds: float | None = None
    voxels_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    cuda_max_allocated_mb: float | None = None
    job_digest: str = ""
    weights_sha256: str | None = None
    input_digest: str = ""
    output_manifest_sha256: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    tracking_run_id: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if (self.failed or self.quarantined) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


def _count(s: JobSummary, it: Item, rec: dict[str, Any] | None) -> None:
    if rec is None:  # never came back (a lost worker that Dask gave up on): failed
        s.failed += 1
        s.failures.append({"item": it.id, "rel": it.rel, "status": "failed", "error": "no result"})
        return
    st = rec["status"]
    if st == "skipped":
        s.skipped += 1
        if rec.get("prior_status") == "quarantined":
            s.quarantined += 1
            s.failures.append({"item": it.id, "rel": it.rel, "status": "quarantined",
                               "error": rec.get("error") or ""})
    elif st == "ok":
        s.ok += 1
        s.voxels += int(rec.get("voxels") or 0)
    else:
        setattr(s, st, getattr(s, st) + 1)
        s.failures.append({"item": it.id, "rel": it.rel, "status": st,
                           "error": rec.get("error") or ""})
    s.peak_rss_mb = max(s.peak_rss_mb, float(rec.get("peak_rss_mb") or 0.0))


def summarize(s: JobSummary, items: Sequence[Item], final: Mapping[str, dict[str, Any]],
              attempts: Iterable[dict[str, Any]], retried: int, seconds: float) -> JobSummary:
    """Fill ``s`` from each item's final record and every attempt's record of this run."""
    for it in items:
        _count(s, it, final.get(it.id))
    s.seconds = round(seconds, 3)
    s.retried = retried
    peaks = [float(r["cuda_max_allocated_mb"]) for r in final.values()
             if r.get("cuda_max_allocated_mb")]
    s.cuda_max_allocated_mb = max(peaks) if peaks else None
    fwd = [float(r.get("forward_seconds") or 0.0) for r in attempts]
    s.forward_seconds = round(sum(fwd), 3) if fwd else None
    s.voxels_per_s = round(s.voxels / seconds, 1) if seconds > 0 else 0.0
    s.input_digest = sha256_json(sorted([[i.id, (final.get(i.id) or {}).get("input_sha256")]
                                         for i in items], key=lambda p: p[0]))
    return s


def shared_summary(s: JobSummary) -> dict[str, Any]:
    """The summary for MLflow: failures by item id and status only (no path, no free text that
    could carry one)."""
    d = s.to_dict()
    d["failures"] = [{"item": f["item"], "status": f["status"]} for f in s.failures]
    return d


def _part(out_rel: str, path: str) -> str:
    """The rest of an output file's shared name after its item id: the suffix of a single-file
    output (``.nii.gz``), or ``/<name>`` inside a series folder (names medgen wrote)."""
    if path == out_rel:
        name = out_rel.rsplit("/", 1)[-1]
        for ext in (".nii.gz", ".nii"):
            if name.lower().endswith(ext):
                return ext
        return "." + name.rsplit(".", 1)[-1] if "." in name else ""
    inner = path[len(out_rel) + 1:] if path.startswith(out_rel + "/") else path.rsplit("/", 1)[-1]
    return "/" + inner


def output_manifest(items: Sequence[Item], latest: Mapping[str, dict[str, Any]], *, task: str,
                    job_digest: str, weights_sha256: str | None) -> dict[str, Any]:
    """Keyed item ids, input sha256 and the sha256 of every output file of the ok items."""
    rows = []
    for it in sorted(items, key=lambda i: i.id):
        e = latest.get(it.id)
        if not (e and e.get("status") == "ok" and e.get("job_digest") == job_digest):
            continue
        out = str(e.get("out") or "")
        files = sorted((it.id + _part(out, o["path"]), o["sha256"])
                       for o in e.get("outputs") or [])
        rows.append({"item": it.id, "input_sha256": e.get("input_sha256"),
                     "files": [{"path": p, "sha256": h} for p, h in files]})
    return {"kind": OUTPUT_MANIFEST_KIND, "version": OUTPUT_MANIFEST_VERSION, "task": task,
            "job_digest": job_digest, "weights_sha256": weights_sha256, "items": rows}


def files_by_part(row: Mapping[str, Any]) -> dict[str, str]:
    """An output-manifest row's files as {part after the item id: sha256} (comparable between
    two jobs, whose DSTs key item ids differently)."""
    iid = str(row["item"])
    return {f["path"][len(iid):] if f["path"].startswith(iid) else f["path"]: f["sha256"]
            for f in row.get("files") or []}
