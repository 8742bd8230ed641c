"""Where a model given on the command line comes from: a checkpoint folder or an MLflow URI.

:func:`resolve_model` turns ``--model`` into a local checkpoint folder. MLflow URIs
(``runs:/<run_id>/<artifact path>``, ``models:/<name>/<version or alias>``) are downloaded once,
atomically, into a cache folder named by the digest of (store URI, model URI); loading checks the
checkpoint's own digests and never unpickles anything (weights are safetensors).

:func:`check_model_text` validates the text without touching MLflow or the disk beyond a stat,
so a settings object can refuse a bad ``--model`` before any heavy set-up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from medgen.errors import ConfigError, MedgenError

__all__ = ["cache_root", "check_model_text", "is_model_uri", "model_from_reference",
           "model_reference", "resolve_model"]


def cache_root() -> Path:
    """``$MEDGEN_CACHE_DIR`` or ``~/.cache/medgen``."""
    root = os.environ.get("MEDGEN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "medgen"


def is_model_uri(model: str) -> bool:
    return "://" in model or model.startswith(("runs:/", "models:/"))


def check_model_text(model: str, *, where: str = "--model") -> str:
    """A checkpoint folder with ``config.json``, or a well-formed ``runs:/`` / ``models:/`` URI."""
    text = str(model).strip()
    if not text:
        raise ConfigError(where, "empty")
    if text.startswith("runs:/"):
        run_id, _, path = text[len("runs:/"):].partition("/")
        if not run_id or not path.strip("/"):
            raise ConfigError(where, "runs:/ URIs look like runs:/<run_id>/checkpoints/best")
        return text
    if text.startswith("models:/"):
        name, _, version = text[len("models:/"):].partition("/")
        if not name or not version:
            raise ConfigError(where, "models:/ URIs look like models:/<name>/<version or alias>")
        return text
    if "://" in text:
        return text  # another MLflow artifact URI; MLflow says whether it exists
    p = Path(text)
    if not p.is_dir():
        raise ConfigError(where, f"'{p.name}' is not a checkpoint folder (not found)")
    if not (p / "config.json").is_file():
        raise ConfigError(where, f"'{p.name}' is not a checkpoint folder (no config.json)")
    return text


def resolve_model(model: str, *, tracking_uri: str | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """A local checkpoint folder for ``model``.

    ``model`` is a checkpoint folder, ``runs:/<run_id>/<artifact path>`` (e.g.
    ``runs:/abc123/checkpoints/best``) or ``models:/<name>/<version or alias>``. MLflow URIs are
    downloaded once into ``cache_dir`` (default ``$MEDGEN_CACHE_DIR/models`` or
    ``~/.cache/medgen/models``) under a folder named by the URI's digest.
    """
    check_model_text(model)
    if not is_model_uri(model):
        return Path(model)
    from medgen.track.store import ensure_store, telemetry_off

    telemetry_off()
    uri = ensure_store(tracking_uri)
    key = hashlib.sha256(f"{uri}\0{model}".encode()).hexdigest()[:24]
    final = (Path(cache_dir) if cache_dir else cache_root() / "models") / key
    if (final / "config.json").is_file():
        return final
    try:
        _download(model, uri, final)
    except MedgenError:
        raise
    except Exception as exc:  # mlflow raises its own exception types for unknown runs/models
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError("--model", f"could not fetch from MLflow: {msg}") from None
    return final


def _download(model: str, uri: str, final: Path) -> None:
    from mlflow.artifacts import download_artifacts

    from medgen.utils.atomic import atomic_dir

    with atomic_dir(final) as tmp:
        stage = tmp / ".download"  # MLflow nests the artifact path under dst_path
        if model.startswith("runs:/"):
            run_id, _, path = model[len("runs:/"):].partition("/")
            got = Path(download_artifacts(run_id=run_id, artifact_path=path.strip("/"),
                                          dst_path=str(stage), tracking_uri=uri))
        else:
            got = Path(download_artifacts(artifact_uri=model, dst_path=str(stage),
                                          tracking_uri=uri))
        if not got.is_dir():
            raise ConfigError("--model", "the MLflow artifact is a file, not a checkpoint folder")
        for f in list(got.iterdir()):
            os.replace(f, tmp / f.name)
        shutil.rmtree(stage, ignore_errors=True)
        if not (tmp / "config.json").is_file():
            raise ConfigError("--model", "the MLflow artifact is not a medgen checkpoint "
                              "(no config.json)")


def model_reference(model: str) -> dict[str, str]:
    """A non-identifying description of ``--model`` for MLflow: the checkpoint folder's name, or
    the MLflow URI - a ``runs:/`` URI split into run id and artifact path (PHI guards read
    ``/<path>`` after a hex id as an absolute path)."""
    if model.startswith("runs:/"):
        run_id, _, path = model[len("runs:/"):].partition("/")
        return {"model_run_id": run_id, "model_artifact_path": path}
    if model.startswith("models:/"):
        return {"model_uri": model}
    return {"model_dir": Path(model).name}


def model_from_reference(ref: dict) -> str | None:
    """The ``--model`` text back from :func:`model_reference` (or a ``model_hint``)."""
    if ref.get("model_run_id"):
        return f"runs:/{ref['model_run_id']}/{ref.get('model_artifact_path') or ''}"
    return ref.get("model_uri") or ref.get("model_hint")
