"""CUDA checks (skipped without a GPU): device loading, CPU/GPU agreement, bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from medgen.models import build_model, load_checkpoint, load_model_config, predict, save_checkpoint
from medgen.models.denoise.blindspot import blindspot_mask

pytestmark = pytest.mark.gpu


def test_checkpoint_loads_on_cuda_and_agrees_with_cpu(tiny_cfg, card_dict, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    x = torch.randn(1, tiny_cfg.in_channels, *tiny_cfg.patch_size)
    ck = save_checkpoint(tmp_path / "ck", model, card={**card_dict, "model_name": tiny_cfg.name})
    gpu_model, _, _ = load_checkpoint(ck, device="cuda")
    assert next(gpu_model.parameters()).is_cuda
    y_gpu = predict(gpu_model, x.cuda()).cpu()
    y_cpu = predict(model, x)
    assert torch.allclose(y_gpu, y_cpu, atol=1e-3, rtol=1e-3)
    if torch.cuda.is_bf16_supported():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_bf16 = predict(gpu_model, x.cuda()).float().cpu()
        assert y_bf16.shape == x.shape and torch.isfinite(y_bf16).all()


def test_blindspot_mask_same_on_cpu_and_cuda():
    x = torch.randn(2, 1, 16, 16, 16)
    a = blindspot_mask(x, 0.05, generator=torch.Generator().manual_seed(3))
    b = blindspot_mask(x.cuda(), 0.05, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1].cpu()) and torch.equal(a[0], b[0].cpu())


def test_vae_prior_sampling_seeded_across_devices():
    from pathlib import Path

    cfg = load_model_config(Path(__file__).resolve().parents[2] / "configs/tiny/vae-tiny-3d.yaml")
    torch.manual_seed(0)
    model = build_model(cfg)
    a = model.sample_prior(1, (16, 16, 16), generator=torch.Generator().manual_seed(1))
    b = model.cuda().sample_prior(1, (16, 16, 16), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b.cpu(), atol=1e-3)
