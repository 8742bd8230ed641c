"""A fresh, named MLflow run with lineage, behind the PHI guard.

Everything goes through an explicit ``MlflowClient`` bound to one tracking URI: medgen never uses
MLflow's fluent API and its process-global "active run", so a stale ``MLFLOW_RUN_ID`` or a run left
RUNNING by a killed job can never be attached to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.track.artifacts import (  # noqa: F401 - re-exported: the tag contract
    TAG_CONFIG_ARTIFACT_SHA256,
    TAG_CONFIG_SHA256,
    TAG_MANIFEST,
    ArtifactLogging,
    flatten,
)
from medgen.track.lineage import (  # noqa: F401 - re-exported: the tag contract
    LINEAGE_PACKAGES,
    TAG_ENV_LOCK_SHA256,
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF_SHA256,
    TAG_GIT_DIRTY,
    VERSION_TAG,
)
from medgen.track.phi import PHIError, PHIGuard
from medgen.track.store import (
    client_for,
    ensure_store,
    get_or_create_experiment,
    retry,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger("medgen.track")

# MLflow limits (mlflow.utils.validation); fixed here so importing this module stays light.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000
TRUNCATED_MARK = "...[truncated; full value in config/resolved.yaml]"


# tag names (the public contract with audits and batch jobs)
TAG_REDACTIONS = "medgen.phi.redactions"
TAG_REDACTED_ARTIFACTS = "medgen.phi.redacted_artifacts"
TAG_ERROR = "medgen.error"
#: set by ``medgen run`` for its steps: their runs become nested runs of the pipeline's run
ENV_PARENT_RUN_ID = "MEDGEN_PARENT_RUN_ID"


def _cut(value: str, limit: int, mark: str = TRUNCATED_MARK) -> str:
    return value if len(value) <= limit else value[: limit - len(mark)] + mark


class Run(ArtifactLogging):
    """One MLflow run. Create it with :func:`start_run`; every method guards what it logs.

    Attributes
    ----------
    run_id, experiment_id, tracking_uri : str
    client : mlflow.MlflowClient
    guard : PHIGuard
    """

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, tracking_uri: str,
                 guard: PHIGuard, run_name: str, *, orig_name: str | None = None,
                 orig_tags: Mapping[str, Any] | None = None, base_redactions: int | None = None):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self.guard = guard
        self.run_name = run_name
        self.redacted_artifacts: list[str] = []
        # redactions made for THIS run (a child run shares its parent's guard)
        self._noted_redactions = guard.redactions if base_redactions is None else base_redactions
        self.redactions = 0
        self._tmp = Path(tempfile.mkdtemp(prefix="medgen-track-"))
        self._ended = False
        # what the caller asked to log, so a later register_identifiers can re-check it
        self._orig_name = orig_name if orig_name is not None else run_name
        self._sent_tags: dict[str, tuple[Any, str, str]] = {}  # orig key -> (orig value, key, value)
        self._sent_params: dict[str, tuple[Any, str, str]] = {}
        with self._uncounted():  # start_run already guarded (and counted) these
            for k, v in (orig_tags or {}).items():
                self._sent_tags[str(k)] = (v, self._g(k, "tag key"), self._tag_value(k, v))

    @contextlib.contextmanager
    def _uncounted(self) -> Iterator[None]:
        """Re-checks of values already guarded do not add to the redaction count."""
        n = self.guard.redactions
        try:
            yield
        finally:
            self.guard.redactions = n

    # -- identity -------------------------------------------------------------------------------
    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, name={self.run_name!r})"

    # -- PHI ------------------------------------------------------------------------------------
    def register_identifiers(self, values: Iterable[Any]) -> int:
        """Values (PatientName, PatientID, AccessionNumber, original UIDs...) that must never reach
        MLflow in this run; they are redacted wherever they appear from now on.

        The run name and tags already set are re-checked and rewritten. Params cannot be changed
        in MLflow once logged: if one already holds a newly registered value, PHIError is raised
        (the run then ends FAILED). Register identifiers first (``start_run(identifiers=...)``).
        Returns how many patterns were added.
        """
        from mlflow.entities import RunTag

        n = self.guard.register(values)
        if not n:
            return n
        changed = 0
        with self._uncounted():
            new_name = self._g(self._orig_name, "run name")
        if new_name != self.run_name:
            retry(lambda: self.client.update_run(self.run_id, name=new_name))
            self.run_name = new_name
            changed += 1
        fix: list[RunTag] = []
        for ok, (ov, sk, sv) in list(self._sent_tags.items()):
            with self._uncounted():
                nk, nv = self._g(ok, "tag key"), self._tag_value(ok, ov)
            if nk != sk:
                retry(lambda k=sk: self.client.delete_tag(self.run_id, k))
            if (nk, nv) != (sk, sv):
                fix.append(RunTag(nk, nv))
                self._sent_tags[ok] = (ov, nk, nv)
                changed += 1
        if fix:
            retry(lambda: self.client.log_batch(self.run_id, tags=fix))
        with self._uncounted():
            stale = [sk for ok, (ov, sk, sv) in self._sent_params.items()
                     if (self._g(ok, "param key"), self._param_value(ov)) != (sk, sv)]
        self.guard.redactions += changed
        self._note_redactions()
        if stale:
            raise PHIError(None, f"{len(stale)} param(s) logged before these identifiers were "
                                 f"registered hold them and cannot be changed in MLflow; register "
                                 f"identifiers before logging (start_run(identifiers=...))")
        return n

    def add_root(self, name: str, path: str | os.PathLike) -> None:
        """Log paths under ``path`` as ``$name/relative`` instead of a hashed placeholder."""
        self.guard.add_root(name, path)

    def _g(self, value: Any, where: str, dates: bool = True) -> str:
        return self.guard.guard(value, where=where, dates=dates)

    def _key(self, key: Any, where: str) -> str:
        k = self._g(key, where)
        if len(k) > MAX_KEY_LENGTH:
            raise ValueError(f"{where} '{k[:40]}...' longer than {MAX_KEY_LENGTH} characters")
        return k

    def _note_redactions(self, artifact: str | None = None) -> None:
        if artifact and artifact not in self.redacted_artifacts:
            self.redacted_artifacts.append(artifact)
        if self.guard.redactions != self._noted_redactions or artifact:
            self.redactions += self.guard.redactions - self._noted_redactions
            self._noted_redactions = self.guard.redactions
            from mlflow.entities import RunTag

            tags = [RunTag(TAG_REDACTIONS, str(self.redactions))]
            if self.redacted_artifacts:
                tags.append(RunTag(TAG_REDACTED_ARTIFACTS,
                                   _cut(",".join(self.redacted_artifacts), MAX_TAG_VAL_LENGTH, "...")))
            retry(lambda: self.client.log_batch(self.run_id, tags=tags))

    # -- params, tags, metrics ------------------------------------------------------------------
    def _param_value(self, v: Any) -> str:
        return _cut(self._g(v, "param"), MAX_PARAM_VAL_LENGTH)

    def _tag_value(self, k: Any, v: Any) -> str:
        return _cut(self._g(v, "tag", dates=not str(k).startswith(VERSION_TAG)),
                    MAX_TAG_VAL_LENGTH, "...")

    def log_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Log params (values guarded, then cut to MLflow's limit); returns what was logged."""
        from mlflow.entities import Param

        logged = {}
        for k, v in params.items():
            gk, gv = self._key(k, "param key"), self._param_value(v)
            logged[gk] = gv
            self._sent_params.setdefault(str(k), (v, gk, gv))
        items = [Param(k, v) for k, v in logged.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            chunk = items[i:i + _BATCH_PARAMS]
            retry(lambda c=chunk: self.client.log_batch(self.run_id, params=c))
        self._note_redactions()
        return logged

    def set_tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        """Set tags (keys and values guarded, values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        logged = {}
        for k, v in tags.items():
            gk, gv = self._key(k, "tag key"), self._tag_value(k, v)
            logged[gk] = gv
            self._sent_tags[str(k)] = (v, gk, gv)
        items = [RunTag(k, v) for k, v in logged.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            chunk = items[i:i + _BATCH_PARAMS]
            retry(lambda c=chunk: self.client.log_batch(self.run_id, tags=c))
        self._note_redactions()
        return logged

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (keys guarded)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(self._key(k, "metric key"), float(v), ts, int(step or 0))
                 for k, v in metrics.items()]
        for i in range(0, len(items), _BATCH_METRICS):
            chunk = items[i:i + _BATCH_METRICS]
            retry(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))
        self._note_redactions()

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    # -- nesting and ending ---------------------------------------------------------------------
    def child(self, run_name: str, *, experiment: str | None = None,
              tags: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Run]:
        """A nested run (``mlflow.parentRunId`` = this run) sharing this run's PHI guard."""
        exp = experiment or self.client.get_experiment(self.experiment_id).name

        @contextlib.contextmanager
        def _child() -> Iterator[Run]:
            self._note_redactions()
            try:
                with start_run(exp, run_name, tracking_uri=self.tracking_uri, tags=tags,
                               parent_run_id=self.run_id, guard=self.guard) as run:
                    yield run
            finally:
                self._noted_redactions = self.guard.redactions  # the child's are not ours

        return _child()

    def detach(self) -> None:
        """Let go of the run without changing its status (a handle from :func:`reopen_run`)."""
        self._ended = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run terminated (FINISHED, FAILED or KILLED). Idempotent."""
        if self._ended:
            return
        self._ended = True
        try:
            retry(lambda: self.client.set_terminated(self.run_id, status))
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def reopen_run(run_id: str, *, tracking_uri: str | None = None,
               guard: PHIGuard | None = None) -> Run:
    """A handle on an EXISTING run, to complete its record (e.g. a killed training attempt
    marked and sealed by the attempt that resumed it). Explicit only: ``MLFLOW_RUN_ID`` is never
    followed. The handle does not end the run; call :meth:`Run.end` to set its final status."""
    uri = ensure_store(tracking_uri)
    client = client_for(uri)
    info = retry(lambda: client.get_run(run_id)).info
    return Run(client, info.run_id, info.experiment_id, uri, guard or PHIGuard(),
               info.run_name or info.run_id)


def _initial_tags(client: MlflowClient, g: PHIGuard, tags: Mapping[str, Any] | None,
                  parent_run_id: str | None, description: str | None) -> dict[str, str]:
    """The guarded tags a run is created with (parent link, note, medgen's fixed ones)."""
    from medgen import __version__

    init: dict[str, str] = {}
    for k, v in (tags or {}).items():
        init[g.guard(k, where="tag key")] = _cut(g.guard(v, where="tag"), MAX_TAG_VAL_LENGTH, "...")
    if parent_run_id:
        parent = retry(lambda: client.get_run(parent_run_id))  # fails loudly if it does not exist
        init["mlflow.parentRunId"] = parent.info.run_id
    if description:
        init["mlflow.note.content"] = _cut(g.guard(description, where="description"),
                                           MAX_TAG_VAL_LENGTH, "...")
    init.setdefault("medgen.version", __version__)
    init["mlflow.user"] = "medgen"  # the OS user name is not recorded
    init["mlflow.source.name"] = "medgen"  # never the absolute path of a script
    return init


@contextlib.contextmanager
def start_run(experiment: str = "medgen", run_name: str | None = None, *,
              tracking_uri: str | None = None, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, description: str | None = None,
              roots: Mapping[str, str | os.PathLike] | None = None,
              identifiers: Iterable[Any] | None = None, strict: bool = False,
              guard: PHIGuard | None = None) -> Iterator[Run]:
    """Start a FRESH, named run and end it when the block exits.

    Parameters
    ----------
    experiment
        Experiment name (created if missing; artifacts of the embedded store go to
        ``mlartifacts/<experiment>/`` beside ``mlflow.db``).
    run_name
        Run name; default ``<experiment>-<8 random hex>``.
    tracking_uri
        Store; default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``.
    tags, description
        Initial tags (guarded) and the run's note.
    parent_run_id
        Makes this a nested run of an existing run.
    roots, identifiers, strict, guard
        PHI guard set-up (see :class:`medgen.track.phi.PHIGuard`); ``guard`` shares an existing one.

    The run ends FINISHED on success, FAILED on an exception (tag ``medgen.error`` holds the
    guarded one-line reason), KILLED on KeyboardInterrupt. ``MLFLOW_RUN_ID`` is ignored (warned).
    """
    if parent_run_id is None and os.environ.get(ENV_PARENT_RUN_ID):
        # a pipeline step run as a subprocess nests under the pipeline's parent run
        parent_run_id = os.environ[ENV_PARENT_RUN_ID]
    if os.environ.get("MLFLOW_RUN_ID"):
        log.warning("MLFLOW_RUN_ID is set; ignored: medgen always starts a fresh run")
    uri = ensure_store(tracking_uri)
    client = client_for(uri)
    g = guard or PHIGuard(roots=roots, identifiers=identifiers, strict=strict)
    base = g.redactions
    if guard is not None:
        for name, root in (roots or {}).items():
            g.add_root(name, root)
        if identifiers:
            g.register(identifiers)
    exp_name = g.guard(experiment, where="experiment name")
    exp_id = get_or_create_experiment(client, uri, exp_name)
    name = g.guard(run_name or f"{exp_name}-{secrets.token_hex(4)}", where="run name")
    init = _initial_tags(client, g, tags, parent_run_id, description)
    info = retry(lambda: client.create_run(exp_id, run_name=name, tags=init)).info
    run = Run(client, info.run_id, exp_id, uri, g, name, orig_name=run_name or name,
              orig_tags={k: v for k, v in (tags or {}).items()}, base_redactions=base)
    run._note_redactions()
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exc:
        status = "FINISHED" if exc.code in (None, 0) else "FAILED"
        raise
    except BaseException as exc:
        status = "FAILED"
        with contextlib.suppress(Exception):
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            run.set_tags({TAG_ERROR: _cut(reason, 1000, "...")})
        raise
    finally:
        try:
            run.end(status)
        except Exception as end_exc:  # noqa: BLE001 - never mask the block's own exception
            if status == "FINISHED":
                raise
            log.warning("could not mark run %s %s: %s", info.run_id, status,
                        type(end_exc).__name__)
