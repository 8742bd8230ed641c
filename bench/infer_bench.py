"""Benchmark of ``medgen denoise``: end-to-end wall time vs the model's pure forward time over the
same windows, vs MONAI's ``sliding_window_inference`` with its default settings.

Data: N volumes of SIZE^3 made from a real public MR volume (nibabel's bundled
``tests/data/anatomical.nii``, 33x41x25 at 2 mm), resampled with a cubic B-spline (SimpleITK) to
SIZE^3, each made different by a flip, an intensity scale and Rician-like noise (seeded). No larger
real volume is installable here without a download.

Model: a small (not tiny) residual 3D UNet (channels 16/32/64/128, 2 residual units, instance
norm, about 1.2 M parameters) with seeded random weights - throughput does not depend on training -
saved as a real checkpoint (safetensors + card, 64^3 patch, percentile normalisation).

Measured in one run of this script, with the same torch thread count (the machine may be shared:
the pure forward pass is timed before and after the job and the mean is used; the forward time the
job itself measured over its windows is reported too):

1. ``medgen denoise --model CKPT SRC DST --no-track --device DEVICE`` in a subprocess: wall time
   (interpreter start and imports included), the job's own time and in-job forward time from its
   ``summary.json``, peak RSS of the subprocess;
2. *pure forward*: the exact windows the job sees (captured from MONAI's window enumeration with
   the same roi/overlap/batch), normalised, then only ``predict(model, window)`` is timed;
3. MONAI ``sliding_window_inference(x, roi, sw_batch_size=1, predictor)`` with every other
   argument at its default (overlap 0.25, constant blending, constant padding), on the same
   normalised volumes (no reading, no writing).

Usage::

    python bench/infer_bench.py [--n 8] [--size 128] [--device cpu] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL_CFG = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
             "channels": [16, 32, 64, 128], "num_res_units": 2, "norm": "instance",
             "residual": True, "patch_size": [64, 64, 64]}


def make_volumes(dst: Path, n: int, size: int) -> list[Path]:
    import nibabel
    import SimpleITK as sitk

    from medgen.io import Volume
    from medgen.io.nifti import read_nifti, write_nifti

    src = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    base = read_nifti(src)
    img = Volume(base.array.astype(np.float32), base.affine).to_sitk()
    extent = np.array(img.GetSize()) * np.array(img.GetSpacing())
    spacing = extent / size
    ref = sitk.Image([size] * 3, sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in spacing])
    ref.SetDirection(img.GetDirection())
    origin = np.array(img.GetOrigin()) + np.array(img.GetDirection()).reshape(3, 3) @ (
        (spacing - np.array(img.GetSpacing())) / 2)
    ref.SetOrigin([float(o) for o in origin])
    up = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkBSpline, 0.0)
    vol = Volume.from_sitk(up)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        a = vol.array.copy()
        if i % 2:
            a = a[::-1].copy()
        a = a * rng.uniform(0.8, 1.2)
        sigma = 0.03 * float(np.percentile(a, 99))
        a = np.sqrt((a + rng.normal(0, sigma, a.shape)) ** 2 + rng.normal(0, sigma, a.shape) ** 2)
        p = dst / f"sub-{i:02d}" / f"anat_{i:02d}.nii.gz"
        write_nifti(Volume(a.astype(np.float32), vol.affine, {"modality": "MR"}), p)
        paths.append(p)
    return paths


def make_checkpoint(dst: Path) -> Path:
    import torch

    from medgen.models import ModelCard, build_model, parse_model_config, save_checkpoint

    cfg = parse_model_config(MODEL_CFG)
    torch.manual_seed(0)
    model = build_model(cfg)
    card = ModelCard(model_name="unet", task="denoise", intended_use="benchmark model (random weights)",
                     modality="MR", intensity={"mode": "percentile", "lower": 0.5, "upper": 99.5},
                     patch_size=[64, 64, 64])
    return save_checkpoint(dst, model, cfg, card=card)


def capture_windows(predictor, x, roi, overlap, sw_batch_size):
    """The windows MONAI's sliding window hands to the network, in order (no model call)."""
    import torch
    from monai.inferers import sliding_window_inference

    wins = []

    def grab(w):
        wins.append(w.clone())
        return torch.zeros_like(w)

    sliding_window_inference(x, roi_size=roi, sw_batch_size=sw_batch_size, predictor=grab,
                             overlap=overlap, mode="gaussian", padding_mode="replicate")
    return wins


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="medgen-infer-bench-"))
    try:
        src = work / "src"
        t0 = time.perf_counter()
        make_volumes(src, args.n, args.size)
        ckpt = make_checkpoint(work / "ckpt")
        print(f"data + checkpoint in {time.perf_counter() - t0:.1f} s "
              f"({args.n} x {args.size}^3, load avg {os.getloadavg()[0]:.1f})", file=sys.stderr)

        # the windows the job will see, normalised as the job does it (same process for 2 and 3)
        from medgen.infer.predictor import PredictorSpec
        from medgen.infer.settings import InferenceSettings
        from medgen.infer.sources import open_source
        from medgen.models.module import predict

        p = PredictorSpec.make(ckpt, InferenceSettings(device=args.device)).build()
        xs = []
        source = open_source(src)
        for it in source.discover("auto", b"k" * 32):
            vol = source.load(it)
            x = torch.from_numpy(vol.array.astype(np.float32))[None]
            xn, _ = p.normalise(x)
            xs.append(xn[None])
        plan = p.plan(tuple(xs[0].shape[2:]))
        dev = torch.device(args.device if args.device != "auto" else p.device)
        windows = [capture_windows(p, x, list(plan.roi), p.settings.overlap, plan.sw_batch_size)
                   for x in xs]
        n_windows = sum(int(w.shape[0]) for ws in windows for w in ws)

        def pure_forward() -> float:
            total = 0.0
            with torch.inference_mode():
                predict(p.model, torch.zeros((1, 1, *plan.roi), device=dev))  # warm-up
                for ws in windows:
                    for w in ws:
                        w = w.to(dev)
                        t = time.perf_counter()
                        predict(p.model, w)
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        total += time.perf_counter() - t
            return total

        # 2a. pure forward, before
        fwd_a = pure_forward()
        # 1. end to end: the real command in a subprocess (interpreter start and imports included)
        dst = work / "dst"
        cmd = [sys.executable, "-m", "medgen", "denoise", "--model", str(ckpt), str(src), str(dst),
               "--no-track", "--quiet", "--device", args.device]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(work))
        e2e = time.perf_counter() - t0
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        summary = json.loads((dst / "summary.json").read_text())
        child_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        # 2b. pure forward, after (the machine is shared: the mean of before/after is compared)
        fwd_b = pure_forward()
        fwd = (fwd_a + fwd_b) / 2

        # 3. MONAI sliding_window_inference, default settings
        from monai.inferers import sliding_window_inference

        t = time.perf_counter()
        with torch.inference_mode():
            for x in xs:
                sliding_window_inference(x.to(dev), roi_size=list(plan.roi), sw_batch_size=1,
                                         predictor=lambda w: predict(p.model, w))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        monai_s = time.perf_counter() - t

        voxels = args.n * args.size ** 3
        out = {
            "volumes": args.n, "size": args.size, "voxels": voxels, "device": args.device,
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
            "windows": n_windows, "roi": list(plan.roi), "overlap": p.settings.overlap,
            "e2e_wall_s": round(e2e, 2), "job_s": summary["seconds"],
            "job_forward_s": summary["forward_seconds"], "pure_forward_s": round(fwd, 2),
            "pure_forward_before_s": round(fwd_a, 2), "pure_forward_after_s": round(fwd_b, 2),
            "ratio_e2e_to_job_forward": round(e2e / summary["forward_seconds"], 3),
            "monai_default_swi_s": round(monai_s, 2),
            "ratio_e2e_to_pure_forward": round(e2e / fwd, 3),
            "ratio_job_to_pure_forward": round(summary["seconds"] / fwd, 3),
            "e2e_voxels_per_s": round(voxels / e2e), "job_voxels_per_s": summary["voxels_per_s"],
            "monai_voxels_per_s": round(voxels / monai_s),
            "peak_rss_mb_job_items": summary["peak_rss_mb"], "peak_rss_mb_subprocess": round(child_rss_mb, 1),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"infer_bench_{args.device}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        print(f"\n| measure | value |\n|---|---|\n"
              f"| end-to-end `medgen denoise` wall | {e2e:.1f} s ({out['e2e_voxels_per_s']:,} vox/s) |\n"
              f"| job time (after start-up) | {summary['seconds']:.1f} s |\n"
              f"| pure forward, same {n_windows} windows (before / after) | {fwd_a:.1f} / {fwd_b:.1f} s |\n"
              f"| forward time inside the job | {summary['forward_seconds']:.1f} s |\n"
              f"| ratio end-to-end / in-job forward | {out['ratio_e2e_to_job_forward']:.3f} |\n"
              f"| ratio end-to-end / pure forward | {out['ratio_e2e_to_pure_forward']:.3f} |\n"
              f"| ratio job / pure forward | {out['ratio_job_to_pure_forward']:.3f} |\n"
              f"| MONAI sliding_window_inference, defaults | {monai_s:.1f} s |\n"
              f"| peak RSS (subprocess) | {child_rss_mb:.0f} MiB |")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
