"""Named degradation presets: YAML files in ``configs/transforms/`` -> a MONAI ``Compose``.

A preset file::

    description: MR magnitude noise, mild (images normalised to [0, 1])
    modality: MR
    degradations:
      - name: rician
        prob: 1.0
        params: {sigma: [0.01, 0.03]}

Resolution of ``load_preset(name_or_path)``: an existing file path (or anything ending in
``.yaml``/``.yml``) is read as is; otherwise ``NAME.yaml`` is looked up in
``$MEDGEN_CONFIGS/transforms/`` when that variable is set, else in the repository's
``configs/transforms/`` (``Path(medgen.__file__).parents[1] / "configs"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from medgen.config import StrictModel, load_config
from medgen.errors import ConfigError
from medgen.registry import suggest

__all__ = ["DegradationItem", "OneOfItem", "PresetConfig", "load_preset", "preset_names",
           "presets_dir",
           "build_pipeline", "preset_path"]


class DegradationItem(StrictModel):
    name: str
    prob: float = Field(1.0, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from medgen.transforms.degradations import DEGRADATIONS

        if v not in DEGRADATIONS.names():
            raise ValueError(f"unknown degradation '{v}'{suggest(v, DEGRADATIONS.names())}; "
                             f"known: {', '.join(DEGRADATIONS.names())}")
        return v

    @model_validator(mode="after")
    def _params_known(self):
        from medgen.transforms.degradations import DEGRADATIONS

        spec = DEGRADATIONS.get(self.name)
        for k in self.params:
            if k not in spec.defaults:
                raise ValueError(f"degradation '{self.name}' has no parameter '{k}'"
                                 f"{suggest(k, spec.defaults)}")
        return self


class OneOfItem(StrictModel):
    """Exactly one of several degradations per sample (MONAI ``OneOf``), e.g. Gaussian *or* Rician
    noise so a blind denoiser sees both without samples that carry both or neither::

        - one_of:
            - {name: gaussian, params: {sigma: [0.0, 0.12]}}
            - {name: rician, params: {sigma: [0.02, 0.12]}}
          weights: [1, 1]
    """

    one_of: list[DegradationItem] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self):
        if self.weights is not None:
            if len(self.weights) != len(self.one_of):
                raise ValueError(f"weights has {len(self.weights)} entries, one_of has {len(self.one_of)}")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        return self


class PresetConfig(StrictModel):
    description: str = ""
    modality: str = "any"
    degradations: list[DegradationItem | OneOfItem] = Field(default_factory=list)

    def names(self) -> set[str]:
        """Every degradation this preset may apply (members of ``one_of`` groups included)."""
        out: set[str] = set()
        for d in self.degradations:
            out |= {i.name for i in d.one_of} if isinstance(d, OneOfItem) else {d.name}
        return out


def presets_dir() -> Path:
    """``$MEDGEN_CONFIGS/transforms`` if set, else the repository's ``configs/transforms``."""
    env = os.environ.get("MEDGEN_CONFIGS")
    if env:
        return Path(env) / "transforms"
    import medgen

    return Path(medgen.__file__).resolve().parents[1] / "configs" / "transforms"


def preset_names() -> list[str]:
    d = presets_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file a preset name or path refers to (one-line 'did you mean' error if none)."""
    s = str(name_or_path)
    p = Path(s)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(p.name, "preset file not found")
        return p
    cand = presets_dir() / f"{s}.yaml"
    if cand.is_file():
        return cand
    names = preset_names()
    raise ConfigError(None, f"unknown degradation preset '{s}'{suggest(s, names)}; "
                      f"known: {', '.join(names) or '(none found in ' + str(presets_dir()) + ')'}")


def build_pipeline(cfg: PresetConfig, keys=("noisy",), source_key: str | None = "image",
                   record_key: str = "degradations", seed: int | None = None):
    """A MONAI ``Compose``: copy ``source_key`` to each of ``keys`` (if different), then the
    degradations in order, each a :class:`~medgen.transforms.RandDegradationd`."""
    from monai.transforms import Compose, CopyItemsd, OneOf

    from medgen.transforms.degradations import RandDegradationd

    keys = [keys] if isinstance(keys, str) else list(keys)
    ts: list = []
    if source_key is not None:
        targets = [k for k in keys if k != source_key]
        if targets:
            ts.append(CopyItemsd(keys=[source_key], times=len(targets), names=targets))
    def one(item: DegradationItem):
        return RandDegradationd(keys, item.name, prob=item.prob, params=item.params,
                                record_key=record_key)

    for item in cfg.degradations:
        if isinstance(item, OneOfItem):  # the chosen one records itself; replay needs no choice
            ts.append(OneOf([one(i) for i in item.one_of], weights=item.weights))
        else:
            ts.append(one(item))
    comp = Compose(ts)
    if seed is not None:
        comp.set_random_state(seed=int(seed))
    return comp


def load_preset(name_or_path: str | os.PathLike, keys=("noisy",), source_key: str | None = "image",
                record_key: str = "degradations", seed: int | None = None,
                overrides: list[str] | None = None):
    """Load a named preset (or a YAML path) into a composed MONAI transform.

    Parameters
    ----------
    name_or_path : str or path
        Preset name (e.g. ``"mri-rician-mild"``) or a YAML file.
    keys : str or sequence of str
        Keys to degrade. Each is first copied from ``source_key`` unless it *is* ``source_key``.
    source_key : str or None
        Clean image key; None degrades ``keys`` in place.
    record_key : str
        Where the list of applied degradation records goes.
    seed : int, optional
        Seeds the pipeline (``Compose.set_random_state``) for reproducible sampling.
    overrides : list of str, optional
        ``--set``-style ``key=value`` overrides of the preset's top-level mapping keys (list items
        cannot be addressed; write a YAML file for other variants).

    Returns
    -------
    monai.transforms.Compose
        With attribute ``preset`` (the validated :class:`PresetConfig`) and ``preset_name``.
    """
    path = preset_path(name_or_path)
    cfg = load_config(PresetConfig, path, overrides)
    comp = build_pipeline(cfg, keys=keys, source_key=source_key, record_key=record_key, seed=seed)
    comp.preset = cfg
    comp.preset_name = path.stem
    return comp
