"""Checks of a training config's inputs before any work starts (no torch, no MONAI, no MLflow).

The config model already refuses bad values; this looks at what the values point to: the
manifest and its splits, and the files each task reads (``task.init_from``,
``task.target_manifest``, ...). ``medgen train`` runs it before importing the trainer, so a
missing manifest or an unsplit one fails in about a second instead of after the set-up; pipelines
run it for every train step in ``--dry-run`` and before their first step.

Choice (issue 21): a manifest fresh from ``medgen manifest build`` (no split) is *not* split
silently - the split is a recorded, seeded artifact of its own (``manifest split`` writes the seed
and ratios into the summary) - the error says the one command that makes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from medgen.errors import ConfigError
from medgen.registry import suggest

#: ``skip(path) -> True`` for paths an earlier pipeline step has not produced yet
Skip = Callable[[str], bool]


def _never(_: str) -> bool:
    return False


def load_manifest(key: str, path: str, root: str | None = None):
    """The manifest at ``path``; a ConfigError that names ``key`` when it cannot be read."""
    from medgen.manifest import Manifest

    try:
        return Manifest.load(path, root)
    except ConfigError as exc:
        raise ConfigError(key, str(exc)) from None


def split_counts(manifest) -> Counter:
    return Counter(r.split for r in manifest.records)


DATA_KEYS = ("data.manifest", "data.train_split", "data.val_split")


def check_splits(manifest, train: str | None, val: str | None,
                 keys: tuple[str, str, str] = DATA_KEYS) -> list[str]:
    """Raise unless split ``train`` has records; a warning line when split ``val`` has none.

    ``keys`` name the config keys of the manifest, the train split and the val split."""
    m_key, t_key, v_key = keys
    name = Path(manifest.path).name if manifest.path else "the manifest"
    counts = split_counts(manifest)
    named = {k: v for k, v in counts.items() if k}
    if train and not named:
        raise ConfigError(m_key, (
            f"{name} has no train/val split (fresh from `medgen manifest build`); split it by "
            f"subject first: medgen manifest split {name} -o {name.removesuffix('.jsonl')}"
            f".split.jsonl --ratios train=0.8,val=0.2 --seed 0 (or set {t_key}: null "
            "to train on every record)"))
    listing = ", ".join(f"{k} {v}" for k, v in sorted(named.items()))
    if train and not counts.get(train):
        raise ConfigError(t_key, f"no records in split '{train}' of {name}"
                          f"{suggest(train, named)}; splits: {listing}")
    if val and not counts.get(val):
        return [f"{v_key}: split '{val}' of {name} has 0 volumes (splits: {listing}); "
                "training runs without validation and keeps no best checkpoint - set "
                f"{v_key}: null to say so, or re-split with a val share"]
    return []


def _check_path(key: str, path: str, kind: str) -> None:
    p = Path(path)
    if kind == "file" and not p.is_file():
        raise ConfigError(key, f"'{p.name}' not found (a local file)")
    if kind == "checkpoint":
        if not p.is_dir():
            raise ConfigError(key, f"'{p.name}' not found (a checkpoint folder)")
        if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
            raise ConfigError(key, f"'{p.name}' is not a checkpoint folder (config.json and "
                              "model.safetensors)")


def preflight(cfg, skip: Skip | None = None) -> list[str]:
    """Check what ``cfg`` (a TrainConfig) points to. Returns warning lines; raises ConfigError.

    ``skip`` names paths not to look at yet (outputs of earlier pipeline steps).
    """
    skip = skip or _never
    warnings: list[str] = []
    d = cfg.data
    if not skip(d.manifest):
        if d.root is not None and not skip(d.root) and not Path(d.root).is_dir():
            raise ConfigError("data.root", f"'{Path(d.root).name}' is not a folder")
        m = load_manifest("data.manifest", d.manifest, d.root)
        warnings += check_splits(m, d.train_split, d.val_split)
    for key, path, kind in cfg.task.input_paths(cfg):
        if path is None or skip(path):
            continue
        if kind == "manifest":
            root = cfg.task.input_root(key)
            if root is not None and not skip(root) and not Path(root).is_dir():
                raise ConfigError(key.replace("manifest", "root"), f"'{Path(root).name}' is not a folder")
            m = load_manifest(key, path, root)
            train, val, keys = cfg.task.input_splits(cfg)
            warnings += check_splits(m, train, val, keys)
        else:
            _check_path(key, path, kind)
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("output_dir", f"'{out.name}' exists and is not a folder")
    return warnings


__all__ = ["check_splits", "load_manifest", "preflight", "split_counts"]
