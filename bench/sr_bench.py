"""Benchmark: medgen SR generators vs cubic B-spline and trilinear on held-out real brain volumes.

Data (installed locally, nothing downloaded):
  * nilearn's bundled MNI152 T1 template (ICBM 2009a sym, 1 mm, 197x233x189; the `bench` extra).
    Cropped to the head; split along the anterior-posterior axis j: the **posterior** part
    (j < 113) is the training volume, the **anterior** part (j >= 121, 8 voxels of gap) is held
    out. (Not left/right: the template is symmetric, the hemispheres mirror each other.)
  * Colin27 (`ch2.nii.gz` of Debian's `mricron-data`, 1 mm, a different scan and subject) - a
    central 128^3 block, used only when the package is installed (`apt-get install mricron-data`).
Degradation: through-plane (k) slice-profile averaging (Gaussian, FWHM = factor) then sampling on
the thick grid, x2 and x4 (`medgen.models.sr.degrade.make_lr`, the same model the training pairs
use). Every method sees the same thick volumes (physical units, with their real thick geometry):
  * cubic B-spline: SimpleITK `sitkBSpline` resampling of the thick volume onto the fine grid;
  * trilinear: SimpleITK `sitkLinear`, same grid;
  * medgen `rrdb_sr` (learned polyphase skip + RRDB trunk) trained with L1 only (the ablation) and
    with the GAN recipe (ESRGAN's: an L1 warm-up, then L1 + FFT + LSGAN from it), each through
    `medgen.train` (manifest, Trainer, EMA checkpoint) and applied through
    `medgen.infer.sr.UpscalePredictor` (the `medgen upscale` per-item step).
Training budget: `--budget` seconds of CPU training in total (default 840 s = 14 min, <= 15 min),
split equally over the factors, calibration included. Per factor: one L1 run of N steps saves its
weights at 3N/4 (the warm-up) and ends as the L1-only model; the GAN model is the warm-up plus N/4
adversarial steps - both have had N generator steps (see `train_pair`; hard time caps).
Metrics: PSNR and SSIM (MONAI, 3D, data range of the HR block) over the whole held-out block.
Targets (issue 6): >= +2 dB over B-spline at x2, >= +1 dB at x4.
Usage: python bench/sr_bench.py [--budget 840] [--json bench/results/sr_bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MNI = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")

# the bench generator: small enough to train on 2 shared CPU cores in minutes
BENCH_MODEL = {"name": "rrdb_sr", "spatial_dims": 3, "features": 16, "growth": 8, "num_blocks": 1,
               "dense_blocks": 2, "dense_layers": 3, "upsample": "pixelshuffle", "skip": "learned"}


def mni_volume():
    import nilearn

    from medgen.io import read_volume

    return read_volume(Path(nilearn.__file__).parent / "datasets" / "data" / MNI)


def sub(vol, sl):
    """A sub-block of a Volume with its geometry (origin moved to the block's first voxel)."""
    from medgen.io import Volume

    start = [s.start or 0 for s in sl]
    aff = vol.affine.copy()
    aff[:3, 3] = vol.world(start)
    return Volume(np.ascontiguousarray(vol.array[sl]).astype(np.float32), aff, {"modality": "MR"})


def split_mni(vol):
    """(train, test) blocks: head bounding box, k cropped to a multiple of 4, split along j."""
    a = vol.array
    idx = np.argwhere(a > 10)
    lo, hi = idx.min(0), idx.max(0) + 1
    k1 = lo[2] + ((hi[2] - lo[2]) // 4) * 4
    i_sl, k_sl = slice(lo[0], hi[0]), slice(lo[2], k1)
    mid = (lo[1] + hi[1]) // 2
    train = sub(vol, (i_sl, slice(lo[1], mid - 4), k_sl))
    test = sub(vol, (i_sl, slice(mid + 4, hi[1]), k_sl))
    return train, test


def colin_block():
    from medgen.io import read_volume

    if not COLIN.exists():
        return None
    v = read_volume(COLIN)
    c = [n // 2 for n in v.shape]
    sl = tuple(slice(m - 64, m + 64) for m in c)
    return sub(v, sl)


def degrade(hr, factor: int):
    """Thick-slice volume (physical units) with its thick geometry."""
    import torch

    from medgen.io import Volume
    from medgen.models.sr.degrade import make_lr
    from medgen.transforms import apply_geometry

    lr, recs = make_lr(torch.from_numpy(hr.array)[None], [1, 1, factor], profile="gaussian")
    aff = hr.affine
    for r in recs:
        aff = apply_geometry(aff, r["geometry"])
    return Volume(lr[0].numpy(), aff, dict(hr.meta))


def interpolate(lr, factor: int, method: str):
    import SimpleITK as sitk

    from medgen.infer.sr import upsampled_geometry
    from medgen.io import Volume

    shape, aff = upsampled_geometry(lr.affine, lr.shape, [1, 1, factor])
    ref = Volume(np.zeros(shape, np.float32), aff).to_sitk()
    interp = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear}[method]
    out = sitk.Resample(lr.to_sitk(), ref, sitk.Transform(), interp, 0.0, sitk.sitkFloat32)
    return Volume.from_sitk(out).array


def score(pred: np.ndarray, hr: np.ndarray) -> tuple[float, float]:
    import torch

    from medgen.train.validation import psnr_ssim

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None, None]
    return psnr_ssim(p, t, 3)


PATCH = {2: [24, 24, 32], 4: [20, 20, 48]}  # HR training patches (LR: 24x24x16, 20x20x12)


def train_config(manifest: Path, out: Path, factor: int, *, adv: bool, steps: int, budget: float,
                 lr: float = 2e-3, init_from: str | None = None, seed: int = 0):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    model = {**BENCH_MODEL, "scale_factors": [1, 1, factor]}
    data = {
        "version": 1, "task": "sr", "seed": seed, "output_dir": str(out), "device": "cpu",
        "checkpoint_every": 100000, "model": model,
        "data": {"manifest": str(manifest), "val_split": None, "patch_size": PATCH[factor],
                 "batch_size": 4},
        "degradation": {"preset": None},
        "intensity": {"mode": "percentile", "lower": 0.5, "upper": 99.5},
        "optim": {"lr": lr, "max_steps": max(2, steps), "warmup_steps": 0 if init_from else 10,
                  "grad_clip": 1.0, "time_budget_s": budget, "min_lr_ratio": 0.05},
        "tracking": {"enabled": False},
        "sr": {"factors": [1, 1, factor], "profile": "gaussian", "context": 2,
               "warmup_steps": 0 if adv else steps, "freq_weight": 0.05 if adv else 0.0,
               "adv_weight": 0.003 if adv else 0.0, "adv_criterion": "least_squares",
               "ema_decay": 0.99, "init_from": init_from,
               "discriminator": {"channels": 16, "num_layers_d": 2, "scales": 1}},
        "card": {"intended_use": "benchmark of through-plane super-resolution on brain MR templates",
                 "modality": "MR"},
    }
    return load_config(TrainConfig, data=data)


def train_pair(manifest: Path, work: Path, factor: int, budget: float) -> dict:
    """ESRGAN's recipe with a fair ablation, never more than ``budget`` seconds in all:

    1. calibrate the L1 step rate (10 steps, counted in the budget);
    2. one L1 run of N planned steps, capped at 70 % of what is left; its weights at step
       N1 = 3N/4 are saved on the way (the PSNR-oriented warm-up) and its final EMA weights are
       the **L1-only** model (ablation);
    3. the **GAN** model: N - N1 steps of L1 + FFT + LSGAN from the warm-up weights, capped at
       whatever is left of ``budget``.
    Both generators have had (up to the caps) N generator steps, the first N1 shared. The caps
    hold even when the machine is slower than calibrated; the steps actually run are reported.
    """
    from medgen.train.trainer import Trainer

    t0 = time.perf_counter()
    cal = Trainer(train_config(manifest, work / "cal", factor, adv=False, steps=10 ** 6, budget=1e9),
                  run_name=f"cal-x{factor}")
    stamps: list[float] = []
    cal.progress = lambda step, total, loss, sps: stamps.append(time.perf_counter())
    cal.fit(stop_after=10)
    rate = (len(stamps) - 3) / max(1e-6, stamps[-1] - stamps[2])  # steps/s after warm-up
    spent = time.perf_counter() - t0
    left = budget - spent
    cap_l1 = 0.7 * left
    n = max(8, int(0.9 * rate * cap_l1))
    n1 = (3 * n) // 4
    out = {"calibration_s": round(spent, 1), "l1_steps_per_s": round(rate, 3), "steps": n,
           "shared_l1_steps": n1, "models": {}}
    t1 = time.perf_counter()
    trainer = Trainer(train_config(manifest, work, factor, adv=False, steps=n, budget=cap_l1),
                      run_name=f"l1-x{factor}")
    warm_dir = trainer.run_dir / "checkpoints" / "warm"

    def on_step(step, total, loss, sps):
        if step == n1:  # the warm-up checkpoint of the GAN (model, EMA, card; atomic)
            trainer.save("warm", {}, None)

    trainer.progress = on_step
    res = trainer.fit()
    if not (warm_dir / "model.safetensors").exists():  # slower than calibrated: warm = final
        warm_dir = res.last
    out["models"]["l1"] = {"ckpt": str(res.last), "steps": res.step,
                           "train_s": round(time.perf_counter() - t1, 1),
                           "stopped_by_budget": res.stopped_early}
    warm_steps = min(n1, res.step)
    t2 = time.perf_counter()
    left = budget - (t2 - t0)
    gcfg = train_config(manifest, work, factor, adv=True, steps=max(1, n - warm_steps),
                        budget=max(1.0, left), lr=5e-4, init_from=str(warm_dir))
    res = Trainer(gcfg, run_name=f"gan-x{factor}").fit()
    out["models"]["gan"] = {"ckpt": str(res.last), "steps": warm_steps + res.step,
                            "adversarial_steps": res.step,
                            "train_s": round(time.perf_counter() - t2, 1),
                            "stopped_by_budget": res.stopped_early}
    out["train_s_total"] = round(time.perf_counter() - t0, 1)
    return out


def upscale(ckpt: str, lr, factor: int):
    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.sr import UpscalePredictor

    pred = UpscalePredictor.from_checkpoint(
        ckpt, InferenceSettings(device="cpu", roi_size=(96, 96, 96 // factor),
                                overlap=0.125, sw_batch_size=1))
    t = time.perf_counter()
    out = pred(lr)
    return out.array, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=840.0, help="total CPU training seconds")
    ap.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--json", type=Path, default=Path("bench/results/sr_bench.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep runs here (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="sr-bench-"))
    train_vol, mni_test = split_mni(mni_volume())
    tests = {"mni152-anterior": mni_test}
    colin = colin_block()
    if colin is not None:
        tests["colin27-centre"] = colin
    (work / "data").mkdir(parents=True, exist_ok=True)
    write_nifti(train_vol, work / "data" / "sub-mni_T1w.nii.gz")
    man = split_manifest(build_manifest(work / "data", Key(b"b" * 32, "bench")).manifest,
                         {"train": 1.0}, seed=0)
    mpath = work / "train.jsonl"
    man.write(mpath)

    result = {"data": {"train": f"MNI152 2009a posterior block {list(train_vol.shape)}",
                       "tests": {k: list(v.shape) for k, v in tests.items()}},
              "model": BENCH_MODEL, "budget_s": args.budget, "threads": args.threads,
              "factors": {}}
    per_factor = args.budget / len(args.factors)
    for f in args.factors:
        training = train_pair(mpath, work / "runs", f, per_factor)
        rows = {}
        for tname, hr in tests.items():
            lr = degrade(hr, f)
            r = {}
            for m in ("bspline", "linear"):
                t = time.perf_counter()
                up = interpolate(lr, f, m)
                r[m] = (*score(up, hr.array), time.perf_counter() - t)
            for m in ("l1", "gan"):
                up, secs = upscale(training["models"][m]["ckpt"], lr, f)
                r[m] = (*score(up, hr.array), secs)
            rows[tname] = {k: {"psnr": round(v[0], 3), "ssim": round(v[1], 4),
                               "seconds": round(v[2], 1)} for k, v in r.items()}
        result["factors"][f"x{f}"] = {"training": training, "results": rows}
        print_table(f, rows, training)
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} ({result['total_s']:.0f} s in all)")
    return 0


NAMES = {"bspline": "cubic B-spline (SimpleITK)", "linear": "trilinear (SimpleITK)",
         "l1": "rrdb_sr, L1 only (ablation)", "gan": "rrdb_sr, GAN (L1 warm-up + adv)"}


def print_table(f: int, rows: dict, training: dict) -> None:
    target = 2.0 if f == 2 else 1.0
    m = training["models"]
    print(f"\nx{f} through-plane (Gaussian slice profile, FWHM {f} mm); target >= +{target} dB "
          f"over B-spline; training {training['train_s_total']:.0f} s: L1 {m['l1']['steps']} steps, "
          f"GAN {m['gan']['steps']} steps ({m['gan']['adversarial_steps']} adversarial)")
    for tname, r in rows.items():
        b = r["bspline"]
        print(f"  {tname}")
        print(f"    {'method':34s} {'PSNR dB':>8s} {'dPSNR':>7s} {'SSIM':>7s} {'dSSIM':>7s} "
              f"{'MSE ratio':>9s} {'s':>6s}")
        for k, v in r.items():
            ratio = 10 ** (-(v["psnr"] - b["psnr"]) / 10)  # MSE / MSE_bspline
            print(f"    {NAMES[k]:34s} {v['psnr']:8.2f} {v['psnr'] - b['psnr']:+7.2f} "
                  f"{v['ssim']:7.4f} {v['ssim'] - b['ssim']:+7.4f} {ratio:9.3f} {v['seconds']:6.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
