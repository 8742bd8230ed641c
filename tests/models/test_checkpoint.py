"""Checkpoint format: safetensors + JSON only, exact round trips, no unpickling, atomicity."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from medgen.errors import ReadError
from medgen.models import (
    ModelCard,
    build_model,
    capture_rng_state,
    config_sha256,
    load_checkpoint,
    load_ema_state,
    load_train_state,
    predict,
    restore_rng_state,
    save_checkpoint,
    state_dict_sha256,
    weights_sha256,
)
from medgen.models.checkpoint import read_state_dict


@pytest.fixture
def no_pickle(monkeypatch):
    """Any unpickling during the block fails the test."""

    def boom(*a, **k):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    class PoisonedUnpickler(pickle.Unpickler):
        def load(self):
            raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "Unpickler", PoisonedUnpickler)
    monkeypatch.setattr(torch, "load", boom)


def _card(cfg, card_dict):
    from medgen.models import model_spec

    return {**card_dict, "model_name": cfg.name, "task": model_spec(cfg).tasks[0]}


def test_round_trip_identical_outputs(any_tiny_cfg, card_dict, tmp_path, no_pickle):
    tiny_cfg = any_tiny_cfg
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    x = torch.randn(1, tiny_cfg.in_channels, *_size(tiny_cfg))
    # a few updates so weights and norm buffers are not at their init values
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        try:
            out = model(x)
        except NotImplementedError:  # generators train through their task, not forward()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            continue
        (out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    ref = predict(model, x)
    ck = save_checkpoint(tmp_path / "ck", model, tiny_cfg, card=_card(tiny_cfg, card_dict))
    files = sorted(p.name for p in ck.iterdir())
    assert files == ["card.json", "config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".medgen-tmp-*"))

    torch.manual_seed(123)
    loaded, cfg, card = load_checkpoint(ck)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(123))
    assert torch.equal(torch.rand(3), expected), "loading leaves the global RNG stream alone"
    assert cfg == tiny_cfg and isinstance(card, ModelCard)
    assert not loaded.training
    assert torch.equal(predict(loaded, x), ref)
    assert card.config_sha256 == config_sha256(cfg)
    assert card.weights_sha256 == weights_sha256(ck) == state_dict_sha256(model.state_dict())
    assert card.patch_size == tiny_cfg.patch_size
    assert json.loads((ck / "config.json").read_text())["name"] == tiny_cfg.name


def test_only_safetensors_and_json_with_full_state(card_dict, tmp_path, no_pickle):
    torch.manual_seed(0)
    cfg = {"name": "unet", "spatial_dims": 2, "channels": [4, 8], "num_res_units": 1}
    model = build_model(cfg)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    x = torch.randn(2, 1, 16, 16)

    def step():
        loss = (model(x) - 0.5 * x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        ema.update_parameters(model)

    for _ in range(3):
        step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    extra = {"step": 3, "epoch": 0, "best": float("inf"), "scheduler": sched.state_dict(),
             "rng": capture_rng_state(), "shape": (16, 16), "note": None}
    ck = save_checkpoint(tmp_path / "ck", model, card=_card(model.config, card_dict),
                         extra_state=extra, ema=ema, optimizer_state=opt.state_dict())
    assert {p.suffix for p in ck.iterdir()} == {".safetensors", ".json"}
    assert sorted(p.name for p in ck.iterdir()) == [
        "card.json", "config.json", "ema.safetensors", "model.safetensors",
        "train_state.json", "train_state.safetensors"]
    expected_after = [random.random(), float(np.random.rand()), float(torch.rand(()))]

    # resume in a "new process": fresh objects, state only from the folder
    model2, cfg2, card2 = load_checkpoint(ck, weights="model")
    model2.train()
    assert state_dict_sha256(model2.state_dict()) == state_dict_sha256(model.state_dict())
    auto, _, _ = load_checkpoint(ck)  # auto = EMA weights
    assert state_dict_sha256(auto.state_dict()) == card2.ema_weights_sha256
    assert card2.ema_weights_sha256 == state_dict_sha256(ema.module.state_dict())
    assert state_dict_sha256(load_ema_state(ck)) == card2.ema_weights_sha256
    state = load_train_state(ck)
    ex = state["extra"]
    assert ex["step"] == 3 and ex["best"] == float("inf") and ex["shape"] == (16, 16)
    assert ex["note"] is None
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(state["optimizer"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(ex["scheduler"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.99)
    restore_rng_state(ex["rng"])
    assert [random.random(), float(np.random.rand()), float(torch.rand(()))] == expected_after

    # continuing both runs gives bit-identical weights
    step()
    loss2 = (model2(x) - 0.5 * x).pow(2).mean()
    loss2.backward()
    opt2.step()
    sched2.step()
    assert state_dict_sha256(model2.state_dict()) == state_dict_sha256(model.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied


def test_tied_and_overlapping_tensors(tmp_path):
    from medgen.models.checkpoint import _save_tensors, load_state, save_state

    m = Tied()
    sd = m.state_dict()
    _save_tensors(sd, tmp_path / "w.safetensors")
    back = read_state_dict(tmp_path / "w.safetensors")
    assert back["a.weight"] is back["b.weight"], "tie restored as one tensor"
    assert state_dict_sha256(back) == state_dict_sha256(sd)
    m2 = Tied()
    m2.load_state_dict(back)
    assert m2.a.weight is m2.b.weight and torch.equal(m2.a.weight, m.a.weight)
    big = torch.arange(10.0)
    state = {"x": big[:5], "y": big[3:], "same": [big, big], 7: np.arange(3, dtype=np.uint32)}
    save_state(state, tmp_path / "s.json", tmp_path / "s.safetensors")
    got = load_state(tmp_path / "s.json", tmp_path / "s.safetensors")
    assert torch.equal(got["x"], big[:5]) and torch.equal(got["y"], big[3:])
    assert got["same"][0] is got["same"][1]
    assert got[7].dtype == np.uint32 and got[7].tolist() == [0, 1, 2]


def test_unstorable_state_is_refused(card_dict, tmp_path):
    model = build_model({"name": "unet", "spatial_dims": 2, "channels": [4, 8]})
    with pytest.raises(TypeError, match="without pickle"):
        save_checkpoint(tmp_path / "ck", model, card=_card(model.config, card_dict),
                        extra_state={"fn": object()})
    assert not (tmp_path / "ck").exists(), "nothing half-written"


def test_replace_is_atomic_and_tampering_is_detected(card_dict, tmp_path):
    torch.manual_seed(0)
    model = build_model({"name": "unet", "spatial_dims": 2, "channels": [4, 8]})
    ck = save_checkpoint(tmp_path / "ck", model, card=_card(model.config, card_dict))
    first = weights_sha256(ck)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(ck, model, card=_card(model.config, card_dict))
    assert weights_sha256(ck) != first and not list(tmp_path.glob(".medgen-tmp-*"))

    # config edited by hand -> digest mismatch
    cfg = json.loads((ck / "config.json").read_text())
    cfg["num_res_units"] = 1
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ReadError, match="config.json"):
        load_checkpoint(ck)
    # truncated weights -> one-line ReadError naming the file
    ck2 = save_checkpoint(tmp_path / "ck2", model, card=_card(model.config, card_dict))
    data = (ck2 / "model.safetensors").read_bytes()
    (ck2 / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="model.safetensors"):
        load_checkpoint(ck2)
    (ck2 / "card.json").unlink()
    with pytest.raises(ReadError, match="card.json: missing"):
        load_checkpoint(ck2)


def test_card_must_match_model(card_dict, tmp_path):
    model = build_model({"name": "unet", "spatial_dims": 2, "channels": [4, 8]})
    with pytest.raises(ValueError, match="model_name"):
        save_checkpoint(tmp_path / "ck", model, card=card_dict)  # card says vae


def _size(cfg) -> list[int]:
    """The config's patch size; generators fix an image size instead (synthesis configs)."""
    size = getattr(cfg, "patch_size", None) or getattr(cfg, "image_size", None)
    return list(size) if size else [16] * cfg.spatial_dims
