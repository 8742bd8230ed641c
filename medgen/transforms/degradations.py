"""Degradation registry, MONAI dictionary transforms that record what they did, and replay.

TorchIO's habit: a random transform samples parameters (and a seed for any noise), then calls a
deterministic function with them, and appends a record to the sample::

    sample["degradations"] = [
        {"name": "rician", "keys": ["noisy"], "params": {"sigma": 0.031}, "seed": 1234567},
        {"name": "thick_slice", "keys": ["noisy"], "params": {"factor": 4.0, "axis": -1, ...},
         "seed": 99, "geometry": {"index_scale": [1, 1, 4], "index_offset": [0, 0, 1.5]}},
    ]

Records are plain JSON (ints, floats, strings, lists); :func:`replay` re-applies them and gives a
bit-identical image on the same device.

Parameters in a preset or in :class:`RandDegradationd` are *recipes*: a scalar is fixed, a
two-number list ``[lo, hi]`` is sampled uniformly (integers inclusive when the default is an int),
``{"choice": [...]}`` picks one; a parameter whose default is itself a list (``axes``,
``coeff_range``) takes a list as a fixed value. Each degradation's ``resolve`` step turns the
sampled recipe into the concrete parameters its deterministic function takes (e.g. motion: a
number of movements and maximum amplitudes -> the actual times, rotations and translations).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform, Transform

from medgen.errors import ConfigError
from medgen.registry import Registry, suggest
from medgen.transforms import functional as Fn

log = logging.getLogger("medgen.transforms")

RECORD_KEY = "degradations"

__all__ = [
    "DEGRADATIONS", "DegradationSpec", "Degradationd", "RandDegradationd", "EncodeRecordsd",
    "replay", "sample_params", "records_of", "RECORD_KEY",
]


@dataclass(frozen=True)
class DegradationSpec:
    """One registered degradation.

    Attributes
    ----------
    name : str
        Registry name.
    fn : callable
        Deterministic ``fn(img, *, seed, **params) -> (img, geometry | None)``.
    defaults : dict
        Recipe parameters and their defaults (what presets may set).
    resolve : callable or None
        ``resolve(recipe, img_tensor, meta, rng) -> params`` for ``fn``; None means the recipe
        *is* the parameter set.
    modality : str
        "any", "MR" or "CT" (documentation only).
    description : str
        One line for docs and ``--help``.
    list_params : tuple of str
        Parameters whose value is a list (a two-number list is then not a range).
    """

    name: str
    fn: Callable
    defaults: dict[str, Any]
    resolve: Callable | None = None
    modality: str = "any"
    description: str = ""
    list_params: tuple[str, ...] = ()

    def check_params(self, params: Mapping[str, Any], where: str | None = None) -> None:
        for k in params:
            if k not in self.defaults:
                raise ConfigError(where, f"degradation '{self.name}' has no parameter '{k}'"
                                  f"{suggest(k, self.defaults)}; known: {', '.join(self.defaults)}")

    def concrete(self, recipe: Mapping[str, Any], img, rng: np.random.Generator) -> dict[str, Any]:
        sampled = sample_params(self.defaults, recipe, rng, self.list_params)
        t = Fn._as_tensor(img)
        out = self.resolve(sampled, t, getattr(img, "meta", None) or {}, rng) if self.resolve else sampled
        return _jsonable(out)


DEGRADATIONS: Registry[DegradationSpec] = Registry("degradations")


# --- sampling -------------------------------------------------------------------------------------
def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    return v


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def sample_params(defaults: Mapping[str, Any], recipe: Mapping[str, Any] | None,
                  rng: np.random.Generator, list_params: Sequence[str] = ()) -> dict[str, Any]:
    """Draw one parameter set from a recipe (see the module docstring for the rules).

    ``list_params`` names the parameters whose value is itself a list (taken as fixed).
    """
    out: dict[str, Any] = {}
    recipe = dict(recipe or {})
    for name, default in defaults.items():
        spec = recipe.get(name, default)
        if isinstance(default, (list, tuple)) and name not in list_params:
            as_int = all(isinstance(x, int) and not isinstance(x, bool) for x in default)
        else:
            as_int = isinstance(default, int) and not isinstance(default, bool)
        if isinstance(spec, Mapping) and "choice" in spec:
            choices = list(spec["choice"])
            out[name] = choices[int(rng.integers(len(choices)))]
            continue
        if isinstance(spec, Mapping) and "uniform" in spec:
            spec = list(spec["uniform"])
        elif name in list_params:
            out[name] = spec
            continue
        if isinstance(spec, (list, tuple)) and len(spec) == 2 and all(_is_number(x) for x in spec):
            lo, hi = spec
            if lo > hi:
                raise ConfigError(None, f"parameter '{name}': range [{lo}, {hi}] is empty")
            out[name] = int(rng.integers(int(lo), int(hi) + 1)) if as_int else float(rng.uniform(lo, hi))
        else:
            out[name] = spec
    return out


# --- resolvers: recipe -> concrete parameters -----------------------------------------------------
def _reference(t: torch.Tensor) -> float:
    """99.5th percentile of |image| (the scale ``relative`` noise levels refer to)."""
    flat = t.abs().flatten().to(torch.float32)
    if flat.numel() > 2_000_000:
        flat = flat[:: flat.numel() // 2_000_000 + 1]
    return float(torch.quantile(flat.cpu(), 0.995))


def _noise_resolve(r, t, meta, rng):
    sigma = float(r["sigma"])
    if r.get("relative"):
        sigma *= _reference(t)
    return {"sigma": sigma}


def _ct_resolve(r, t, meta, rng):
    px = r.get("pixel_mm")
    if px is None:
        px = 1.0
        pixdim = meta.get("pixdim") if hasattr(meta, "get") else None
        affine = meta.get("affine") if hasattr(meta, "get") else None
        if affine is not None:
            sp = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
            ax = [a for a in range(min(3, t.ndim - 1)) if a != (r["slice_axis"] % 3)]
            px = float(np.mean(sp[ax])) if t.ndim == 4 else float(np.mean(sp[:2]))
        elif pixdim is not None:
            px = float(np.mean(np.asarray(pixdim)[1:3]))
        else:
            log.debug("ct_lowdose: no spacing in metadata, assuming 1 mm pixels")
    return {"dose": float(r["dose"]), "i0": float(r["i0"]),
            "electronic_sigma": float(r["electronic_sigma"]), "pixel_mm": float(px),
            "n_angles": int(r["n_angles"]), "slice_axis": int(r["slice_axis"]),
            "mode": str(r["mode"]), "projection_scale": int(r["projection_scale"])}


def _spike_resolve(r, t, meta, rng):
    nsp = t.ndim - 1
    dims = tuple(range(1, nsp + 1))
    shape = t.shape[1:]
    centre = tuple(n // 2 for n in shape)
    while True:
        loc = tuple(int(rng.integers(n)) for n in shape)
        if loc != centre:
            break
    k = torch.fft.fftn(t.to(torch.complex64), dim=dims)
    max_log = float(torch.log(k.abs().max() + 1e-10))
    return {"loc": list(loc), "k_intensity": float(r["intensity"]) * max_log}


def _motion_resolve(r, t, meta, rng):
    nsp = t.ndim - 1
    n = int(r["n_movements"])
    times = sorted(float(x) for x in rng.uniform(0.1, 0.9, size=n))
    n_rot = 1 if nsp == 2 else 3
    rot = [[float(x) for x in rng.uniform(-1, 1, size=n_rot) * float(r["max_rotation_deg"])]
           for _ in range(n)]
    tr = [[float(x) for x in rng.uniform(-1, 1, size=nsp) * float(r["max_translation_vox"])]
          for _ in range(n)]
    return {"times": times, "rotations": rot, "translations": tr, "pe_axis": int(r["pe_axis"])}


def _bias_resolve(r, t, meta, rng):
    nsp = t.ndim - 1
    lo, hi = (float(x) for x in r["coeff_range"])
    n_terms = len(Fn.bias_field_terms(nsp, int(r["degree"])))
    coeffs = [float(x) for x in rng.uniform(lo, hi, size=n_terms)]
    return {"degree": int(r["degree"]), "coeffs": coeffs}


def _truncation_resolve(r, t, meta, rng):
    axes = r.get("axes")
    return {"factor": float(r["factor"]), "axes": None if axes is None else [int(a) for a in axes],
            "mode": str(r["mode"])}


def _register_builtins() -> None:
    """The built-ins: parameters from the torch-free catalogue, functions from here."""
    from medgen.transforms.catalog import CATALOG

    fns = {"gaussian": (Fn.gaussian_noise, _noise_resolve), "rician": (Fn.rician_noise, _noise_resolve),
           "ct_lowdose": (Fn.ct_lowdose, _ct_resolve), "kspace_spike": (Fn.kspace_spike, _spike_resolve),
           "gibbs": (Fn.gibbs, None), "motion": (Fn.motion, _motion_resolve),
           "ghosting": (Fn.ghosting, None), "bias_field": (Fn.bias_field, _bias_resolve),
           "thick_slice": (Fn.thick_slice, None),
           "kspace_truncation": (Fn.kspace_truncation, _truncation_resolve)}
    for name, info in CATALOG.items():
        fn, resolve = fns[name]
        DEGRADATIONS.register(str(name), DegradationSpec(
            str(name), fn, dict(info.defaults), resolve, info.modality, info.description,
            info.list_params), overwrite=True)


_register_builtins()


# --- records --------------------------------------------------------------------------------------
def _apply(name: str, img, params: Mapping[str, Any], seed: int):
    spec = DEGRADATIONS.get(name)
    return spec.fn(img, seed=int(seed), **dict(params))


def _append(d: dict, record_key: str, record: dict) -> None:
    prev = d.get(record_key) or []
    if isinstance(prev, str):
        prev = json.loads(prev)
    d[record_key] = list(prev) + [record]


def records_of(sample_or_record, key: str | None = None) -> list[dict]:
    """Normalise a sample dict, a list of records, one record or their JSON to a list of records.

    With ``key``, only the records that were applied to that key are kept.
    """
    x = sample_or_record
    if isinstance(x, (str, bytes)):
        x = json.loads(x)
    if isinstance(x, Mapping) and "name" in x and "params" in x:
        recs = [dict(x)]
    elif isinstance(x, Mapping):
        recs = records_of(x.get(RECORD_KEY) or [])
    elif isinstance(x, Sequence):
        recs = [dict(r) for r in x]
    else:
        raise TypeError("expected a sample dict, a record, a list of records or their JSON")
    if key is not None:
        recs = [r for r in recs if key in r.get("keys", [key])]
    return recs


def replay(sample_or_record, image, key: str | None = None):
    """Re-apply recorded degradations to ``image`` (the input to the first of them).

    Parameters
    ----------
    sample_or_record : dict | list | str
        A sample with a ``"degradations"`` list, such a list, one record, or their JSON.
    image : array-like
        Channel-first numpy array or tensor (the clean input the records were made from).
    key : str, optional
        Only replay the records applied to this key.

    Returns
    -------
    The degraded image, bit-identical to the original run on the same device.
    """
    out = image
    for r in records_of(sample_or_record, key):
        out, _ = _apply(r["name"], out, r["params"], r["seed"])
    return out


class Degradationd(MapTransform):
    """Deterministic degradation with fixed parameters and seed, recorded like a random one."""

    def __init__(self, keys, name: str, params: Mapping[str, Any] | None = None, seed: int = 0,
                 record_key: str = RECORD_KEY, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spec = DEGRADATIONS.get(name)
        self.params = _jsonable(dict(params or {}))
        self.seed = int(seed)
        self.record_key = record_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        geometry = None
        for k in keys:
            d[k], geometry = self.spec.fn(d[k], seed=self.seed, **self.params)
        rec = {"name": self.spec.name, "keys": [str(k) for k in keys], "params": self.params,
               "seed": self.seed}
        if geometry is not None:
            rec["geometry"] = _jsonable(geometry)
        _append(d, self.record_key, rec)
        return d


class RandDegradationd(RandomizableTransform, MapTransform):
    """Random degradation: with probability ``prob`` sample parameters + seed, apply, record.

    All keys get the same parameters and seed. The record is appended to ``data[record_key]``
    (see the module docstring); nothing is recorded when the transform is skipped.

    Parameters
    ----------
    keys : str or list of str
        Sample keys to degrade (e.g. ``"noisy"``).
    name : str
        A name in :data:`DEGRADATIONS`.
    prob : float
        Probability of applying.
    params : dict, optional
        Recipe overriding the spec's defaults (fixed values, ``[lo, hi]`` ranges, ``{"choice": ..}``).
    """

    def __init__(self, keys, name: str, prob: float = 1.0, params: Mapping[str, Any] | None = None,
                 record_key: str = RECORD_KEY, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.spec = DEGRADATIONS.get(name)
        self.recipe = dict(params or {})
        self.spec.check_params(self.recipe)
        self.record_key = record_key
        self._seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1)) if self._do_transform else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize()
        keys = list(self.key_iterator(d))
        if not self._do_transform or not keys:
            return d
        seed = int(self._seed)
        params = self.spec.concrete(self.recipe, d[keys[0]], np.random.default_rng([seed, 7]))
        geometry = None
        for k in keys:
            d[k], geometry = self.spec.fn(d[k], seed=seed, **params)
        rec = {"name": self.spec.name, "keys": [str(k) for k in keys], "params": params,
               "seed": seed}
        if geometry is not None:
            rec["geometry"] = _jsonable(geometry)
        _append(d, self.record_key, rec)
        return d


class EncodeRecordsd(Transform):
    """Turn ``data[record_key]`` (a list of records) into one JSON string so that PyTorch's
    default collation batches samples with different numbers of records; :func:`replay` and
    :func:`records_of` accept the JSON directly."""

    def __init__(self, record_key: str = RECORD_KEY):
        self.record_key = record_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        recs = d.get(self.record_key)
        if recs is None:
            recs = []
        if not isinstance(recs, str):
            d[self.record_key] = json.dumps(_jsonable(recs), sort_keys=True)
        return d


def describe() -> list[dict[str, Any]]:
    """Names, modality, defaults and description of every registered degradation."""
    out = []
    for name in DEGRADATIONS.names():
        s = DEGRADATIONS.get(name)
        out.append({"name": name, "modality": s.modality, "defaults": s.defaults,
                    "description": s.description})
    return out

