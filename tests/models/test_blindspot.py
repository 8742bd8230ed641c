"""Blind-spot masking (Noise2Void / Noise2Self) properties."""

from __future__ import annotations

import pytest
import torch

from medgen.models import BlindSpotConfig, build_model
from medgen.models.denoise.blindspot import (
    BlindSpotMasker,
    blindspot_cell,
    blindspot_mask,
    masked_loss,
)


@pytest.mark.parametrize("shape", [(2, 1, 32, 32, 32), (3, 2, 63, 49)])
@pytest.mark.parametrize("mode", ["neighbour", "mean"])
def test_mask_fraction_stratification_and_untouched_voxels(shape, mode):
    x = torch.randn(shape)
    x0 = x.clone()
    d = len(shape) - 2
    m, mask = blindspot_mask(x, 0.02, mode=mode, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x0), "input not modified"
    assert mask.shape == x.shape and mask.dtype == torch.bool
    cell = blindspot_cell(0.02, d)
    assert mask.float().mean().item() == pytest.approx(1 / cell ** d)
    # stratified: exactly one masked voxel per cell, per sample
    vox = mask[:, 0]
    per_cell = vox.unfold(1, cell, cell).unfold(2, cell, cell)
    if d == 3:
        per_cell = per_cell.unfold(3, cell, cell)
    assert (per_cell.flatten(1 + d).sum(-1) == 1).all()
    # channels share the mask; unmasked voxels untouched; masked ones changed
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    assert torch.equal(m[~mask], x[~mask])
    assert (m[mask] != x[mask]).float().mean() > 0.99


def test_mask_reproducible_with_seed():
    x = torch.randn(2, 1, 16, 16, 16)
    a = blindspot_mask(x, 0.05, generator=torch.Generator().manual_seed(7))
    b = blindspot_mask(x, 0.05, generator=torch.Generator().manual_seed(7))
    c = blindspot_mask(x, 0.05, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # samples in a batch get different masks
    assert not torch.equal(a[1][0], a[1][1])


def test_neighbour_values_come_from_the_neighbourhood():
    # distinct value per voxel: each replacement must be a voxel within the radius, never itself
    n = 12
    x = torch.arange(n ** 3, dtype=torch.float32).reshape(1, 1, n, n, n)
    m, mask = blindspot_mask(x, 0.05, mode="neighbour", radius=2,
                             generator=torch.Generator().manual_seed(1))
    idx = mask[0, 0].nonzero()
    src = m[0, 0][mask[0, 0]].long()
    src_idx = torch.stack([src // (n * n), (src // n) % n, src % n], -1)
    dist = (src_idx - idx).abs()
    assert (dist.max(-1).values <= 2).all() and (dist.sum(-1) > 0).all()


def test_mean_mode_is_the_donut_mean():
    x = torch.randn(1, 1, 9, 9)
    m, mask = blindspot_mask(x, 0.1, mode="mean", radius=1, generator=torch.Generator().manual_seed(2))
    i, j = [int(v) for v in mask[0, 0].nonzero()[0]]
    if 0 < i < 8 and 0 < j < 8:
        win = x[0, 0, i - 1:i + 2, j - 1:j + 2]
        expect = (win.sum() - x[0, 0, i, j]) / 8
        assert m[0, 0, i, j].item() == pytest.approx(expect.item(), abs=1e-5)


def test_loss_only_on_masked_voxels():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    _, mask = blindspot_mask(x, 0.05, generator=torch.Generator().manual_seed(0))
    pred = torch.zeros_like(x, requires_grad=True)
    loss = masked_loss(pred, x, mask, "l2")
    assert loss.item() == pytest.approx(x[mask].pow(2).mean().item(), rel=1e-5)
    loss.backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).all()
    other = x.clone()
    other[~mask] += 100.0
    assert masked_loss(pred, other, mask).item() == pytest.approx(loss.item())
    empty = torch.zeros_like(mask)
    assert masked_loss(pred, x, empty).item() == 0.0


def test_self_supervised_step_with_a_registered_model():
    torch.manual_seed(0)
    model = build_model({"name": "unet", "spatial_dims": 2, "channels": [4, 8], "num_res_units": 1})
    masker = BlindSpotMasker(BlindSpotConfig(enabled=True, fraction=0.05, mode="mean"))
    noisy = torch.randn(2, 1, 16, 16)
    inp, mask = masker(noisy, torch.Generator().manual_seed(0))
    loss = masker.loss(model(inp), noisy, mask)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError):
        blindspot_mask(torch.zeros(4, 4), 0.1)
    with pytest.raises(ValueError):
        blindspot_mask(torch.zeros(1, 1, 4, 4), 0.9)
    with pytest.raises(ValueError):
        blindspot_mask(torch.zeros(1, 1, 4, 4), 0.1, mode="zero")
