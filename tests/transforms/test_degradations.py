"""Each degradation changes the image the way it should; records replay bit-identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.transforms import (
    DEGRADATIONS,
    Degradationd,
    EncodeRecordsd,
    RandDegradationd,
    apply_geometry,
    records_of,
    replay,
)
from medgen.transforms import functional as Fn
from medgen.transforms.radon import default_angles, fbp, radon


def _disk(n: int = 64, r: float = 28.0, inside: float = 1.0, outside: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    rr = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    return np.where(rr < r, inside, outside).astype(np.float32)


def _phantom3d(shape=(24, 24, 12), seed=0) -> np.ndarray:
    """Blobs with sharp edges: a small stand-in for an MR image in [0, 1] (2D or 3D shape)."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    x = np.zeros(shape, np.float32)
    for _ in range(4):
        c = rng.uniform(-0.5, 0.5, len(shape))
        x += (sum((gi - ci) ** 2 for gi, ci in zip(g, c, strict=True)) < 0.2).astype(np.float32) * 0.3
    return np.clip(x + 0.1, 0, 1)[None]


def _high_k_fraction(x: np.ndarray, axes=None, cutoff: float = 0.5) -> float:
    """Fraction of spectral energy at normalised radial frequency > ``cutoff`` (1 = Nyquist),
    the radius measured along ``axes`` only."""
    x = np.asarray(x)[0]
    axes = tuple(range(x.ndim)) if axes is None else tuple(axes)
    k = np.abs(np.fft.fftn(x - x.mean())) ** 2
    r2 = np.zeros(x.shape)
    for a in axes:
        f = np.fft.fftfreq(x.shape[a]) / 0.5
        shape = [1] * x.ndim
        shape[a] = -1
        r2 = r2 + f.reshape(shape) ** 2
    return float(k[np.sqrt(r2) > cutoff].sum() / k.sum())


# --- noise ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 32, 32, 16)])
def test_gaussian_std_near_sigma_on_flat_phantom(shape):
    img = np.full(shape, 0.5, np.float32)
    out, geom = Fn.gaussian_noise(img, seed=3, sigma=0.07)
    assert geom is None and out.shape == img.shape and out.dtype == np.float32
    assert abs(out.std() - 0.07) < 0.07 * 0.05
    assert abs(out.mean() - 0.5) < 0.01
    assert np.array_equal(img, np.full(shape, 0.5, np.float32))  # input untouched


def test_rician_bias_on_zero_background_is_positive():
    img = np.zeros((1, 64, 64), np.float32)
    out, _ = Fn.rician_noise(img, seed=5, sigma=0.1)
    assert (out >= 0).all()
    # magnitude of complex N(0, s^2) noise is Rayleigh: mean s * sqrt(pi / 2)
    assert abs(out.mean() - 0.1 * np.sqrt(np.pi / 2)) < 0.01
    # on a bright flat region Rician noise approaches Gaussian with std sigma
    bright, _ = Fn.rician_noise(np.full((1, 64, 64), 1.0, np.float32), seed=5, sigma=0.05)
    assert abs(bright.std() - 0.05) < 0.005


def test_radon_fbp_round_trip():
    x = _disk(61, 20.0)
    x[20:28, 30:38] = 2.0
    ang = default_angles(120)
    rec = fbp(radon(torch.as_tensor(x)[None], ang), ang)[0].numpy()
    inner = _disk(61, 17.0) > 0
    assert np.abs(rec - x)[inner].mean() < 0.05
    # line integral of a disk of radius r through the centre is its diameter
    sino = radon(torch.as_tensor(_disk(61, 20.0))[None], ang)[0]
    assert abs(float(sino[:, 30].mean()) - 40.0) < 1.0


def test_ct_lowdose_noise_grows_as_dose_falls():
    img = _disk(64, 28.0, inside=0.0, outside=-1000.0)[None]  # water cylinder in air, HU
    roi = _disk(64, 12.0) > 0
    stds = []
    for dose in (0.5, 0.25, 0.1):
        out, _ = Fn.ct_lowdose(img, seed=11, dose=dose, pixel_mm=1.0)
        d = (out - img)[0]
        assert abs(d[roi].mean()) < 5.0  # unbiased in HU
        stds.append(float(d[roi].std()))
    assert stds[0] < stds[1] < stds[2]
    # quantum noise: std ~ 1 / sqrt(dose)
    assert 1.6 < stds[2] / stds[0] < 3.0
    # coarse forward projection (only sets the per-ray noise level): same noise level
    fast, _ = Fn.ct_lowdose(img, seed=11, dose=0.25, pixel_mm=1.0, projection_scale=2)
    assert abs(float((fast - img)[0][roi].std()) / stds[1] - 1) < 0.2
    # noise insertion on a "real" scan: no noise at full dose, more as dose falls
    same, _ = Fn.ct_lowdose(img, seed=1, dose=1.0, mode="insert")
    assert np.allclose(same, img, atol=1e-3)
    ins = [float((Fn.ct_lowdose(img, seed=2, dose=a, mode="insert")[0] - img)[0][roi].std())
           for a in (0.5, 0.1)]
    assert ins[0] < ins[1]


def test_ct_lowdose_on_real_ct_slice_3d_stack(pydicom_files):
    """pydicom's CT_small.dcm (real CT, HU after rescale), stacked as a 3-slice volume."""
    import pydicom

    ds = pydicom.dcmread(pydicom_files / "CT_small.dcm")
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)
    vol = np.stack([hu, hu, hu], axis=-1)[None]  # (1, I, J, K), axial slices along K
    t = RandDegradationd("noisy", "ct_lowdose", params={"dose": 0.25, "n_angles": 180})
    t.set_random_state(7)
    s = t({"noisy": torch.as_tensor(vol)})
    out = s["noisy"]
    assert isinstance(out, torch.Tensor) and out.shape == vol.shape
    diff = out.numpy() - vol
    assert 5 < diff.std() < 200
    # each slice gets its own noise realisation
    assert not np.allclose(diff[..., 0], diff[..., 1])
    rec = s["degradations"][0]
    assert rec["params"]["pixel_mm"] == 1.0 and rec["params"]["n_angles"] == 180
    assert torch.equal(replay(json.dumps(s["degradations"]), torch.as_tensor(vol)), out)


# --- k-space --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 48, 48), (1, 24, 24, 12)])
def test_gibbs_and_truncation_reduce_high_k_energy(shape):
    img = _phantom3d(shape[1:])
    base = _high_k_fraction(img)
    g, _ = Fn.gibbs(img, seed=0, alpha=0.6)
    assert _high_k_fraction(g) < base * 0.6
    axes = (0, 1)
    tz, geom = Fn.kspace_truncation(img, seed=0, factor=2.0, axes=[0, 1], mode="zerofill")
    assert geom is None and tz.shape == img.shape
    assert _high_k_fraction(tz, axes, cutoff=0.55) < 0.1 * _high_k_fraction(img, axes, cutoff=0.55) + 1e-3
    tc, geom = Fn.kspace_truncation(img, seed=0, factor=2.0, axes=[0, 1], mode="crop")
    assert tc.shape[1:3] == (shape[1] // 2, shape[2] // 2)
    assert geom["index_scale"][:2] == [2.0, 2.0]
    assert abs(tc.mean() - img.mean()) < 0.02


def test_kspace_spike_puts_energy_at_its_location():
    img = _phantom3d((32, 32))
    loc = (4, 20)
    out, _ = Fn.kspace_spike(img, seed=0, loc=loc, k_intensity=12.0)
    k_in = np.abs(np.fft.fftshift(np.fft.fft2(img[0])))
    k_out = np.abs(np.fft.fftshift(np.fft.fft2(out[0])))
    assert k_out[loc] > 50 * max(k_in[loc], 1e-3)
    assert not np.allclose(out, img)


def test_ghosting_makes_shifted_copies_along_phase_encode():
    n = 64
    img = np.zeros((1, n, n), np.float32)
    img[0, 28:36, 28:36] = 1.0
    out, _ = Fn.ghosting(img, seed=0, num_ghosts=4, intensity=0.8, pe_axis=0, restore=0.0)
    ghost_pe = out[0, 28 + n // 4: 36 + n // 4, 28:36].mean()  # FOV/4 along phase-encode
    ghost_ro = out[0, 28:36, 28 + n // 4: 36 + n // 4].mean()  # same shift along read-out
    assert ghost_pe > 0.05 and ghost_ro < 0.01
    assert out[0, 28:36, 28:36].mean() < 1.0  # energy moved out of the object


def test_motion_zero_is_identity_and_motion_changes_lines():
    img = _phantom3d((24, 24, 12))
    still, _ = Fn.motion(img, seed=0, times=[0.5], rotations=[[0, 0, 0]],
                         translations=[[0, 0, 0]], pe_axis=0)
    assert np.allclose(still, img, atol=1e-5)
    moved, _ = Fn.motion(img, seed=0, times=[0.5], rotations=[[0, 0, 5]],
                         translations=[[2.0, -1.5, 0.0]], pe_axis=0)
    assert np.abs(moved - img).mean() > 0.01
    # 2D with one rotation angle
    img2 = img[..., 6]
    m2, _ = Fn.motion(img2, seed=0, times=[0.3, 0.7], rotations=[[3.0], [-2.0]],
                      translations=[[1.0, 0.0], [0.0, 2.0]], pe_axis=1)
    assert m2.shape == img2.shape and np.abs(m2 - img2).mean() > 0.005


def test_bias_field_is_smooth_positive_multiplier():
    img = np.full((1, 20, 20, 10), 2.0, np.float32)
    n = len(Fn.bias_field_terms(3, 2))
    zero, _ = Fn.bias_field(img, seed=0, degree=2, coeffs=[0.0] * n)
    assert np.allclose(zero, img)
    out, _ = Fn.bias_field(img, seed=0, degree=2, coeffs=list(np.linspace(-0.2, 0.2, n)))
    ratio = out / img
    assert (ratio > 0).all() and ratio.std() > 0.01
    # log field is a polynomial of total degree 2: third differences vanish along every axis
    for ax in (1, 2, 3):
        assert np.abs(np.diff(np.log(ratio), n=3, axis=ax)).max() < 1e-4
    with pytest.raises(ValueError, match="coefficients"):
        Fn.bias_field(img, seed=0, degree=2, coeffs=[0.1])


# --- slice thickness ------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4])
def test_thick_slice_keeps_mean_blurs_only_along_axis(factor):
    rng = np.random.default_rng(1)
    x = rng.random((1, 16, 16, 32)).astype(np.float32)
    y, geom = Fn.thick_slice(x, seed=0, factor=factor, axis=-1)
    assert y.shape == (1, 16, 16, 32 // factor)
    assert geom == {"index_scale": [1.0, 1.0, float(factor)],
                    "index_offset": [0.0, 0.0, (factor - 1) / 2]}
    assert abs(y.mean() - x.mean()) < 0.01
    # rectangular profile, integer factor: exactly the mean of `factor` adjacent thin slices
    r, _ = Fn.thick_slice(x, seed=0, factor=factor, axis=-1, profile="rect")
    assert np.allclose(r, x.reshape(1, 16, 16, -1, factor).mean(-1), atol=1e-6)
    # image constant along the axis: unchanged in-plane, whatever the profile
    flat = np.repeat(x[..., :1], 32, axis=-1)
    yf, _ = Fn.thick_slice(flat, seed=0, factor=factor, axis=-1, resample="original")
    assert np.allclose(yf, flat, atol=1e-5)
    # image varying only along the axis stays constant in-plane, and loses its high frequencies
    ramp = np.broadcast_to(rng.random(32).astype(np.float32), (1, 16, 16, 32)).copy()
    yr, g2 = Fn.thick_slice(ramp, seed=0, factor=factor, axis=-1, resample="original")
    assert g2 is None and yr.shape == ramp.shape
    assert np.allclose(yr, yr[:, :1, :1, :], atol=1e-6)
    assert _high_k_fraction(yr, axes=(2,), cutoff=0.55) < 0.5 * _high_k_fraction(ramp, axes=(2,), cutoff=0.55)


def test_thick_slice_updates_metatensor_affine():
    from monai.data import MetaTensor

    aff = np.diag([0.8, 0.8, 1.0, 1.0])
    aff[:3, 3] = [10.0, -5.0, 20.0]
    mt = MetaTensor(torch.rand(1, 8, 8, 16), affine=torch.as_tensor(aff))
    out, geom = Fn.thick_slice(mt, seed=0, factor=4, axis=2)
    assert isinstance(out, MetaTensor) and out.shape == (1, 8, 8, 4)
    new = out.affine.numpy()
    assert np.allclose(np.linalg.norm(new[:3, :3], axis=0), [0.8, 0.8, 4.0])
    assert np.allclose(new[:3, 3], [10.0, -5.0, 20.0 + 1.5])  # centre of the first thick slice
    assert np.allclose(new, apply_geometry(aff, geom))
    assert np.allclose(mt.affine.numpy(), aff)  # input untouched


# --- records and replay ---------------------------------------------------------------------------
def _input_for(name: str, ndim: int):
    if name == "ct_lowdose":
        img = _disk(40, 16.0, 40.0, -1000.0)
        return img[None] if ndim == 2 else np.stack([img] * 2, -1)[None]
    return _phantom3d((20, 20)) if ndim == 2 else _phantom3d((16, 16, 8))


FAST = {"ct_lowdose": {"n_angles": 60}}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", sorted(DEGRADATIONS.names()))
def test_every_degradation_replays_bit_identically(name, ndim):
    img = _input_for(name, ndim)
    t = RandDegradationd("noisy", name, prob=1.0, params=FAST.get(name))
    t.set_random_state(123)
    s = t({"noisy": img.copy(), "image": img})
    assert np.array_equal(s["image"], img)
    recs = s["degradations"]
    assert len(recs) == 1 and recs[0]["name"] == name and recs[0]["keys"] == ["noisy"]
    assert isinstance(recs[0]["seed"], int)
    text = json.dumps(recs)  # records are plain JSON
    again = replay(json.loads(text), img)
    assert np.array_equal(again, s["noisy"])
    assert not np.array_equal(s["noisy"], img)
    # torch input gives torch output, same values
    tt = replay(text, torch.as_tensor(img))
    assert isinstance(tt, torch.Tensor) and np.array_equal(tt.numpy(), s["noisy"])


def test_seeded_determinism_and_probability():
    img = _phantom3d((16, 16, 8))
    a = RandDegradationd("x", "gaussian", params={"sigma": [0.01, 0.2]})
    b = RandDegradationd("x", "gaussian", params={"sigma": [0.01, 0.2]})
    a.set_random_state(9)
    b.set_random_state(9)
    sa, sb = a({"x": img}), b({"x": img})
    assert np.array_equal(sa["x"], sb["x"]) and sa["degradations"] == sb["degradations"]
    sc = a({"x": img})  # next draw differs
    assert sc["degradations"][0]["seed"] != sa["degradations"][0]["seed"]
    assert sc["degradations"][0]["params"]["sigma"] != sa["degradations"][0]["params"]["sigma"]
    never = RandDegradationd("x", "gaussian", prob=0.0)
    s = never({"x": img})
    assert s["x"] is img and "degradations" not in s


def test_records_chain_keys_and_geometry():
    img = _phantom3d((16, 16, 8))
    s = {"image": img, "noisy": img.copy()}
    s = Degradationd("noisy", "bias_field", {"degree": 1, "coeffs": [0.1, 0.2, -0.1, 0.05]},
                     seed=4)(s)
    s = RandDegradationd("noisy", "thick_slice", params={"factor": 2.0})(s)
    s = RandDegradationd("image", "gaussian", params={"sigma": 0.01})(s)
    assert [r["name"] for r in s["degradations"]] == ["bias_field", "thick_slice", "gaussian"]
    assert s["degradations"][1]["geometry"]["index_scale"] == [1.0, 1.0, 2.0]
    assert len(records_of(s, key="noisy")) == 2
    assert np.array_equal(replay(s, img, key="noisy"), s["noisy"])
    assert np.array_equal(replay(s, img, key="image"), s["image"])


def test_encoded_records_collate_and_replay():
    from torch.utils.data import default_collate

    img = _phantom3d((8, 8, 4))
    with_rec = RandDegradationd("x", "gaussian")({"x": img})
    without = {"x": img.copy()}
    enc = EncodeRecordsd()
    batch = default_collate([enc(with_rec), enc(without)])
    assert len(batch["degradations"]) == 2 and batch["degradations"][1] == "[]"
    assert np.array_equal(replay(batch["degradations"][0], img), with_rec["x"])


def test_unknown_degradation_and_parameter_errors():
    from medgen.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'rician'"):
        RandDegradationd("x", "rican")
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        RandDegradationd("x", "gaussian", params={"sigm": 0.1})


def test_relative_noise_level_recorded_as_absolute_sigma():
    img = _phantom3d((16, 16, 8)) * 1000.0
    t = RandDegradationd("x", "rician", params={"sigma": 0.05, "relative": True})
    s = t({"x": img})
    sigma = s["degradations"][0]["params"]["sigma"]
    assert 0.05 * 100 < sigma < 0.05 * 1001
    assert np.array_equal(replay(s, img), s["x"])


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(DEGRADATIONS.names()))
def test_cuda_tensors_stay_on_device_and_replay(name):
    img = torch.as_tensor(_input_for(name, 3)).cuda()
    t = RandDegradationd("x", name, params=FAST.get(name))
    t.set_random_state(1)
    s = t({"x": img})
    assert s["x"].is_cuda
    assert torch.equal(replay(s, img), s["x"])


def test_thick_slice_geometry_fixes_a_volume_affine():
    from medgen.io.volume import Volume

    vol = Volume(np.random.default_rng(0).random((10, 12, 20)).astype(np.float32),
                 Volume.make_affine([0.9, 0.9, 1.0], origin=[5.0, 6.0, 7.0]))
    s = RandDegradationd("x", "thick_slice", params={"factor": 4.0, "axis": 2})({"x": vol.array[None]})
    rec = s["degradations"][0]
    thick = Volume(s["x"][0], apply_geometry(vol.affine, rec["geometry"]))
    assert thick.shape == (10, 12, 5)
    assert np.allclose(thick.spacing, [0.9, 0.9, 4.0])
    # thick slice 0 is centred between thin slices 1 and 2
    assert np.allclose(thick.world([0, 0, 0]), vol.world([0, 0, 1.5]))
