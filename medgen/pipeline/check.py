"""Every value a pipeline step names is resolved and validated before the first step runs.

:func:`check_step` looks at one step with its references resolved (outputs of steps already done,
else placeholders ``<step.key>``): train configs are loaded with the step's ``--set`` items and
their inputs checked (:func:`medgen.train.preflight.preflight`), model folders are read
(``config.json``) and matched to the step's task, presets and input folders must exist. Values an
earlier step will produce are skipped until they exist. ``medgen run`` runs this for every step
first (``--dry-run`` stops there), so a typo fails in seconds with exit 2, not after an hour of
earlier steps. It also returns a rough time estimate per step (:mod:`medgen.pipeline.estimate`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.errors import ConfigError
from medgen.registry import suggest

_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_-]*\.[A-Za-z0-9_]+>")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*:/")
#: what each inference step needs its model to have been trained for
_STEP_TASK = {"denoise": "denoise", "upscale": "sr", "translate": "translate", "synthesize": "synth"}


@dataclass
class StepCheck:
    """The outcome of checking one step: its estimate and any warnings (never errors: those raise)."""

    name: str
    kind: str
    estimate_s: float | None = None
    basis: str = ""
    warnings: list[str] = field(default_factory=list)


def pending(value: str | None) -> bool:
    """True for values that hold an unresolved reference to a later output."""
    return value is not None and bool(_PLACEHOLDER.search(str(value)))


def check_force(names: list[str], force) -> None:
    """``--force NAME`` must name a step (one line with "did you mean" otherwise)."""
    for f in force or ():
        if f not in names:
            raise ConfigError("--force", f"no step '{f}'{suggest(f, names)}; steps: {', '.join(names)}")


def _exists(key: str, value: str | None, what: str = "folder or file") -> None:
    if value is None or pending(value):
        return
    if not Path(value).exists():
        raise ConfigError(key, f"'{Path(value).name}' not found ({what})")


def _check_model(key: str, value: str, step_kind: str) -> None:
    """A model given as a local checkpoint folder: its config.json parses and suits the step."""
    if pending(value) or _URI.match(value):
        return  # produced by an earlier step, or an MLflow/registry URI resolved at run time
    p = Path(value)
    if not (p / "config.json").is_file():
        raise ConfigError(key, f"'{p.name}' is not a checkpoint folder (no config.json)")
    from medgen.models import model_spec, parse_model_config

    try:
        raw = json.loads((p / "config.json").read_text())
        cfg = parse_model_config(raw.get("model", raw) if isinstance(raw, dict) else raw)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(key, f"{p.name}/config.json: {getattr(exc, 'reason', exc)}") from None
    need = _STEP_TASK[step_kind]
    tasks = model_spec(cfg).tasks
    if need not in tasks:
        raise ConfigError(key, f"'{p.name}' is a {cfg.name} model ({', '.join(tasks)}), not "
                          f"one a {step_kind} step can use")


def _check_train(key: str, spec: dict[str, Any]):
    from medgen.config import load_config
    from medgen.pipeline.spec import resolve_config
    from medgen.train.config import TrainConfig
    from medgen.train.preflight import preflight

    path = resolve_config(spec["config"])
    try:
        cfg = load_config(TrainConfig, path, list(spec.get("set") or []))
    except ConfigError as exc:
        raise ConfigError(key, str(exc)) from None
    return cfg, preflight(cfg, skip=pending)


def check_step(index: int, step, spec: dict[str, Any]) -> StepCheck:
    """Check one step (``spec``: its fields with references resolved). Raises ConfigError."""
    from medgen.pipeline.estimate import estimate

    key = f"steps.{index}"
    out = StepCheck(step.name, step.kind)
    detail: Any = None
    if step.kind == "train":
        detail, out.warnings = _check_train(f"{key}.config", spec)
    elif step.kind == "degrade":
        if not pending(spec["manifest"]):
            from medgen.train.preflight import check_splits, load_manifest

            m = load_manifest(f"{key}.manifest", spec["manifest"])
            if spec.get("split"):
                check_splits(m, spec["split"], None, (f"{key}.manifest", f"{key}.split", ""))
    elif step.kind in ("denoise", "upscale", "translate", "synthesize"):
        _check_model(f"{key}.model", spec["model"], step.kind)
    for k in ("src", "reference", "outputs", "inputs"):
        if isinstance(spec.get(k), str):
            _exists(f"{key}.{k}", spec[k])
    out.estimate_s, out.basis = estimate(step.kind, spec, detail)
    return out


__all__ = ["StepCheck", "check_force", "check_step", "pending"]
