"""A batch job: set-up, the engine run, and what is left in DST afterwards.

Layout of an output folder ``DST``::

    DST/<output paths>               outputs (:mod:`medgen.infer.items` names them), written by
                                     the sink (:mod:`medgen.infer.sinks`) atomically
    DST/ledger.jsonl                 one fsync'd line per attempt; latest line wins (:mod:`.ledger`)
    DST/quarantine.jsonl             items whose input cannot go through the model (latest state)
    DST/output_manifest.json         keyed item ids and sha256 of every output file (:mod:`.summary`)
    DST/summary.json                 the last run's counts, throughput and digests
    DST/.medgen-job.lock             held (flock) while a job writes here
    DST/.medgen-item-key             the key of the item ids (0600; never leaves DST)

The parts, in the order a volume meets them: a *source* finds the items and reads inputs
(:mod:`.sources`), :mod:`.items` names outputs, an *engine* (:mod:`.engines`) runs each item
through *the attempt path* (:mod:`.attempt`: load -> predict -> write -> record), the *sink*
writes outputs, the job appends records to the *ledger* and writes the *summary*.

Set-up refuses (exit 2, one line) a DST that overlaps the inputs in either direction, job state
files that are symbolic links or hard links, and a second job on the same DST.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.errors import ConfigError, UnsafePathError
from medgen.infer.attempt import JobContext
from medgen.infer.engines import Progress
from medgen.infer.engines.registry import make_engine
from medgen.infer.items import ITEM_KEY_NAME, Item, item_key
from medgen.infer.ledger import LEDGER_NAME, Ledger, append_line, check_state_file
from medgen.infer.sinks import FolderSink, OutputSink
from medgen.infer.sources import ItemSource, check_overlap, open_source
from medgen.infer.summary import JobSummary, output_manifest, summarize
from medgen.utils.atomic import atomic_write_text, clean_temp, file_mode
from medgen.utils.hashing import canonical_json, sha256_bytes, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from medgen.infer.predictor import PredictorSpec, VolumePredictor

log = logging.getLogger("medgen.infer")

QUARANTINE_NAME = "quarantine.jsonl"
OUTPUT_MANIFEST_NAME = "output_manifest.json"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".medgen-job.lock"
STATE_FILES = (LEDGER_NAME, QUARANTINE_NAME, OUTPUT_MANIFEST_NAME, SUMMARY_NAME, LOCK_NAME,
               ITEM_KEY_NAME)


def _quarantine_line(entry: dict[str, Any]) -> str:
    return json.dumps({"item": entry["item"], "rel": entry.get("rel"),
                       "input_sha256": entry.get("input_sha256"), "error": entry.get("error")},
                      sort_keys=True) + "\n"


class Job:
    """A batch job over ``src`` writing into ``dst``.

    Parameters
    ----------
    spec : PredictorSpec
        How to build the predictor (here and on workers).
    src, dst : path
        Input folder / NIfTI file / manifest, and the output folder.
    output_format : {"auto", "nifti", "dicom"}
    overwrite : bool
        Re-run every item whatever the ledger says.
    retries, retry_delay : int, float
        Attempts after the first for transient errors; first backoff in seconds (doubles).
    root : path, optional
        Root of a manifest's files (default: recorded in its summary).
    prefetch : int
        Items read ahead / written behind the model (local engine).
    task : str
        Name used in logs, tracking and the summary (``denoise``, ``upscale``, ``translate``).
    source, sink : optional
        Plug-in item source / output sink (default: files under ``src``, a folder at ``dst``).
    """

    def __init__(self, spec: PredictorSpec, src: str | Path | None, dst: str | Path, *,
                 output_format: str = "auto", overwrite: bool = False, retries: int = 2,
                 retry_delay: float = 1.0, root: str | Path | None = None, prefetch: int = 2,
                 task: str = "denoise", source: ItemSource | None = None,
                 sink: OutputSink | None = None):
        if output_format not in ("auto", "nifti", "dicom"):
            raise ConfigError("--output-format", f"'{output_format}': auto, nifti or dicom")
        self.spec = spec
        self.src = Path(src) if src is not None else None
        self.dst = Path(dst)
        self.output_format = output_format
        self.overwrite = overwrite
        self.retries = max(0, int(retries))
        self.retry_delay = float(retry_delay)
        self.root = root
        self.prefetch = max(1, int(prefetch))
        self.task = task
        self.source = source
        self.sink = sink
        self.items: list[Item] = []
        self.ledger: Ledger | None = None
        self.predictor: VolumePredictor | None = None
        self.ctx: JobContext | None = None
        self.job_digest = ""
        self._lock_fd: int | None = None
        self._final: dict[str, dict[str, Any]] = {}
        self._attempts: list[dict[str, Any]] = []
        self._retried = 0

    # ------------------------------------------------------------------ set-up
    def open_source(self) -> ItemSource:
        """The item source, with DST checked against its inputs (before DST is created)."""
        if self.source is None:
            if self.src is None:
                raise ConfigError("SRC", "no input given")
            self.source = open_source(self.src, root=self.root)
        check_overlap(self.source.roots(), self.dst)
        return self.source

    def prepare(self, predictor: VolumePredictor | None = None, engine: str = "local") -> list[Item]:
        """Check and lock DST, clean temp leftovers, discover items, build the predictor, open
        (and repair) the ledger."""
        source = self.open_source()
        self.dst.mkdir(parents=True, exist_ok=True)
        for name in STATE_FILES:
            check_state_file(self.dst / name)
        self._take_lock()
        n = clean_temp(self.dst)
        if n:
            log.info("removed %d leftover temporary file(s) of an interrupted run", n)
        self.sink = self.sink or FolderSink(str(self.dst.resolve()))
        self.items = check_outputs(source.discover(self.output_format, item_key(self.dst)),
                                   self.sink)
        self.predictor = predictor or self.spec.build()
        self.job_digest = sha256_json(self.predictor.describe())
        self.ctx = JobContext(source, self.sink, self.job_digest, self.predictor.derivation(),
                              self.predictor.weights_sha256, self.overwrite, self.retries,
                              self.retry_delay, engine)
        self.ledger = Ledger(self.dst / LEDGER_NAME, repair=True)
        return self.items

    def _take_lock(self) -> None:
        import fcntl

        fd = os.open(self.dst / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError("DST", "another medgen job is writing to this output folder") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ engine host
    def latest(self, item_id: str) -> dict[str, Any] | None:
        assert self.ledger is not None
        return self.ledger.latest.get(item_id)

    def record(self, rec: dict[str, Any], progress: Progress | None = None,
               final: bool = True) -> None:
        """Take one attempt's record: append it to the ledger (not skips), count, report.
        ``final=False``: a transient failure that will be retried."""
        status, iid = rec["status"], rec["item"]
        if status != "skipped":
            self._attempts.append(rec)
            if int(rec.get("attempt") or 1) > 1:
                self._retried += 1
            entry = {k: v for k, v in rec.items() if k not in ("transient", "prior_status")}
            if not self._same_quarantine(entry):
                self.ledger.append(entry)
            if status == "quarantined":
                append_line(self.dst / QUARANTINE_NAME, _quarantine_line(entry))
            if status != "ok":
                log.warning("item %s (%s) %s: %s", iid, rec.get("out") or rec.get("rel"),
                            status, rec.get("error"))
        self._final[iid] = rec
        if progress is not None:
            progress("item" if final else "retry", rec)

    def _same_quarantine(self, entry: dict[str, Any]) -> bool:
        prev = self.ledger.latest.get(entry["item"])
        return (entry["status"] == "quarantined" and prev is not None
                and prev.get("status") == "quarantined"
                and all(prev.get(k) == entry.get(k) for k in ("error", "input_sha256", "job_digest")))

    # ------------------------------------------------------------------ running
    def run(self, *, engine: str = "local", workers: int | None = None,
            scheduler: str | None = None, progress: Progress | None = None,
            predictor: VolumePredictor | None = None, processes: bool = True) -> JobSummary:
        """Run every pending item with the chosen engine and write ledger, quarantine list,
        output manifest and summary."""
        t0 = time.perf_counter()
        try:
            runner = make_engine(engine, workers=workers, scheduler=scheduler, processes=processes)
            if self.ctx is None:
                self.prepare(predictor, engine)
            if progress is not None:
                progress("start", {"total": len(self.items)})
            runner.run(self, self.items, progress)
            return self.finish(engine, time.perf_counter() - t0)
        finally:
            self.close()

    def finish(self, engine: str, seconds: float) -> JobSummary:
        """Summary, output manifest and quarantine list of this run, written into DST."""
        s = JobSummary(task=self.task, engine=engine, n_items=len(self.items),
                       job_digest=self.job_digest, weights_sha256=self.predictor.weights_sha256)
        summarize(s, self.items, self._final, self._attempts, self._retried, seconds)
        data = canonical_json(self.output_manifest())
        atomic_write_text(self.dst / OUTPUT_MANIFEST_NAME, data.decode("utf-8") + "\n")
        s.output_manifest_sha256 = sha256_bytes(data)
        self._rewrite_quarantine()
        atomic_write_text(self.dst / SUMMARY_NAME,
                          json.dumps(s.to_dict(), indent=1, sort_keys=True) + "\n")
        return s

    def output_manifest(self) -> dict[str, Any]:
        """Keyed item ids, input sha256 and the sha256 of every output file (ok items)."""
        return output_manifest(self.items, self.ledger.latest, task=self.task,
                               job_digest=self.job_digest,
                               weights_sha256=self.predictor.weights_sha256 if self.predictor else None)

    def _rewrite_quarantine(self) -> None:
        ids = {i.id for i in self.items}
        rows = [e for k, e in sorted(self.ledger.latest.items())
                if k in ids and e.get("status") == "quarantined"]
        path = self.dst / QUARANTINE_NAME
        if rows:
            atomic_write_text(path, "".join(_quarantine_line(e) for e in rows))
        elif path.exists():
            path.unlink()


def discover_items(src: str | Path, dst: str | Path | None = None, *, output_format: str = "auto",
                   root: str | Path | None = None, secret: bytes | None = None) -> list[Item]:
    """The items a job over ``src`` would run (DST checked when given; nothing is written).

    Ids are keyed with ``secret`` (default: a throw-away key, so ids only mean something within
    this call - a job keys them with DST's own key).
    """
    if output_format not in ("auto", "nifti", "dicom"):
        raise ConfigError("--output-format", f"'{output_format}': auto, nifti or dicom")
    source = open_source(src, root=root)
    items = source.discover(output_format, secret or item_key(None))
    if dst is None:
        return items
    check_overlap(source.roots(), dst)
    return check_outputs(items, FolderSink(str(Path(dst).resolve())))


def check_outputs(items: list[Item], sink: OutputSink) -> list[Item]:
    """``items``, each refused (one line) whose output target the sink finds unsafe."""
    out = []
    for it in items:
        if it.error or it.out_rel is None:
            out.append(it)
            continue
        try:
            sink.check(it)
            out.append(it)
        except UnsafePathError as exc:
            out.append(it.refused(str(exc)))
    return out
