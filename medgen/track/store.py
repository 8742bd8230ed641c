"""Where runs go: the tracking URI, and a store that is initialised once before parallel writers.

**One rule for every command** (:data:`STORE_RULE`): ``--tracking-uri`` (or a pipeline's
``tracking.tracking_uri``), else ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current
folder. Commands print the store they used (:func:`store_line`). Reading (``medgen audit``) opens
an existing store only (:func:`open_store`): it never creates one.

MLflow's embedded store is a sqlite file; its schema is created (alembic migrations) by the first
client that opens it. Eight processes opening a fresh file at once race on those migrations and can
leave it corrupt, so :func:`ensure_store` does the first open, and every experiment lookup/creation,
inside an exclusive ``fcntl.flock`` on ``<db>.lock`` beside the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from medgen.errors import MedgenError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger("medgen.track")

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"
STORE_RULE = "--tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db in the current folder"
#: MLflow's own run-id rule (mlflow.utils.validation._RUN_ID_REGEX)
_RUN_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")

T = TypeVar("T")

_ready: set[str] = set()
_ready_lock = threading.Lock()


def telemetry_off() -> None:
    """Switch MLflow's usage telemetry off (must happen before ``import mlflow``)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    # MLflow's tqdm bars on artifact downloads (every audit reads artifacts): off unless asked for
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


telemetry_off()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    A relative sqlite path is made absolute against the current directory, so every process of a
    job (whatever its later ``chdir``) writes to the same file.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return "sqlite:///" + str(Path.cwd() / DEFAULT_DB_NAME)
    db = sqlite_path(uri)
    if db is not None:
        return "sqlite:///" + str(db)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), or None for other stores."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:"):]
    if rest.startswith("///"):
        raw = unquote(rest[3:])
        # sqlite:////abs/path -> "/abs/path"; sqlite:///rel/path -> "rel/path"
        return Path(raw).resolve() if raw.startswith("/") else (Path.cwd() / raw).resolve()
    raise ValueError("sqlite tracking URI must look like sqlite:///path/to/mlflow.db")


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of the embedded store go to ``mlartifacts/<experiment>`` beside the database;
    a server decides for itself (``--artifacts-destination``)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^\w.-]+", "_", experiment).strip("._") or "experiment"
    return (db.parent / ARTIFACTS_DIR_NAME / slug).as_uri()


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db.with_name(db.name + ".lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def quiet_mlflow() -> None:
    """MLflow's INFO lines (``Creating initial MLflow database tables...``) stay off stderr: its
    own ``mlflow`` logger is set to WARNING after MLflow configured it on import, unless the user
    chose a level with ``$MLFLOW_LOGGING_LEVEL``."""
    telemetry_off()
    import mlflow  # noqa: F401 - configures MLflow's loggers on first import

    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def client_for(uri: str) -> MlflowClient:
    """An ``MlflowClient`` bound to ``uri`` (no global ``mlflow.set_tracking_uri``)."""
    quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_store(uri: str | None = None) -> str:
    """Resolve ``uri`` and make sure its store exists and has its schema; return the URI.

    Safe to call from many processes at once: for sqlite the first open (schema creation) happens
    under an exclusive file lock beside the database. For a server it checks it answers.
    """
    uri = resolve_tracking_uri(uri)
    with _ready_lock:
        if uri in _ready:
            return uri
    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    if db is not None and not _marked_ready(db):
        # MlflowClient(uri) itself runs the schema migrations on a fresh file: only under the lock
        with _store_lock(uri):
            if not _marked_ready(db):  # first opener: schema creation, alone
                first = client_for(uri)
                retry(lambda: first.search_experiments(max_results=1))
                _mark_ready(db)
    # an initialised store is opened by everybody in parallel (schema check only, read-only)
    client = client_for(uri)
    retry(lambda: client.search_experiments(max_results=1))
    with _ready_lock:
        _ready.add(uri)
    return uri


class TrackingServerError(MedgenError):
    """The tracking server does not answer (named by host and port only)."""


def _check_server(uri: str, timeout: float = 10.0) -> None:
    """Fail fast with one line when a server is down (MLflow's own client would retry for
    minutes). ``/health`` needs no credentials; user:password in the URI is never echoed."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    health = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as r:
            if r.status == 200:
                return
            reason = f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = type(exc).__name__
        if isinstance(exc, urllib.error.URLError) and exc.reason is not None:
            reason = str(getattr(exc.reason, "strerror", None) or exc.reason)
    raise TrackingServerError(where, f"tracking server not reachable ({reason})")


def _marker(db: Path) -> Path:
    return db.with_name(db.name + ".medgen-ready")


def _marked_ready(db: Path) -> bool:
    """The sidecar written once the schema exists (and the database file is still there)."""
    try:
        return db.stat().st_size > 0 and _marker(db).read_text().strip() != ""
    except OSError:
        return False


def _mark_ready(db: Path) -> None:
    import mlflow

    from medgen.utils.atomic import atomic_write_text

    atomic_write_text(_marker(db), f"mlflow {mlflow.__version__}\n")


def get_or_create_experiment(client: MlflowClient, uri: str, name: str) -> str:
    """Experiment id for ``name``, created if missing (locked for sqlite, race-tolerant for a
    server: a concurrent creation is answered by looking the experiment up again)."""
    from mlflow.exceptions import MlflowException

    with _store_lock(uri):
        exp = retry(lambda: client.get_experiment_by_name(name))
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                retry(lambda: client.restore_experiment(exp.experiment_id))
            return exp.experiment_id
        try:
            return retry(lambda: client.create_experiment(
                name, artifact_location=_artifact_location(uri, name)))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def _is_locked_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def retry(fn: Callable[[], T], attempts: int = 8, base_delay: float = 0.05) -> T:
    """Call ``fn``, retrying when sqlite reports ``database is locked`` (concurrent writers)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException wraps sqlalchemy's OperationalError
            if i == attempts - 1 or not _is_locked_error(exc):
                raise
            time.sleep(base_delay * (2 ** i))
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_artifacts(run_id: str, artifact_path: str, dst: str | os.PathLike,
                    tracking_uri: str | None = None) -> Path:
    """Download ``artifact_path`` of ``run_id`` into ``dst``; return the local path."""
    quiet_mlflow()
    from mlflow.artifacts import download_artifacts

    uri = ensure_store(tracking_uri)
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                   dst_path=os.fspath(dst), tracking_uri=uri))


def describe_uri(uri: str) -> dict[str, Any]:
    """A PHI-free description of where runs go (no local paths)."""
    db = sqlite_path(uri)
    if db is not None:
        return {"kind": "sqlite", "file": db.name}
    return {"kind": uri.split(":", 1)[0]}


def store_line(uri: str) -> str:
    """The line every command prints about where its runs went."""
    return f"MLflow store: {uri}  (view: mlflow ui --backend-store-uri {uri})"


class StoreNotFoundError(MedgenError):
    """Reading from a store that does not exist (nothing is created). Exit code 2."""


class RunNotFoundError(MedgenError):
    """A run id that is malformed or not in the store read. Exit code 2."""


def _sqlite_ro(db: Path):
    import sqlite3

    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)


def _is_mlflow_db(db: Path) -> bool:
    import sqlite3

    try:
        with contextlib.closing(_sqlite_ro(db)) as con:
            names = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    except sqlite3.Error:
        return False
    return {"runs", "experiments", "alembic_version"} <= names


def open_store(uri: str | None = None) -> str:
    """Resolve ``uri`` (the one rule) and check that an MLflow store is there, for reading.

    Never creates anything: no database, no folder, no lock file. Raises
    :class:`StoreNotFoundError` (one line) for a missing file or a file that is not an MLflow
    store, :class:`TrackingServerError` for a server that does not answer.
    """
    uri = resolve_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            raise StoreNotFoundError(uri, "no MLflow store there (nothing was created)")
        if not _is_mlflow_db(db):
            raise StoreNotFoundError(uri, "not an MLflow store (no MLflow tables)")
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    return uri


def sqlite_has_run(db: Path, run_id: str) -> bool:
    """Whether the sqlite store ``db`` holds ``run_id`` (read-only: MLflow's ``runs`` table, whose
    layout has not changed since MLflow 1.0; opening it through MLflow could migrate it)."""
    import sqlite3

    if not db.is_file() or not _is_mlflow_db(db):
        return False
    try:
        with contextlib.closing(_sqlite_ro(db)) as con:
            return con.execute("select 1 from runs where run_uuid = ?", (run_id,)).fetchone() is not None
    except sqlite3.Error:
        return False


def stores_nearby() -> list[str]:
    """sqlite stores a person may mean: the default one, ``*.db`` in the current folder and
    ``*/mlflow.db`` one level down (sorted, existing MLflow stores only)."""
    cwd = Path.cwd()
    cands = {sqlite_path(resolve_tracking_uri(None))} if os.environ.get("MLFLOW_TRACKING_URI",
                                                                        "").startswith("sqlite:") else set()
    cands |= set(cwd.glob("*.db")) | set(cwd.glob(f"*/{DEFAULT_DB_NAME}"))
    return sorted("sqlite:///" + str(p.resolve()) for p in cands if p and _is_mlflow_db(p))


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a well-formed MLflow run id, else :class:`RunNotFoundError`."""
    if not _RUN_ID.fullmatch(run_id or ""):
        shown = (run_id or "")[:40].encode("ascii", "replace").decode()
        raise RunNotFoundError(None, f"'{shown}' is not a run id (MLflow run ids are 32 hex digits)")
    return run_id


def _where_else(run_id: str, uri: str) -> str:
    other = [u for u in stores_nearby() if u != uri and sqlite_has_run(sqlite_path(u), run_id)]
    return (f"; run {run_id} is in {other[0]} (pass --tracking-uri {other[0]})" if other
            else "; no store in the current folder has it either")


def run_not_found(run_id: str, uri: str) -> RunNotFoundError:
    """The one-line error for a run missing from ``uri``, naming the store that has it, if any
    store in the current folder (or the default one) does."""
    return RunNotFoundError(None, f"run {run_id} is not in the MLflow store {uri}"
                            + _where_else(run_id, uri).replace(f"; run {run_id} is", "; it is"))


def open_store_for_run(uri: str | None, run_id: str) -> str:
    """:func:`open_store` for reading ``run_id``: a missing store is one line that also names a
    store nearby holding the run."""
    try:
        return open_store(uri)
    except StoreNotFoundError as exc:
        raise StoreNotFoundError(exc.where, exc.reason + _where_else(run_id, "")) from None
