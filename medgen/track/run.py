"""A fresh, named MLflow run with lineage, behind the PHI guard.

Everything goes through an explicit ``MlflowClient`` bound to one tracking URI: medgen never uses
MLflow's fluent API and its process-global "active run", so a stale ``MLFLOW_RUN_ID`` or a run left
RUNNING by a killed job can never be attached to.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.track.phi import PHIError, PHIGuard
from medgen.track.store import client_for, ensure_store, get_or_create_experiment, retry
from medgen.utils.hashing import sha256_bytes, sha256_file

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

#: packages whose versions every run records (those installed)
LINEAGE_PACKAGES = ("medgen", "torch", "monai", "pydicom", "mlflow", "numpy", "scipy", "SimpleITK",
                    "nibabel", "safetensors", "pydantic", "dask", "distributed", "scikit-image")

# tag names (the public contract with audits and batch jobs)
TAG_CONFIG_SHA256 = "medgen.config_sha256"
TAG_CONFIG_ARTIFACT_SHA256 = "medgen.config.artifact_sha256"
TAG_MANIFEST = "medgen.manifest.{role}.sha256"
TAG_GIT_COMMIT = "medgen.git.commit"
TAG_GIT_DIRTY = "medgen.git.dirty"
TAG_GIT_DIFF_SHA256 = "medgen.git.diff_sha256"
TAG_ENV_LOCK_SHA256 = "medgen.env.lock_sha256"
TAG_REDACTIONS = "medgen.phi.redactions"
TAG_REDACTED_ARTIFACTS = "medgen.phi.redacted_artifacts"
TAG_ERROR = "medgen.error"
#: set by ``medgen run`` for its steps: their runs become nested runs of the pipeline's run
ENV_PARENT_RUN_ID = "MEDGEN_PARENT_RUN_ID"

_VERSION_TAG = "medgen.version."
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _is_text(path: Path, limit: int = 256 << 20) -> bool:
    """True for files that look like UTF-8 text (scanned before upload); binary is not scanned."""
    if path.stat().st_size > limit:
        return False
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte char cut at 8192 is still text
        return exc.start >= len(head) - 4
    return True


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists/tuples become compact JSON strings."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = "{}"
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        out[prefix] = json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)
    else:
        out[prefix] = obj
    return out


def _check_on_phi(on_phi: str) -> None:
    if on_phi not in ("redact", "raise"):
        raise ValueError(f"on_phi must be 'redact' or 'raise', got {on_phi!r}")


def _cut(value: str, limit: int, mark: str = TRUNCATED_MARK) -> str:
    return value if len(value) <= limit else value[: limit - len(mark)] + mark


def _to_plain(cfg: Any) -> Any:
    if hasattr(cfg, "model_dump"):
        return cfg.model_dump(mode="json")
    if isinstance(cfg, Mapping):
        return json.loads(json.dumps(cfg, default=str))
    raise TypeError("log_config expects a pydantic model or a mapping")


class Run:
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
        return _cut(self._g(v, "tag", dates=not str(k).startswith(_VERSION_TAG)),
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

    # -- artifacts ------------------------------------------------------------------------------
    def _upload(self, local: Path, artifact_dir: str | None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(local), artifact_dir or None))

    def _artifact_dir(self, artifact_path: str | None) -> str | None:
        if not artifact_path:
            return None
        ap = self._g(artifact_path.strip("/"), "artifact path")
        if ap.startswith("PATH-") or ".." in Path(ap).parts:
            raise ValueError("artifact_path must be a relative folder inside the run")
        return ap

    def _write_and_upload(self, data: bytes, artifact_file: str) -> str:
        artifact_file = self._g(artifact_file.strip("/"), "artifact name")
        if artifact_file.startswith("PATH-") or ".." in Path(artifact_file).parts:
            raise ValueError("artifact_file must be a relative path inside the run")
        d = Path(tempfile.mkdtemp(dir=self._tmp))
        local = d / Path(artifact_file).name
        local.write_bytes(data)
        parent = str(Path(artifact_file).parent)
        self._upload(local, None if parent == "." else parent)
        shutil.rmtree(d, ignore_errors=True)
        return artifact_file

    def log_text(self, text: str, artifact_file: str, *, on_phi: str = "redact",
                 _dates: bool = True) -> str:
        """Log ``text`` as ``artifact_file``; returns the sha256 of the bytes logged.

        ``on_phi="redact"`` replaces identifying spans; ``"raise"`` refuses with a PHIError.
        """
        _check_on_phi(on_phi)
        if on_phi == "raise":
            self.guard.check(text, where=self._g(artifact_file, "artifact name"))
            safe = text
        else:
            safe = self._g(text, "text artifact", dates=_dates)
        data = safe.encode("utf-8")
        name = self._write_and_upload(data, artifact_file)
        self._note_redactions(name if safe != text else None)
        return sha256_bytes(data)

    def log_json(self, obj: Any, artifact_file: str, *, on_phi: str = "redact",
                 sha256_tag: str | None = None, canonical: bool = False) -> str:
        """Log ``obj`` as JSON (sorted keys; ``canonical=True``: medgen's canonical bytes).

        Strings and keys are guarded (numbers only against registered identifiers). Returns the
        sha256 of the bytes logged and, when ``sha256_tag`` is given, stores it in that tag (how an
        ``audit.json`` is sealed: log with ``on_phi="raise"`` so the sealed bytes are exactly the
        ones built).
        """
        from medgen.utils.hashing import canonical_json

        _check_on_phi(on_phi)
        if on_phi == "raise":
            strict = self.guard.strict_copy()
            safe = strict.guard_obj(obj, where=self._g(artifact_file, "artifact name"))
        else:
            safe = self.guard.guard_obj(obj, where="json artifact")
        if canonical:
            data = canonical_json(safe)
        else:
            data = (json.dumps(safe, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
                    + "\n").encode("utf-8")
        name = self._write_and_upload(data, artifact_file)
        plain = json.loads(json.dumps(obj, default=str))
        self._note_redactions(name if safe != plain else None)
        digest = sha256_bytes(data)
        if sha256_tag:
            self.set_tags({sha256_tag: digest})
        return digest

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> str:
        """Log a file (as ``artifact_path/<name>``) or a folder's contents (under
        ``artifact_path``). Returns the artifact path in the run.

        File and folder names are guarded (a file is uploaded under its redacted name). Text files
        are scanned and **refused** (PHIError) when they hold identifiers: a caller's file is never
        rewritten, because the caller may have hashed it.
        """
        src = Path(path)
        if not src.exists():
            raise FileNotFoundError(f"artifact not found: {self._g(src.name, 'artifact name')}")
        adir = self._artifact_dir(artifact_path)
        if src.is_file():
            name = self._g(src.name, "artifact name")
            where = f"{adir}/{name}" if adir else name
            self._check_file(src, where)
            if name != src.name:
                d = Path(tempfile.mkdtemp(dir=self._tmp))
                shutil.copy2(src, d / name)
                self._upload(d / name, adir)
                shutil.rmtree(d, ignore_errors=True)
                self._note_redactions()
            else:
                self._upload(src, adir)
            return where
        files = sorted(p for p in src.rglob("*") if p.is_file())
        renamed = False
        plan: list[tuple[Path, str]] = []
        for f in files:
            rel = f.relative_to(src).as_posix()
            grel = "/".join(self._g(c, "artifact name") for c in rel.split("/"))
            renamed |= grel != rel
            self._check_file(f, f"{adir}/{grel}" if adir else grel)
            plan.append((f, grel))
        if renamed:
            d = Path(tempfile.mkdtemp(dir=self._tmp))
            for f, grel in plan:
                (d / grel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, d / grel)
            retry(lambda: self.client.log_artifacts(self.run_id, str(d), adir))
            shutil.rmtree(d, ignore_errors=True)
            self._note_redactions()
        else:
            retry(lambda: self.client.log_artifacts(self.run_id, str(src), adir))
        return adir or ""

    def _check_file(self, f: Path, where: str) -> None:
        if _is_text(f):
            text = f.read_text("utf-8", errors="replace")
            kinds = self.guard.findings(text)
            if kinds:
                raise PHIError(where, f"refused: text content looks like it contains "
                                      f"{', '.join(kinds)}; medgen never rewrites a caller's "
                                      f"file, log a de-identified copy instead")

    # -- config, manifests, lineage -------------------------------------------------------------
    def log_config(self, cfg: Any, artifact_file: str = "config/resolved.yaml") -> str:
        """Log a resolved config (pydantic model or mapping).

        * params: the flattened config (``a.b.c``), guarded, each cut to MLflow's length limit;
        * artifact ``config/resolved.yaml``: the full YAML (guarded; sorted keys);
        * tag ``medgen.config_sha256``: sha256 of the resolved YAML *before* redaction (what
          ``yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True)`` gives, i.e.
          :func:`medgen.config.load.dump_config`), so the same config always has the same digest;
          tag ``medgen.config.artifact_sha256``: sha256 of the artifact as logged (equal to the
          former unless something was redacted, which ``medgen.phi.redacted_artifacts`` lists).

        Returns the config sha256.
        """
        import yaml

        data = _to_plain(cfg)
        full = yaml.safe_dump(data, sort_keys=True)
        digest = sha256_bytes(full.encode("utf-8"))
        safe = self.guard.guard_obj(data, where="config")
        logged_yaml = yaml.safe_dump(safe, sort_keys=True)
        data_bytes = logged_yaml.encode("utf-8")
        name = self._write_and_upload(data_bytes, artifact_file)
        # params: the caller's flattened values, guarded one by one (kept for re-checks)
        params = {k: ("" if v is None else v) for k, v in flatten(data).items() if k}
        self.log_params(params)
        self.set_tags({TAG_CONFIG_SHA256: digest,
                       TAG_CONFIG_ARTIFACT_SHA256: sha256_bytes(data_bytes)})
        self._note_redactions(name if logged_yaml != full else None)
        return digest

    def log_manifest(self, path_or_digest: str | os.PathLike, role: str = "train", *,
                     log_file: bool = False) -> str:
        """Record a data manifest's full sha256 in tag ``medgen.manifest.<role>.sha256``.

        ``path_or_digest``: a 64-hex digest (used as is) or a manifest file (its sha256 is taken).
        ``log_file=True`` also uploads the file under ``manifests/<role>/`` (PHI-checked: refused if
        it holds identifiers). Returns the digest.
        """
        if not _ROLE.fullmatch(role):
            raise ValueError(f"manifest role must be a plain word, got {role!r}")
        s = os.fspath(path_or_digest)
        if _HEX64.fullmatch(s) and not Path(s).exists():
            digest = s.lower()
        else:
            p = Path(s)
            if not p.is_file():
                raise FileNotFoundError(f"manifest not found: {self._g(p.name, 'manifest')}")
            digest = sha256_file(p)
            if log_file:
                self.log_artifact(p, f"manifests/{role}")
        self.set_tags({TAG_MANIFEST.format(role=role): digest})
        return digest

    def log_lineage(self, seeds: int | Mapping[str, int] | None = None, *,
                    repo: str | os.PathLike | None = None,
                    packages: Iterable[str] = LINEAGE_PACKAGES) -> dict[str, str]:
        """Record where the code and environment came from; returns the tags set.

        Tags: ``medgen.git.commit`` / ``.dirty`` / ``.diff_sha256`` / ``.untracked`` (a count),
        ``medgen.version.<package>``, ``medgen.python``, ``medgen.platform``, ``medgen.torch``,
        ``medgen.torch.cuda``, ``medgen.torch.cudnn``, ``medgen.gpu``, ``medgen.gpu.count``,
        ``medgen.cuda.driver``, ``medgen.seed.<name>``, ``medgen.env.lock_sha256``.
        Artifacts: ``lineage/git.diff`` (``git diff HEAD``, guarded; the tag hashes the raw diff)
        and ``lineage/environment.txt`` (``name==version`` of every installed distribution).
        The host name, user name and absolute paths are not recorded.
        """
        tags: dict[str, Any] = {}
        tags.update(self._git_lineage(repo))
        for pkg in packages:
            try:
                tags[f"medgen.version.{pkg}"] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                continue
        tags["medgen.python"] = platform.python_version()
        tags["medgen.platform"] = f"{platform.system()}-{platform.machine()}"
        tags.update(_torch_lineage())
        if seeds is not None:
            if isinstance(seeds, int):
                seeds = {"seed": seeds}
            for k, v in seeds.items():
                tags[f"medgen.seed.{k}" if k != "seed" else "medgen.seed"] = v
        lock = "\n".join(sorted({f"{d.metadata['Name']}=={d.version}"
                                 for d in importlib.metadata.distributions()
                                 if d.metadata.get("Name")}, key=str.lower)) + "\n"
        # package versions only: calendar versions (certifi 2026.10.18) are not patient dates
        self.log_text(lock, "lineage/environment.txt", _dates=False)
        tags["medgen.env.lock_sha256"] = sha256_bytes(lock.encode("utf-8"))
        return self.set_tags(tags)

    def _git_lineage(self, repo: str | os.PathLike | None) -> dict[str, Any]:
        root = Path(repo) if repo else Path(__file__).resolve().parents[2]
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

        def git(*args: str) -> bytes:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True,
                                  timeout=60, env=env).stdout

        try:
            commit = git("rev-parse", "HEAD").decode().strip()
        except (OSError, subprocess.SubprocessError):
            return {TAG_GIT_COMMIT: "unknown", TAG_GIT_DIRTY: "unknown"}
        status = git("status", "--porcelain", "--untracked-files=normal").decode("utf-8", "replace")
        lines = [ln for ln in status.splitlines() if ln.strip()]
        untracked = sum(1 for ln in lines if ln.startswith("??"))
        diff = git("diff", "HEAD", "--no-color", "--no-ext-diff", "--binary")
        tags: dict[str, Any] = {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: str(bool(lines)).lower(),
                                TAG_GIT_DIFF_SHA256: sha256_bytes(diff),
                                "medgen.git.untracked": untracked}
        if diff:
            self.log_text(diff.decode("utf-8", "replace"), "lineage/git.diff")
        return tags

    # -- figures --------------------------------------------------------------------------------
    def log_figure_grid(self, images: Mapping[str, Any], name: str = "grid",
                        step: int | None = None, *,
                        diff: tuple[str, str] | str | None = "auto") -> str:
        """Log a PNG with one row per image and three orthogonal central planes per row.

        ``images``: label -> 3D array (I, J, K) or torch tensor (leading axes of size 1, i.e.
        MONAI's channel/batch axes, are dropped; 2D arrays get one panel). ``diff=("denoised", "clean")`` adds a ``difference`` row (a - b); the
        default ``"auto"`` does so when both labels exist and ``difference`` is not given.
        Returns the artifact path (``figures/<name>/step_<step>.png``).
        """
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        arrays: dict[str, np.ndarray] = {}
        for label, arr in images.items():
            if hasattr(arr, "detach"):
                arr = arr.detach().float().cpu().numpy()
            a = np.asarray(arr, dtype=np.float32)
            while a.ndim > 2 and a.shape[0] == 1:  # channel / batch axes of 1 (MONAI layout)
                a = a[0]
            if a.ndim not in (2, 3):
                raise ValueError(f"figure grid: '{label}' must be 2D or 3D, got shape {a.shape}")
            arrays[self._g(label, "figure label")] = a
        if diff == "auto":
            diff = ("denoised", "clean") if {"denoised", "clean"} <= arrays.keys() else None
        if diff and "difference" not in arrays:
            a, b = diff
            arrays["difference"] = arrays[a] - arrays[b]
        if not arrays:
            raise ValueError("figure grid: no images")

        plain = [a for k, a in arrays.items() if k != "difference"]
        ref = np.concatenate([a.ravel() for a in plain]) if plain else np.zeros(1)
        vmin, vmax = (float(x) for x in np.percentile(ref, [0.5, 99.5]))
        if vmax <= vmin:
            vmax = vmin + 1.0
        ncol = max(3 if a.ndim == 3 else 1 for a in arrays.values())
        fig = Figure(figsize=(2.4 * ncol, 2.4 * len(arrays)), dpi=100)
        FigureCanvasAgg(fig)
        planes = ("sagittal (I)", "coronal (J)", "axial (K)")
        for r, (label, a) in enumerate(arrays.items()):
            if a.ndim == 3:
                cuts = [a[a.shape[0] // 2, :, :], a[:, a.shape[1] // 2, :], a[:, :, a.shape[2] // 2]]
            else:
                cuts = [a]
            is_diff = label == "difference"
            lim = float(np.percentile(np.abs(a), 99.5)) or 1.0
            for c, sl in enumerate(cuts):
                ax = fig.add_subplot(len(arrays), ncol, r * ncol + c + 1)
                kw = (dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if is_diff
                      else dict(cmap="gray", vmin=vmin, vmax=vmax))
                ax.imshow(sl.T, origin="lower", interpolation="nearest", **kw)
                ax.set_xticks([])
                ax.set_yticks([])
                title = label if len(cuts) == 1 else f"{label} · {planes[c]}"
                ax.set_title(title, fontsize=7)
        fig.tight_layout()
        d = Path(tempfile.mkdtemp(dir=self._tmp))
        fname = f"step_{int(step):07d}.png" if step is not None else "grid.png"
        out = d / fname
        fig.savefig(out, format="png", metadata={"Software": None})
        adir = self._artifact_dir(f"figures/{name}")
        self._upload(out, adir)
        shutil.rmtree(d, ignore_errors=True)
        return f"{adir}/{fname}"

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

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run terminated (FINISHED, FAILED or KILLED). Idempotent."""
        if self._ended:
            return
        self._ended = True
        try:
            retry(lambda: self.client.set_terminated(self.run_id, status))
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _torch_lineage() -> dict[str, Any]:
    tags: dict[str, Any] = {}
    try:
        import torch
    except Exception:  # noqa: BLE001 - torch is optional for tracking itself
        return tags
    tags["medgen.torch"] = torch.__version__
    tags["medgen.torch.cuda"] = torch.version.cuda or "none"
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        cudnn = None
    tags["medgen.torch.cudnn"] = cudnn or "none"
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    tags["medgen.gpu.count"] = n
    tags["medgen.gpu"] = ",".join(sorted({torch.cuda.get_device_name(i) for i in range(n)})) or "none"
    if n and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            tags["medgen.cuda.driver"] = out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return tags


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
    init: dict[str, str] = {}
    for k, v in (tags or {}).items():
        init[g.guard(k, where="tag key")] = _cut(g.guard(v, where="tag"), MAX_TAG_VAL_LENGTH, "...")
    if parent_run_id:
        parent = retry(lambda: client.get_run(parent_run_id))  # fails loudly if it does not exist
        init["mlflow.parentRunId"] = parent.info.run_id
    if description:
        init["mlflow.note.content"] = _cut(g.guard(description, where="description"),
                                           MAX_TAG_VAL_LENGTH, "...")
    from medgen import __version__

    init.setdefault("medgen.version", __version__)
    init["mlflow.user"] = "medgen"  # the OS user name is not recorded
    init["mlflow.source.name"] = "medgen"  # never the absolute path of a script
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
