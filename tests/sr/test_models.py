"""The SR generator, its upsampling, losses, degradation pairs and baselines (tiny, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.errors import ConfigError
from medgen.models import build_model, load_model_config, predict

TINY = {"name": "rrdb_sr", "features": 8, "growth": 4, "num_blocks": 1, "dense_blocks": 1,
        "dense_layers": 2}


@pytest.mark.parametrize("dims,factors,shape", [
    (3, [1, 1, 2], (5, 6, 4)), (3, [1, 1, 4], (5, 6, 3)), (3, [2, 2, 1], (4, 3, 5)),
    (3, [3, 1, 2], (3, 4, 5)), (2, [1, 4], (6, 5)), (2, [2, 2], (5, 5))])
@pytest.mark.parametrize("upsample", ["pixelshuffle", "interp_conv"])
def test_output_shapes_per_axis(dims, factors, shape, upsample):
    m = build_model({**TINY, "spatial_dims": dims, "scale_factors": factors, "upsample": upsample})
    assert m.scale_factors == tuple(factors)
    x = torch.rand(2, 1, *shape)
    y = predict(m, x)
    assert y.shape == (2, 1, *[s * f for s, f in zip(shape, factors)])


def test_axis_shuffle_places_channel_groups():
    from medgen.models.sr.generator import axis_shuffle

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 2 * 3, 4, 5)  # C=2, f=3
    y = axis_shuffle(x, axis=1, factor=3)
    assert y.shape == (1, 2, 4, 15)
    for c in range(2):
        for r in range(3):
            assert torch.equal(y[0, c, :, r::3], x[0, c * 3 + r])


def test_icnr_starts_as_nearest_neighbour():
    """ICNR: every sub-position of a shuffled voxel gets the same value at init."""
    from medgen.models.sr.generator import UpsampleStage

    st = UpsampleStage(3, 4, axis=2, factor=2, mode="pixelshuffle")
    y = st(torch.randn(1, 4, 3, 3, 3))
    assert torch.allclose(y[..., 0::2], y[..., 1::2])


def test_global_skip_is_cell_centred_interpolation():
    """linear skip == SimpleITK linear on the cell-centred grid (interior); the cubic/learned
    polyphase skip reproduces linear ramps and is close to SimpleITK's cubic B-spline."""
    from medgen.models.sr.degrade import interpolate_baseline

    m = build_model({**TINY, "scale_factors": [1, 1, 4], "skip": "linear"})
    x = torch.rand(1, 1, 4, 4, 6)
    skip = m.skip(x)[0, 0].numpy()
    ref = interpolate_baseline(x[0, 0].numpy(), [1, 1, 4], "linear")
    inner = slice(2, 4 * 6 - 2)  # between the first and last input centres
    np.testing.assert_allclose(skip[..., inner], ref[..., inner], atol=1e-5)
    # an untrained generator stays close to its skip
    assert float((predict(m, x)[0, 0] - m.skip(x)[0, 0]).abs().mean()) < 0.1
    for mode in ("cubic", "learned"):
        for factors in ([1, 1, 4], [2, 3, 1]):
            m = build_model({**TINY, "scale_factors": factors, "skip": mode})
            i, j, k = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in (9, 8, 10)],
                                     indexing="ij")
            ramp = (0.5 * i + 0.25 * j - 0.3 * k)[None, None]
            up = m.skip(ramp)[0, 0]
            pos = [(torch.arange(n * f, dtype=torch.float32) + 0.5) / f - 0.5
                   for n, f in zip((9, 8, 10), factors)]
            ii, jj, kk = torch.meshgrid(*pos, indexing="ij")
            want = 0.5 * ii + 0.25 * jj - 0.3 * kk
            core = tuple(slice(2 * f, -2 * f) if f > 1 else slice(None) for f in factors)
            torch.testing.assert_close(up[core], want[core], atol=1e-4, rtol=0)
    smooth = torch.from_numpy(np.sin(np.linspace(0, 3, 12))[None, None, None, None, :].repeat(
        4, 2).repeat(4, 3).astype(np.float32))
    m = build_model({**TINY, "scale_factors": [1, 1, 2], "skip": "cubic"})
    cub = m.skip(smooth)[0, 0].numpy()
    bsp = interpolate_baseline(smooth[0, 0].numpy(), [1, 1, 2], "bspline")
    np.testing.assert_allclose(cub[..., 4:-4], bsp[..., 4:-4], atol=1e-2)
    assert sum(p.numel() for n, p in m.named_parameters() if "poly" in n) == 0  # fixed
    learned = build_model({**TINY, "scale_factors": [1, 1, 2], "skip": "learned"})
    assert any("poly" in n for n, _ in learned.named_parameters())


def test_configs_and_errors():
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*/sr-*.yaml")):
        if p.parent.name in ("model", "tiny"):
            cfg = load_model_config(p)
            assert cfg.name == "rrdb_sr"
    with pytest.raises(ConfigError, match="scale_factors"):
        build_model({**TINY, "spatial_dims": 3, "scale_factors": [1, 2]})
    with pytest.raises(ConfigError, match="factor > 1"):
        build_model({**TINY, "scale_factors": [1, 1, 1]})
    with pytest.raises(ConfigError, match="did you mean 'num_blocks'"):
        build_model({**TINY, "num_block": 2})


def test_deterministic_inference_same_bytes():
    torch.manual_seed(0)
    m = build_model({**TINY, "scale_factors": [1, 1, 2]})
    x = torch.rand(1, 1, 6, 5, 4)
    a, b = predict(m, x), predict(m, x)
    assert a.numpy().tobytes() == b.numpy().tobytes()


def test_losses():
    from medgen.models.sr.config import SRDiscriminatorConfig
    from medgen.models.sr.losses import AdversarialLoss, build_discriminator, frequency_loss

    a = torch.rand(2, 1, 16, 16, 16)
    assert float(frequency_loss(a, a)) == 0.0
    blurred = torch.nn.functional.avg_pool3d(a, 3, 1, 1)
    assert float(frequency_loss(blurred, a)) > 0
    for scales in (1, 2):
        d = build_discriminator(SRDiscriminatorConfig(channels=4, num_layers_d=1, scales=scales), 3)
        for crit in ("least_squares", "hinge"):
            adv = AdversarialLoss(crit)
            g = adv.generator(d, blurred)
            dl = adv.discriminator(d, blurred, a)
            assert torch.isfinite(g) and torch.isfinite(dl)


def test_perceptual_loss_needs_local_weights(tmp_path):
    from monai.networks.nets import resnet10
    from safetensors.torch import save_file

    from medgen.errors import ReadError
    from medgen.models.sr.losses import LocalPerceptualLoss

    with pytest.raises(ReadError, match="nothing is downloaded"):
        LocalPerceptualLoss(tmp_path / "missing.safetensors")
    net = resnet10(spatial_dims=3, n_input_channels=1, shortcut_type="A", bias_downsample=False,
                   feed_forward=False)
    path = tmp_path / "resnet10.safetensors"  # what a user converts from MedicalNet's weights
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    pl = LocalPerceptualLoss(path)
    a = torch.rand(1, 1, 16, 16, 16)
    assert float(pl(a, a)) == 0.0
    b = (a + 0.2 * torch.rand_like(a)).requires_grad_()
    loss = pl(b, a)
    loss.backward()
    assert float(loss.detach()) > 0 and b.grad is not None
    bad = tmp_path / "bad.safetensors"
    save_file({"foo": torch.zeros(1)}, str(bad))
    with pytest.raises(ReadError, match="ResNet-10"):
        LocalPerceptualLoss(bad)


def test_thick_slice_pairs_are_profile_averages():
    """LR = slice-profile average (not subsampling), on the cell-centred grid."""
    from medgen.models.sr.degrade import make_lr

    k = torch.arange(16, dtype=torch.float32)
    ramp = k.expand(1, 3, 3, 16).contiguous()
    lr, recs = make_lr(ramp, [1, 1, 4], profile="rect")
    assert lr.shape == (1, 3, 3, 4) and recs[0]["name"] == "thick_slice"
    np.testing.assert_allclose(lr[0, 0, 0].numpy(), [1.5, 5.5, 9.5, 13.5], atol=1e-5)  # means
    spikes = torch.zeros(1, 2, 2, 16)
    spikes[..., 1::4] = 1.0  # plain subsampling at 0, 4, 8... would see none of them
    lr, _ = make_lr(spikes, [1, 1, 4], profile="rect")
    np.testing.assert_allclose(lr.numpy(), 0.25, atol=1e-6)


def test_kspace_pairs_follow_cell_centred_convention():
    """A band-limited cosine: LR sample m equals the HR signal at index m f + (f - 1)/2."""
    from medgen.models.sr.degrade import make_lr

    n, f = 32, 2
    i = np.arange(n)
    sig = 1.5 + np.cos(2 * np.pi * 3 * i / n)
    hr = torch.tensor(np.broadcast_to(sig[:, None, None], (n, 4, 4)).copy(), dtype=torch.float32)[None]
    lr, recs = make_lr(hr, [f, 1, 1], kspace_axes=[0])
    assert lr.shape == (1, n // f, 4, 4) and recs[0]["name"] == "kspace_truncation"
    m = np.arange(n // f)
    want = 1.5 + np.cos(2 * np.pi * 3 * (m * f + (f - 1) / 2) / n)
    np.testing.assert_allclose(lr[0, :, 0, 0].numpy(), want, atol=1e-4)


def test_bspline_baseline_reproduces_smooth_signals():
    from medgen.models.sr.degrade import interpolate_baseline

    lr = np.full((3, 3, 5), 2.0, np.float32)
    for method in ("bspline", "linear"):
        np.testing.assert_allclose(interpolate_baseline(lr, [1, 1, 2], method), 2.0, atol=1e-5)
    k = np.arange(5, dtype=np.float32)
    lr = np.broadcast_to(k, (3, 3, 5)).copy()
    up = interpolate_baseline(lr, [1, 1, 2], "linear")
    want = (np.arange(10) - 0.5) / 2  # HR index m sits at LR index (m - 1/2) / 2
    np.testing.assert_allclose(up[1, 1, 1:-1], want[1:-1], atol=1e-5)
