"""The per-volume predictor: normalisation, sliding window, geometry, plug-in predict steps,
planner arithmetic and out-of-memory step-down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.infer.planner import n_windows
from medgen.infer.predictor import PredictorSpec, VolumePredictor
from medgen.infer.settings import InferenceSettings
from medgen.io import Volume
from medgen.io.geometry import scaled_geometry
from medgen.utils.device import resolve_device

from .infer_helpers import make_checkpoint, phantom

CPU1 = InferenceSettings(device="cpu", threads=1)
REPO = Path(__file__).resolve().parents[2]


def _vol(shape=(24, 20, 12), seed=0, spacing=(1.0, 1.1, 1.5)) -> Volume:
    direction = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    return Volume(phantom(shape, seed), Volume.make_affine(spacing, direction, [-10.0, 5.0, 20.0]),
                  {"modality": "MR"})


class IdentityPredictor(VolumePredictor):
    """Plug-in predict step: the identity. Normalise -> blend -> denormalise must give the input."""

    def predict_fn(self, x):
        return x.clone()


class NearestUpsampleK(VolumePredictor):
    """A super-resolution-shaped predict step: x2 along k (nearest), scale factor (1, 1, 2)."""

    task, verb = "upscale", "upscaled"

    def scale_factor(self):
        return (1.0, 1.0, float(self.options.get("factor", 2)))

    def predict_fn(self, x):
        f = int(self.options.get("factor", 2))
        return F.interpolate(x, scale_factor=(1, 1, f), mode="nearest")


def test_identity_round_trip_through_normalisation_and_gaussian_blending(tiny_ckpt):
    p = IdentityPredictor.from_checkpoint(tiny_ckpt, CPU1.replace(roi_size=16))
    vol = _vol()
    out = p(vol)
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.array, vol.array, rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(out.affine, vol.affine)
    assert p.stats.windows > 1  # really went through several windows
    assert p.notes.plan["roi"] == [16, 16, 12] and p.notes.plan["sw_batch_size"] == 1
    # the planner's own choice for a small volume: one window over all of it
    auto = IdentityPredictor.from_checkpoint(tiny_ckpt, CPU1)
    np.testing.assert_allclose(auto(vol).array, vol.array, rtol=1e-5, atol=1e-2)
    assert auto.notes.plan["roi"] == [24, 20, 12] and auto.stats.windows == 1


def test_denoiser_output_is_deterministic_and_keeps_geometry(tiny_ckpt):
    p = PredictorSpec.make(tiny_ckpt, CPU1).build()
    vol = _vol(seed=3)
    a = p(vol)
    b = p(vol)
    assert a.array.dtype == np.float32 and a.shape == vol.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.affine, vol.affine)
    assert not np.allclose(a.array, vol.array)  # the (random) network did something
    # residual UNet near init: output stays in the input's intensity range (denormalised)
    assert abs(float(a.array.mean()) - float(vol.array.mean())) < 0.5 * float(vol.array.std())


def test_plugged_predict_step_with_scale_factor_gives_same_world_extent(tiny_ckpt):
    import SimpleITK as sitk

    p = NearestUpsampleK.from_checkpoint(tiny_ckpt, CPU1, options={"factor": 2})
    vol = _vol(shape=(20, 16, 9))
    out = p(vol)
    assert out.shape == (20, 16, 18)
    np.testing.assert_allclose(out.spacing, vol.spacing * [1, 1, 0.5])
    # the box spanned by voxel edges is the same in world space
    def box(v):
        n = np.array(v.shape, float)
        corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5)
                            for c in (-0.5, n[2] - 0.5)])
        return np.sort(v.world(corners), axis=0)
    np.testing.assert_allclose(box(out), box(vol), atol=1e-9)
    # nearest x2 along k then identity network: every input slice appears twice
    np.testing.assert_allclose(out.array[:, :, 0::2], vol.array, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(out.array[:, :, 1::2], vol.array, rtol=1e-5, atol=1e-2)
    # SimpleITK agrees on the geometry of the written file
    img = out.to_sitk()
    assert img.GetSize() == (20, 16, 18)
    assert np.allclose(img.GetDirection(), vol.to_sitk().GetDirection())
    assert isinstance(img, sitk.Image)
    assert p.describe()["scale_factor"] == [1.0, 1.0, 2.0]


def test_scaled_geometry_identity_and_inverse():
    aff = Volume.make_affine([0.7, 0.8, 3.0], None, [1.0, 2.0, 3.0])
    shape, a2 = scaled_geometry((10, 12, 8), aff, 1)
    assert shape == (10, 12, 8) and np.array_equal(a2, aff)
    shape4, a4 = scaled_geometry((10, 12, 8), aff, (1, 1, 4))
    assert shape4 == (10, 12, 32)
    back, a_back = scaled_geometry(shape4, a4, (1, 1, 0.25))
    assert back == (10, 12, 8)
    np.testing.assert_allclose(a_back, aff, atol=1e-12)


def test_two_d_model_runs_slice_wise_on_a_volume(tmp_path):
    ck = make_checkpoint(tmp_path / "u2d", config="configs/tiny/unet-tiny-2d.yaml",
                         patch_size=(32, 32))
    p = PredictorSpec.make(ck, CPU1).build()
    vol = _vol(shape=(40, 36, 5))
    out = p(vol)
    assert out.shape == vol.shape
    assert p.notes.plan["roi"] == [40, 36, 1]  # whole slices, one at a time
    # slice-wise: each output slice depends only on its own input slice
    vol2 = Volume(vol.array.copy(), vol.affine, vol.meta)
    vol2.array[:, :, 4] = 0.0
    vol2.array[0, 0, 4] = 1.0
    out2 = p(vol2)
    # normalisation is per volume, so compare after re-normalising: slices 0..3 keep their order
    assert np.corrcoef(out.array[:, :, :4].ravel(), out2.array[:, :, :4].ravel())[0, 1] > 0.999


def test_spacing_mismatch_warns_or_resamples(tmp_path, caplog):
    ck = make_checkpoint(tmp_path / "sp", expected_spacing=[1.0, 1.0, 1.0])
    vol = _vol(shape=(20, 16, 8), spacing=(1.0, 1.0, 2.0))
    # smooth along k (a linear ramp), so resampling there and back is exact up to float error
    vol.array[:] = vol.array[:, :, :1] * np.linspace(0.5, 1.5, 8)[None, None, :]
    p = IdentityPredictor.from_checkpoint(ck, CPU1)
    with caplog.at_level("WARNING", logger="medgen.infer"):
        out = p(vol)
    assert p.notes.spacing_mismatch and not p.notes.resampled
    assert any("--resample" in r.getMessage() for r in caplog.records)
    assert out.shape == vol.shape
    pr = IdentityPredictor.from_checkpoint(ck, CPU1.replace(resample=True))
    out_r = pr(vol)
    assert pr.notes.resampled and out_r.shape == vol.shape
    np.testing.assert_allclose(out_r.affine, vol.affine)
    # identity model + linear resampling there and back: a linear ramp comes back unchanged
    # except at the two edge slices (nearest-neighbour extrapolation there)
    err = np.abs(out_r.array - vol.array)[:, :, 1:-1].max() / np.abs(vol.array).max()
    assert err < 1e-3


def test_dimensions_are_refused_by_name_never_run_silently(tiny_ckpt, tmp_path, nibabel_data):
    """13.4: a 4D series, a 2D image through a 3D model and a slice in the wrong plane are
    refused with a line saying what they are; a slice-wise model takes a 2D image."""
    from medgen.infer.errors import UnsuitableInputError
    from medgen.io.nifti import read_nifti

    p = PredictorSpec.make(tiny_ckpt, CPU1).build()
    series = read_nifti(nibabel_data / "example4d.nii.gz")  # nibabel's real 4D series
    assert series.array.ndim == 4 and series.array.shape[3] > 1
    with pytest.raises(UnsuitableInputError, match=r"4D input \(128x96x24x2\)"):
        p(series)
    flat = Volume(phantom((64, 64, 1), 1), np.eye(4))
    with pytest.raises(UnsuitableInputError, match=r"2D image \(64x64x1\) refused: this is a 3D model"):
        p(flat)
    ck2 = make_checkpoint(tmp_path / "u2d", config="configs/tiny/unet-tiny-2d.yaml", patch_size=(32, 32))
    p2 = PredictorSpec.make(ck2, CPU1).build()
    out = p2(flat)
    assert out.shape == (64, 64, 1) and np.isfinite(out.array).all()
    with pytest.raises(UnsuitableInputError, match="single slice along axis i"):
        p2(Volume(phantom((1, 64, 64), 1), np.eye(4)))
    cfg = tmp_path / "two-channel.yaml"
    cfg.write_text((REPO / "configs/tiny/unet-tiny-3d.yaml").read_text()
                   .replace("in_channels: 1", "in_channels: 2").replace("out_channels: 1", "out_channels: 2"))
    p3 = PredictorSpec.make(make_checkpoint(tmp_path / "u2c", config=str(cfg)), CPU1).build()
    with pytest.raises(UnsuitableInputError, match="model takes 2 channel"):
        p3(Volume(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)))


class OOMBelow(VolumePredictor):
    """Raises CUDA's out-of-memory error for batches larger than ``max_batch`` windows or windows
    larger than ``max_voxels`` - the error type the step-down ladder reacts to."""

    def predict_fn(self, x):
        if x.shape[0] > self.options["max_batch"] or x[0, 0].numel() > self.options["max_voxels"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x.clone()


def test_out_of_memory_steps_down_batch_then_window(tiny_ckpt):
    settings = CPU1.replace(sw_batch_size=8, roi_size=(32, 32, 16))
    p = OOMBelow.from_checkpoint(tiny_ckpt, settings, options={"max_batch": 1, "max_voxels": 16**3})
    vol = _vol(shape=(40, 40, 20))
    out = p(vol)
    np.testing.assert_allclose(out.array, vol.array, rtol=1e-5, atol=1e-2)
    assert p.notes.plan["sw_batch_size"] == 1
    assert p.notes.plan["roi"] == [16, 16, 16]
    assert p.stats.oom_stepdowns == 4  # 8 -> 4 -> 2 -> 1, then 32 -> 16
    # the cap is remembered: the next volume starts at the smaller plan
    n = p.stats.oom_stepdowns
    p(vol)
    assert p.stats.oom_stepdowns == n


def test_out_of_memory_exhausted_is_transient(tiny_ckpt):
    from medgen.infer.errors import TransientInferenceError

    p = OOMBelow.from_checkpoint(tiny_ckpt, CPU1.replace(roi_size=16),
                                 options={"max_batch": 0, "max_voxels": 0})
    with pytest.raises(TransientInferenceError, match="out of GPU memory"):
        p(_vol(shape=(20, 20, 12)))


def test_n_windows_matches_monai():
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for shape, roi in [((100, 80, 40), (64, 64, 32)), ((20, 20, 5), (16, 16, 16))]:
        roi_c = tuple(min(r, s) for r, s in zip(roi, shape))
        scan = _get_scan_interval(shape, roi_c, 3, (0.25,) * 3)
        assert n_windows(shape, roi, 0.25) == len(dense_patch_slices(shape, roi_c, scan))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from medgen.errors import ConfigError

        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.gpu
def test_cuda_matches_cpu_with_planner_and_amp(tiny_ckpt):
    vol = _vol(shape=(64, 64, 48))
    cpu = PredictorSpec.make(tiny_ckpt, CPU1).build()(vol)
    for amp in ("off", "auto"):
        p = PredictorSpec.make(tiny_ckpt, InferenceSettings(device="cuda", amp=amp,
                                                            roi_size=(16, 16, 16))).build()
        out = p(vol)
        assert p.notes.plan["sw_device"].startswith("cuda")
        assert p.notes.cuda_max_allocated_mb > 0
        tol = 1e-3 if amp == "off" else 5e-2
        scale = float(np.abs(vol.array).max())
        assert np.abs(out.array - cpu.array).max() / scale < tol
    # the planner's own choice (window and batch from free memory)
    p = PredictorSpec.make(tiny_ckpt, InferenceSettings(device="cuda")).build()
    p(vol)
    assert p.notes.plan["sw_batch_size"] >= 1 and "B/voxel" in p.notes.plan["reason"]


@pytest.mark.gpu
def test_cuda_out_of_memory_steps_down_instead_of_failing(tiny_ckpt):
    """Cap this process at ~1.5 GiB of the GPU, force a plan far too big for it, and check the
    job still finishes (batch halved, window halved, or stitching moved to the CPU)."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * 2**30 / total), 0)
    try:
        settings = InferenceSettings(device="cuda", amp="off", roi_size=(128, 128, 128),
                                     sw_batch_size=16)
        p = PredictorSpec.make(tiny_ckpt, settings).build()
        vol = _vol(shape=(256, 256, 160))
        out = p(vol)
        assert out.shape == vol.shape and np.isfinite(out.array).all()
        assert p.stats.oom_stepdowns >= 1
        assert (p.notes.plan["sw_batch_size"] < 16 or p.notes.plan["roi"] != [128, 128, 128]
                or p.notes.plan["device"] == "cpu")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
