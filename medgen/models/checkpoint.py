"""Checkpoints without pickle: safetensors weights + JSON config, card and train state.

Folder layout (written atomically as a whole with :func:`medgen.utils.atomic.atomic_dir`)::

    CKPT/
      model.safetensors        weights of the model (state_dict; tied tensors stored once)
      config.json              the model config (``name`` + family fields), rebuilt via the registry
      card.json                the model card (medgen.models.card.ModelCard)
      ema.safetensors          optional: EMA weights, same keys as model.safetensors
      train_state.safetensors  optional: every tensor of the resume state
      train_state.json         optional: the resume state's structure and scalars; tensors appear as
                               {"__tensor__": key} pointing into train_state.safetensors

Nothing is ever unpickled: weights are read with ``safetensors.torch.load_file`` and the train
state is a JSON tree whose leaves are JSON scalars or safetensors keys. Tuples, non-string dict
keys (optimizer ``state`` is keyed by int), numpy arrays and non-finite floats are tagged so the
structure round-trips exactly (``optimizer.load_state_dict`` gets what ``state_dict`` gave).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from medgen.errors import ReadError
from medgen.models.base import BaseModelConfig
from medgen.models.card import ModelCard
from medgen.models.registry import build_model, config_sha256, parse_model_config
from medgen.utils.atomic import atomic_dir

log = logging.getLogger("medgen.models")

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "card.json"
STATE_TENSORS_FILE = "train_state.safetensors"
STATE_JSON_FILE = "train_state.json"
_ALIAS_KEY = "medgen.aliases"


# --------------------------------------------------------------------------- tensors


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel,
                                torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def _dedupe(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split tensors into unique CPU tensors and ``alias -> key`` for exact views of another.

    safetensors refuses tensors that share storage. Exact aliases (tied weights: same storage,
    offset, shape, stride, dtype) are stored once and restored as the *same* tensor on load;
    partial overlaps are cloned.
    """
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_view: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for key in sorted(tensors):
        t = tensors[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"'{key}' is not a tensor ({type(t).__name__})")
        t = t.detach()
        if t.numel() == 0:
            out[key] = t.cpu().contiguous().clone()
            continue
        st = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
        view = st + (t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view in by_view:
            aliases[key] = by_view[view]
            continue
        if st in storages:  # overlaps another stored tensor's storage: store a copy
            t = t.clone()
        else:
            storages.add(st)
            by_view[view] = key
        out[key] = t.to("cpu").contiguous()
    # a CPU tensor that is a view of a larger storage stays a view; safetensors copies its bytes
    return out, aliases


def _save_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    unique, aliases = _dedupe(tensors)
    # contiguous() on an already-contiguous view keeps storage sharing: clone shared ones here
    seen: set[int] = set()
    for k, t in unique.items():
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            unique[k] = t.clone()
        seen.add(ptr)
    meta = {"format": "pt"}
    if aliases:
        meta[_ALIAS_KEY] = json.dumps(aliases, sort_keys=True)
    save_file(unique, str(path), metadata=meta)


def read_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a state_dict (aliases restored as shared tensors)."""
    path = Path(path)
    sd = load_file(str(path), device=str(device))
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    for alias, key in json.loads(meta.get(_ALIAS_KEY, "{}")).items():
        sd[alias] = sd[key]
    return dict(sorted(sd.items()))


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Digest of a state_dict's contents: sorted keys, dtype, shape and raw bytes.

    Independent of file metadata and of how ties were stored, so a model in memory and its
    saved ``model.safetensors`` give the same digest (the trainer's determinism check).
    """
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode() + b"\0" + str(t.dtype).encode() + b"\0"
                 + json.dumps(list(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_sha256(ckpt_dir: str | Path, which: str = "model") -> str:
    """:func:`state_dict_sha256` of ``model.safetensors`` (``which="ema"``: ``ema.safetensors``)."""
    name = {"model": MODEL_FILE, "ema": EMA_FILE}[which]
    return state_dict_sha256(read_state_dict(Path(ckpt_dir) / name))


# --------------------------------------------------------------------------- JSON tree + tensors


def _encode(obj: Any, tensors: dict[str, torch.Tensor], memo: dict[int, str], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = memo.get(id(obj))
        if key is None:
            key = memo[id(obj)] = f"t{len(tensors):06d}"
            tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        key = f"t{len(tensors):06d}"
        tensors[key] = torch.from_numpy(arr.view(np.uint8).reshape(-1).copy())
        return {"__ndarray__": key, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, memo, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, memo, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, memo, f"{path}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, memo, path), _encode(v, tensors, memo, f"{path}.{k}")]
                             for k, v in obj.items()]}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    raise TypeError(f"train state at '{path}': cannot store {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        raw = tensors[obj["__ndarray__"]].cpu().numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_state(state: Mapping[str, Any], json_path: Path, tensors_path: Path) -> None:
    """Write a nested state (dicts, lists, tuples, scalars, tensors, numpy arrays) without pickle."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(dict(state), tensors, {}, "state")
    _save_tensors(tensors, tensors_path)
    doc = {"format": "medgen-train-state", "version": 1, "state": tree}
    Path(json_path).write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False))


def load_state(json_path: Path, tensors_path: Path, device: str | torch.device = "cpu"
               ) -> dict[str, Any]:
    """Inverse of :func:`save_state`."""
    doc = json.loads(Path(json_path).read_text())
    if doc.get("format") != "medgen-train-state":
        raise ReadError(Path(json_path).name, "not a medgen train state")
    tensors = read_state_dict(tensors_path, device=device)
    return _decode(doc["state"], tensors)


# --------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every initialised CUDA device) RNG states, storable in
    ``extra_state`` (restore with :func:`restore_rng_state`)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the RNGs from :func:`capture_rng_state`'s output (after a save/load round trip)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


# --------------------------------------------------------------------------- checkpoints


def _ema_state(ema: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(ema, torch.nn.Module):
        inner = getattr(ema, "module", ema)  # torch.optim.swa_utils.AveragedModel keeps .module
        return _unwrap(inner).state_dict()
    if isinstance(ema, Mapping):
        return ema
    raise TypeError("ema must be a module (e.g. AveragedModel) or a state_dict")


def save_checkpoint(ckpt_dir: str | Path, model: torch.nn.Module,
                    model_cfg: BaseModelConfig | None = None, *, card: ModelCard | Mapping[str, Any],
                    extra_state: Mapping[str, Any] | None = None, ema: Any = None,
                    optimizer_state: Any = None) -> Path:
    """Write a checkpoint folder atomically (replaces an existing one only when complete).

    Parameters
    ----------
    ckpt_dir : path
        Folder to create/replace.
    model : nn.Module
        The model (DDP / torch.compile wrappers are unwrapped).
    model_cfg : BaseModelConfig, optional
        Its config; default ``model.config``.
    card : ModelCard or mapping
        ``model_name`` must equal the config's ``name``; ``config_sha256``/``weights_sha256``
        (and ``patch_size`` when unset) are filled in here.
    extra_state : mapping, optional
        Resume state beside the optimizer: step, epoch, scheduler/scaler ``state_dict()``,
        :func:`capture_rng_state`, a discriminator's ``state_dict()``... Any nesting of dicts,
        lists, tuples, scalars, tensors and numpy arrays.
    ema : nn.Module or state_dict, optional
        EMA weights of ``model`` (same keys), saved as ``ema.safetensors``.
    optimizer_state : any, optional
        ``optimizer.state_dict()`` (or a dict of several), for resume.

    Returns
    -------
    Path
        ``ckpt_dir``.
    """
    model = _unwrap(model)
    cfg = model_cfg if model_cfg is not None else getattr(model, "config", None)
    if cfg is None:
        raise ValueError("save_checkpoint needs model_cfg (the model has no .config)")
    cfg = parse_model_config(cfg)
    card_obj = card if isinstance(card, ModelCard) else ModelCard.model_validate(dict(card))
    if card_obj.model_name != cfg.name:
        raise ValueError(f"card.model_name '{card_obj.model_name}' != config name '{cfg.name}'")
    sd = model.state_dict()
    updates: dict[str, Any] = {"config_sha256": config_sha256(cfg),
                               "weights_sha256": state_dict_sha256(sd)}
    if card_obj.patch_size is None and cfg.patch_size is not None:
        updates["patch_size"] = list(cfg.patch_size)
    ema_sd = _ema_state(ema) if ema is not None else None
    if ema_sd is not None:
        missing = set(sd) ^ set(ema_sd)
        if missing:
            raise ValueError(f"ema keys differ from the model's: {sorted(missing)[:3]}")
        updates["ema_weights_sha256"] = state_dict_sha256(ema_sd)
    card_obj = ModelCard.model_validate({**card_obj.model_dump(mode="json"), **updates})

    ckpt_dir = Path(ckpt_dir)
    with atomic_dir(ckpt_dir) as tmp:
        _save_tensors(sd, tmp / MODEL_FILE)
        if ema_sd is not None:
            _save_tensors(ema_sd, tmp / EMA_FILE)
        (tmp / CONFIG_FILE).write_text(
            json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(
            json.dumps(card_obj.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        if optimizer_state is not None or extra_state is not None:
            save_state({"optimizer": optimizer_state, "extra": dict(extra_state or {})},
                       tmp / STATE_JSON_FILE, tmp / STATE_TENSORS_FILE)
    log.info("saved checkpoint %s (weights %s)", ckpt_dir.name, updates["weights_sha256"][:12])
    return ckpt_dir


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReadError(f"{path.parent.name}/{path.name}", "missing from checkpoint") from None
    except json.JSONDecodeError as exc:
        raise ReadError(f"{path.parent.name}/{path.name}", f"not valid JSON (line {exc.lineno})") from None


def load_card(ckpt_dir: str | Path) -> ModelCard:
    """The checkpoint's model card (validated)."""
    from pydantic import ValidationError

    path = Path(ckpt_dir) / CARD_FILE
    try:
        return ModelCard.model_validate(_read_json(path))
    except ValidationError as err:
        from medgen.config.base import format_validation_error

        raise ReadError(f"{path.parent.name}/{CARD_FILE}",
                        format_validation_error(err, ModelCard)) from None


def load_checkpoint(ckpt_dir: str | Path, device: str | torch.device = "cpu", *,
                    weights: str = "auto", verify: bool = True
                    ) -> tuple[torch.nn.Module, BaseModelConfig, ModelCard]:
    """Rebuild a model from ``config.json`` via the registry and load its safetensors weights.

    Parameters
    ----------
    ckpt_dir : path
    device : str or torch.device
    weights : {"auto", "model", "ema"}
        ``auto`` loads ``ema.safetensors`` when present (what inference wants), else the model
        weights; resume uses ``model`` and :func:`load_ema_state`.
    verify : bool
        Check the config and weights digests recorded in the card.

    Returns
    -------
    (model, config, card)
        The model is in eval mode on ``device``; ``model.config`` is set.

    Raises
    ------
    ReadError
        Missing/corrupt file, or a digest that does not match the card.
    """
    ckpt_dir = Path(ckpt_dir)
    where = ckpt_dir.name
    cfg = parse_model_config(_read_json(ckpt_dir / CONFIG_FILE))
    card = load_card(ckpt_dir)
    if weights not in ("auto", "model", "ema"):
        raise ValueError("weights must be auto, model or ema")
    which = weights
    if which == "auto":
        which = "ema" if (ckpt_dir / EMA_FILE).exists() else "model"
    path = ckpt_dir / (EMA_FILE if which == "ema" else MODEL_FILE)
    if not path.exists():
        raise ReadError(f"{where}/{path.name}", "missing from checkpoint")
    if verify and card.config_sha256 and card.config_sha256 != config_sha256(cfg):
        raise ReadError(f"{where}/{CONFIG_FILE}", "does not match the config digest in card.json")
    try:
        sd = read_state_dict(path)
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise ReadError(f"{where}/{path.name}", f"unreadable safetensors ({type(exc).__name__})") from None
    expected = card.ema_weights_sha256 if which == "ema" else card.weights_sha256
    if verify and expected and state_dict_sha256(sd) != expected:
        raise ReadError(f"{where}/{path.name}", "weights do not match the digest in card.json")
    with torch.random.fork_rng(devices=[]):  # building must not shift the caller's RNG stream
        model = build_model(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise ReadError(f"{where}/{path.name}", f"weights do not fit the config: {first}") from None
    model.to(device).eval()
    return model, cfg, card


def load_ema_state(ckpt_dir: str | Path, device: str | torch.device = "cpu"
                   ) -> dict[str, torch.Tensor] | None:
    """EMA state_dict of a checkpoint, or None when it has none."""
    path = Path(ckpt_dir) / EMA_FILE
    return read_state_dict(path, device) if path.exists() else None


def load_train_state(ckpt_dir: str | Path, device: str | torch.device = "cpu"
                     ) -> dict[str, Any] | None:
    """``{"optimizer": ..., "extra": ...}`` as given to :func:`save_checkpoint`, or None."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_JSON_FILE).exists():
        return None
    return load_state(ckpt_dir / STATE_JSON_FILE, ckpt_dir / STATE_TENSORS_FILE, device)


__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "EMA_FILE",
    "MODEL_FILE",
    "STATE_JSON_FILE",
    "STATE_TENSORS_FILE",
    "capture_rng_state",
    "load_card",
    "load_checkpoint",
    "load_ema_state",
    "load_state",
    "load_train_state",
    "read_state_dict",
    "restore_rng_state",
    "save_checkpoint",
    "save_state",
    "state_dict_sha256",
    "weights_sha256",
]
