"""The denoisers actually denoise (slow: run by `make test-all`).

Also the measurement quoted in docs/models.md: 2D 32x32 disc phantoms with an intensity gradient,
Gaussian sigma 0.1 on [0, 1], batch 8, Adam 3e-3, one CPU thread; PSNR on held-out phantoms.
"""

from __future__ import annotations

import math

import pytest
import torch

from medgen.models import BlindSpotConfig, build_model, predict
from medgen.models.denoise.blindspot import BlindSpotMasker

pytestmark = pytest.mark.slow


def _phantoms(n: int, g: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    out = []
    for _ in range(n):
        c = torch.rand(2, generator=g) * 0.8 - 0.4
        r = 0.3 + 0.3 * torch.rand(1, generator=g)
        out.append(((xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r ** 2).float() * 0.6 + 0.2 * (xx + 1) / 2)
    return torch.stack(out)[:, None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(((a - b) ** 2).mean()))


def _train(cfg: dict, steps: int, mode: str = "supervised") -> tuple[float, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = build_model(cfg)
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        masker = BlindSpotMasker(BlindSpotConfig(enabled=True, fraction=0.05, mode="neighbour"))
        for _ in range(steps):
            clean = _phantoms(8, g)
            noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
            if mode == "supervised":
                out = model(noisy)
                if isinstance(out, tuple):
                    rec, mu, sigma = out
                    kl = 0.5 * (mu ** 2 + sigma ** 2 - torch.log(sigma ** 2) - 1).flatten(1).sum(1)
                    loss = (rec - clean).abs().mean() + 1e-6 * kl.mean()
                else:
                    loss = ((out - clean) ** 2).mean()
            else:  # blind-spot: the clean image is never seen
                inp, mask = masker(noisy, g)
                loss = masker.loss(model(inp), noisy, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        clean = _phantoms(8, torch.Generator().manual_seed(99))
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
        return _psnr(noisy, clean), _psnr(predict(model, noisy), clean)
    finally:
        torch.set_num_threads(threads)


UNET = {"name": "unet", "spatial_dims": 2, "channels": [16, 32, 64], "num_res_units": 1}
VAE = {"name": "vae", "spatial_dims": 2, "channels": [16, 32, 32], "norm_num_groups": 8,
       "latent_channels": 8}


def test_unet_supervised_gains_4db():
    before, after = _train(UNET, 150)
    assert after > before + 4.0, (before, after)


def test_vae_supervised_gains_4db():
    before, after = _train(VAE, 600)
    assert after > before + 4.0, (before, after)


def test_unet_blindspot_gains_without_clean_targets():
    before, after = _train(UNET, 150, mode="blindspot")
    assert after > before + 1.0, (before, after)
