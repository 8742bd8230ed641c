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
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from medgen.config import StrictModel, load_config
from medgen.config.fields import choice
from medgen.config.supported import NoiseUnits, PresetModality
from medgen.errors import ConfigError
from medgen.registry import suggest
from medgen.transforms.catalog import CATALOG, PLAUSIBLE_SIGMA, DegradationInfo

__all__ = ["DegradationItem", "OneOfItem", "PresetConfig", "PresetRef", "check_preset",
           "load_preset", "preset_names", "presets_dir", "build_pipeline", "preset_path"]


def _info(name: str) -> DegradationInfo:
    """Catalogue entry of a built-in, or the registry's entry of a plugin (imports torch)."""
    if name in CATALOG:
        return CATALOG[name]
    from medgen.transforms.degradations import DEGRADATIONS

    spec = DEGRADATIONS.get(name)  # "did you mean" ConfigError for unknown names
    return DegradationInfo(spec.name, dict(spec.defaults), spec.modality, spec.description,
                           spec.list_params)


def _is_plugin(name: str) -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == name for ep in entry_points(group="medgen.degradations"))


class DegradationItem(StrictModel):
    name: str
    prob: float = Field(1.0, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CATALOG and not _is_plugin(v):
            names = sorted(CATALOG)
            raise ValueError(f"unknown degradation '{v}'{suggest(v, names)}; known: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _params_known(self):
        info = _info(self.name)
        for k, v in list(self.params.items()):
            if k not in info.defaults:
                raise ValueError(f"degradation '{self.name}' has no parameter '{k}'"
                                 f"{suggest(k, info.defaults)}; known: {', '.join(info.defaults)}")
            if k in info.choices and isinstance(v, str):
                canon = info.aliases.get(k, {}).get(v.lower(), v)
                if canon not in info.choices[k]:
                    raise ValueError(f"degradation '{self.name}': {k} '{v}' is not one of "
                                     f"{', '.join(info.choices[k])}{suggest(v, info.choices[k])}")
                self.params[k] = canon  # an alias never reaches the transform
        return self

    def noise_levels(self) -> list[float]:
        """The noise standard deviations this item can draw (range ends, choices), or []."""
        info = _info(self.name)
        if info.noise_param is None or self.params.get("relative"):
            return []
        v = self.params.get(info.noise_param, info.defaults[info.noise_param])
        if isinstance(v, dict):
            v = v.get("choice", v.get("uniform", []))
        vals = v if isinstance(v, (list, tuple)) else [v]
        return [float(x) for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]


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
    """A degradation preset file.

    ``units`` says what noise levels (``sigma``) mean: ``window`` - a fraction of the normalised
    intensity window (the image as the model sees it, 0..1); ``HU`` - Hounsfield units, the
    preset then runs on the CT image in HU, before normalisation. Default: ``HU`` when the preset
    holds a degradation that only works in HU (``ct_lowdose``), else ``window``. A noise level
    implausible for its units (a 0.03 HU "noise", a sigma of 20 window widths) is refused.
    """

    description: str = ""
    modality: choice(PresetModality, "modality") = PresetModality.ANY
    units: choice(NoiseUnits, "noise units") | None = None
    degradations: list[DegradationItem | OneOfItem] = Field(default_factory=list)

    def items(self) -> list[DegradationItem]:
        """Every degradation item, members of ``one_of`` groups included."""
        out: list[DegradationItem] = []
        for d in self.degradations:
            out += list(d.one_of) if isinstance(d, OneOfItem) else [d]
        return out

    def names(self) -> set[str]:
        """Every degradation this preset may apply (members of ``one_of`` groups included)."""
        return {i.name for i in self.items()}

    @model_validator(mode="after")
    def _units(self):
        fixed = {i.name: _info(i.name).units for i in self.items() if _info(i.name).units}
        if fixed:
            name, unit = next(iter(fixed.items()))
            if self.units not in (None, unit):
                raise ValueError(f"units: {self.units} does not fit '{name}', which works in {unit}")
            self.__dict__["units"] = unit  # no re-validation (validate_assignment would recurse)
        elif self.units is None:
            self.__dict__["units"] = NoiseUnits.WINDOW
        if self.units == NoiseUnits.HU and self.modality != PresetModality.CT:
            raise ValueError(f"units: HU are CT's (modality is {self.modality}); set modality: CT "
                             "or give noise as a fraction of the intensity window (units: window)")
        lo, hi = PLAUSIBLE_SIGMA[self.units]
        other = NoiseUnits.WINDOW if self.units == NoiseUnits.HU else NoiseUnits.HU
        for i in self.items():
            levels = [abs(x) for x in i.noise_levels()]
            top = max(levels, default=None)
            if top is not None and not lo <= top <= hi:
                unit = "HU" if self.units == NoiseUnits.HU else "of the intensity window"
                raise ValueError(
                    f"'{i.name}' sigma up to {top:g} {unit} is implausible for units: "
                    f"{self.units} (plausible: {lo:g}-{hi:g}); with units: {other} it would mean "
                    f"{'a fraction of the intensity window' if other == NoiseUnits.WINDOW else 'HU'}")
        return self


_CHECKED: dict[tuple[str, int], PresetConfig] = {}


def check_preset(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> PresetConfig:
    """Resolve and validate a preset without building it (no torch, no MONAI).

    Validated files are remembered by path and modification time (a config names the same
    preset in several checks)."""
    path = preset_path(name_or_path)
    if overrides:
        return load_config(PresetConfig, path, overrides)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = load_config(PresetConfig, path)
    return _CHECKED[key].model_copy(deep=True)


def _check_ref(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        check_preset(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return v


#: A config field naming a preset (or a preset YAML path), validated when the config loads.
PresetRef = Annotated[str, AfterValidator(_check_ref)]


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
