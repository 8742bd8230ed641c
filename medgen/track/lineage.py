"""Where a run's code, environment and data came from: the one place medgen works this out.

Everything a run records about its origin is built here and nowhere else:

* **code**: git commit, an honest dirty flag, the digest of ``git diff HEAD`` and a count of
  untracked files (:func:`git_state`);
* **environment**: package versions, Python, platform, torch/CUDA/GPU, the sha256 of the full
  ``name==version`` list (:func:`environment_state`);
* **seeds** (:func:`seed_tags`);
* **data roots**: the folders a run's inputs live under, by name, so a sealed record holds paths
  *relative to a named root* and an audit finds the data wherever it lives (:class:`DataRoots`,
  :func:`resolve_roots`).

:meth:`medgen.track.Run.log_lineage` logs the first three as tags; :mod:`medgen.audit` seals them
and compares them with the machine it runs on (:func:`differences_from_now`).

Data roots and privacy
----------------------
Absolute paths never reach the tracking store (they may name a person or a host). A run records
each root's name and, when the root lies inside the working folder and looks clean to the PHI
guard, its path relative to that folder (``relative``). The absolute location is kept *outside*
MLflow, in a local index beside the store (``<store folder>/.medgen/roots/<run_id>.json``; the
working folder for a server store). An audit resolves a root from, in order: ``--data-root
NAME=DIR``, the local index (when the folder still exists), the relative hint. The data found there
is still checked file by file against the sealed digests: a root only says where to look.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medgen.utils.hashing import sha256_bytes

log = logging.getLogger("medgen.track")

#: packages whose versions every run records (those installed)
LINEAGE_PACKAGES = ("medgen", "torch", "monai", "pydicom", "mlflow", "numpy", "scipy", "SimpleITK",
                    "nibabel", "safetensors", "pydantic", "dask", "distributed", "scikit-image")

TAG_GIT_COMMIT = "medgen.git.commit"
TAG_GIT_DIRTY = "medgen.git.dirty"
TAG_GIT_DIFF_SHA256 = "medgen.git.diff_sha256"
TAG_GIT_UNTRACKED = "medgen.git.untracked"
TAG_ENV_LOCK_SHA256 = "medgen.env.lock_sha256"
VERSION_TAG = "medgen.version."
SEED_TAG = "medgen.seed"

_ROOT_NAME = re.compile(r"[A-Za-z][\w-]*")
#: files (and folders) medgen itself writes next to a store: outputs, never part of the code's state
MEDGEN_OUTPUT_FILES = ("*.db.lock", "*.db.medgen-ready", "mlflow.db")
MEDGEN_OUTPUT_DIRS = ("mlartifacts", ".medgen")


# --- code ------------------------------------------------------------------------------------------

def code_root() -> Path:
    """The folder medgen's own code lives in (a git checkout when installed editable)."""
    return Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> bytes:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True,
                          timeout=60, env=env).stdout


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """HEAD of ``repo`` (default: medgen's code), or None outside a git checkout."""
    try:
        return _git(Path(repo) if repo else code_root(), "rev-parse", "HEAD").decode().strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(repo: str | os.PathLike | None = None,
              exclude: Iterable[str | os.PathLike] = ()) -> tuple[dict[str, Any], bytes]:
    """``(tags, diff)`` for the code in ``repo`` (default: medgen's own checkout).

    ``dirty`` is honest about code: a modified tracked file or an untracked file that git does
    not ignore makes it ``true`` (``untracked`` counts such files); files medgen writes itself
    (stores, their lock and ready files, artifacts and the root index:
    :data:`MEDGEN_OUTPUT_FILES`, :data:`MEDGEN_OUTPUT_DIRS`, and ``exclude``) never do. ``diff`` is
    the raw ``git diff HEAD --binary`` (its sha256 goes in a tag; the text is for an artifact).
    """
    root = Path(repo) if repo else code_root()
    commit = git_commit(root)
    if commit is None:
        return {TAG_GIT_COMMIT: "unknown", TAG_GIT_DIRTY: "unknown"}, b""
    specs = [f":(exclude,glob)**/{p}" for p in MEDGEN_OUTPUT_FILES]
    specs += [f":(exclude,glob)**/{d}/**" for d in MEDGEN_OUTPUT_DIRS]
    top = Path(_git(root, "rev-parse", "--show-toplevel").decode().strip())
    for p in exclude:
        try:
            rel = Path(p).resolve().relative_to(top.resolve())
        except ValueError:
            continue  # outside the checkout: cannot make it dirty
        specs.append(f":(exclude,literal){rel.as_posix()}")
    status = _git(top, "status", "--porcelain", "--untracked-files=all", "--", ".", *specs)
    lines = [ln for ln in status.decode("utf-8", "replace").splitlines() if ln.strip()]
    diff = _git(top, "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary")
    return ({TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: str(bool(lines)).lower(),
             TAG_GIT_DIFF_SHA256: sha256_bytes(diff),
             TAG_GIT_UNTRACKED: sum(1 for ln in lines if ln.startswith("??"))}, diff)


# --- environment -----------------------------------------------------------------------------------

def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_lock() -> str:
    """``name==version`` of every installed distribution, sorted: the environment lock."""
    return "\n".join(sorted({f"{d.metadata['Name']}=={d.version}"
                             for d in importlib.metadata.distributions()
                             if d.metadata.get("Name")}, key=str.lower)) + "\n"


def torch_state() -> dict[str, Any]:
    """torch, CUDA, cuDNN, GPU names and count, driver (tags; empty without torch)."""
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


def environment_state(packages: Iterable[str] = LINEAGE_PACKAGES) -> tuple[dict[str, Any], str]:
    """``(tags, lock_text)``: versions, Python, platform, torch/GPU and the lock's sha256."""
    tags: dict[str, Any] = {}
    for pkg in packages:
        v = package_version(pkg)
        if v is not None:
            tags[VERSION_TAG + pkg] = v
    tags["medgen.python"] = platform.python_version()
    tags["medgen.platform"] = f"{platform.system()}-{platform.machine()}"
    tags.update(torch_state())
    lock = environment_lock()
    tags[TAG_ENV_LOCK_SHA256] = sha256_bytes(lock.encode("utf-8"))
    return tags, lock


def seed_tags(seeds: int | Mapping[str, int] | None) -> dict[str, Any]:
    """``medgen.seed`` (an int) or ``medgen.seed.<name>`` per named seed."""
    if seeds is None:
        return {}
    if isinstance(seeds, int):
        seeds = {"seed": seeds}
    return {(SEED_TAG if k == "seed" else f"{SEED_TAG}.{k}"): v for k, v in seeds.items()}


def lineage_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """The code / environment / seeds a run's tags claim (what a seal records)."""
    return {
        "code": {"commit": tags.get(TAG_GIT_COMMIT), "dirty": tags.get(TAG_GIT_DIRTY),
                 "diff_sha256": tags.get(TAG_GIT_DIFF_SHA256)},
        "environment": {"lock_sha256": tags.get(TAG_ENV_LOCK_SHA256),
                        "python": tags.get("medgen.python"), "torch": tags.get("medgen.torch"),
                        "cuda": tags.get("medgen.torch.cuda"), "driver": tags.get("medgen.cuda.driver"),
                        "gpu": tags.get("medgen.gpu"),
                        "versions": {k.removeprefix(VERSION_TAG): v for k, v in tags.items()
                                     if k.startswith(VERSION_TAG)}},
        "seeds": {k: v for k, v in tags.items() if k == SEED_TAG or k.startswith(SEED_TAG + ".")},
    }


def differences_from_now(code: Mapping[str, Any], environment: Mapping[str, Any]) -> list[str]:
    """How the code and packages a run recorded differ from this machine's, one line each."""
    out = []
    head = git_commit()
    if code.get("commit") not in (None, "unknown") and head and head != code["commit"]:
        out.append(f"code: run used commit {code['commit'][:12]}, now {head[:12]}")
    for pkg, ver in sorted((environment.get("versions") or {}).items()):
        now = package_version(pkg) or "not installed"
        if now != ver:
            out.append(f"package {pkg}: run {ver}, now {now}")
    return out


# --- data roots ------------------------------------------------------------------------------------

class DataRoots:
    """Named folders a run's inputs live under; paths are recorded relative to them.

    >>> roots = DataRoots()                                                  # doctest: +SKIP
    >>> roots.ref("/data/ct/m.jsonl", "manifest")   # {"root": "manifest", "path": "m.jsonl"}
    """

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def add(self, name: str, folder: str | os.PathLike) -> str:
        if not _ROOT_NAME.fullmatch(name):
            raise ValueError(f"data root name must be a plain word, got {name!r}")
        p = Path(folder).resolve()
        if name in self.paths and self.paths[name] != p:
            raise ValueError(f"data root '{name}' declared twice with different folders")
        self.paths[name] = p
        return name

    def ref(self, path: str | os.PathLike, root: str, *, folder: bool = False,
            guard=None) -> dict[str, str | None]:
        """``{"root": NAME, "path": REL}`` for ``path``. A root declared already is used when
        ``path`` lies inside it; else the root becomes the path itself (``folder``) or its parent
        folder. ``REL`` is None when ``guard`` finds it identifying (the audit then needs the
        path given)."""
        p = Path(path).resolve()
        base = self.paths.get(root)
        if base is None or not (p == base or base in p.parents):
            self.add(root, p if folder else p.parent)
            base = self.paths[root]
        rel: str | None = Path(os.path.relpath(p, base)).as_posix()
        if guard is not None and rel != "." and guard.findings(rel):
            rel = None
        return {"root": root, "path": rel}

    def record(self, guard=None) -> dict[str, dict[str, str | None]]:
        """What a sealed record holds per root: its path relative to the working folder when it
        lies inside it and looks clean (else None). Never an absolute path."""
        cwd = Path.cwd().resolve()
        out = {}
        for name, p in sorted(self.paths.items()):
            try:
                rel: str | None = p.relative_to(cwd).as_posix()
            except ValueError:
                rel = None
            if rel is not None and guard is not None and guard.findings(rel):
                rel = None
            out[name] = {"relative": rel}
        return out

    def write_index(self, run_id: str, tracking_uri: str) -> Path | None:
        """Keep the absolute folders in the local index (outside MLflow); best effort."""
        from medgen.utils.atomic import atomic_write_text

        if not self.paths:
            return None
        path = roots_index(tracking_uri) / f"{run_id}.json"
        try:
            atomic_write_text(path, json.dumps({k: str(v) for k, v in self.paths.items()},
                                               indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            log.warning("data roots of run %s not indexed locally (%s); an audit will need "
                        "--data-root", run_id, type(exc).__name__)
            return None
        return path


def roots_index(tracking_uri: str) -> Path:
    """Folder of the local data-root index: beside a sqlite store, else the working folder."""
    from medgen.track.store import sqlite_path

    db = sqlite_path(tracking_uri)
    return (db.parent if db is not None else Path.cwd()) / ".medgen" / "roots"


def resolve_roots(recorded: Mapping[str, Mapping[str, Any]], run_id: str, tracking_uri: str,
                  overrides: Mapping[str, str | os.PathLike] | None = None
                  ) -> dict[str, tuple[Path | None, str]]:
    """``name -> (folder or None, where it came from)`` for every root a record names."""
    overrides = dict(overrides or {})
    index: dict[str, str] = {}
    f = roots_index(tracking_uri) / f"{run_id}.json"
    try:
        index = json.loads(f.read_text())
    except (OSError, ValueError):
        pass
    out: dict[str, tuple[Path | None, str]] = {}
    for name, info in recorded.items():
        if name in overrides:
            out[name] = (Path(overrides[name]), "--data-root")
        elif index.get(name) and Path(index[name]).is_dir():
            out[name] = (Path(index[name]), "the local root index")
        elif info.get("relative") and Path(info["relative"]).is_dir():
            out[name] = (Path(info["relative"]), "the recorded relative path")
        else:
            out[name] = (None, "not found")
    return out


def resolve_ref(ref: Mapping[str, Any] | None, roots: Mapping[str, tuple[Path | None, str]]
                ) -> Path | None:
    """The local path of a ``{"root", "path"}`` reference, or None when its root or path is
    unknown. A reference never leaves its root (``..`` is refused)."""
    if not ref or ref.get("path") is None:
        return None
    folder = roots.get(ref.get("root", ""), (None, ""))[0]
    if folder is None:
        return None
    rel = Path(ref["path"])
    if rel.is_absolute() or ".." in rel.parts:
        return None
    return folder / rel
