"""Translation benchmark: T1 -> simulated T2-weighted contrast of the MNI152 template (public data
installed with nilearn), Pix2Pix and CycleGAN on a short CPU budget vs the trivial baselines
(identity = the input linearly rescaled to the target's range; histogram matching), same run.

Data construction (documented in docs/translation.md):

* source A: the ICBM 2009a nonlinear symmetric T1 template (nilearn's bundled copy), block-averaged
  to 2 mm;
* target B, a physically motivated T2-weighted-like contrast on the *same grid* (so the pair is
  perfectly registered): grey and white matter from the template's GM/WM probability maps with
  T2w intensities GM 0.45 > WM 0.30, every other voxel of the head (CSF, scalp, marrow...) mapped
  from its T1 intensity by the inverting curve ``1 - 0.75 t1`` (dark CSF becomes bright), times
  a smooth multiplicative bias field (0.8-1.2, a different one per "subject") and Rician noise
  (sigma 1 % of the range);
* "subjects": 4 training pairs from the inferior slab (k < 26 of 47 at 2 mm) with different bias
  fields and noise; the test pair is the superior slab (k >= 26): anatomy the models never saw.

Run: ``python bench/translate_bench.py [--budget 150] [--out bench_out/translate]``. Prints a
table (PSNR/SSIM/MAE on the test slab against the real target) and writes ``results.json``.
``--data-only`` writes the manifests that configs/train/translate-*.yaml point to.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

NILEARN_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                 "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                 "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
SPLIT_K = 26


def _block2(a: np.ndarray) -> np.ndarray:
    s = [d - d % 2 for d in a.shape]
    a = a[: s[0], : s[1], : s[2]]
    return a.reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))


def load_template() -> dict[str, np.ndarray]:
    """The template's T1, GM and WM maps in [0, 1] at 2 mm, cropped to the head."""
    import nibabel as nib
    import nilearn

    d = Path(nilearn.__file__).parent / "datasets" / "data"
    vols = {k: _block2(np.asarray(nib.load(str(d / f)).get_fdata(), np.float32) / 255.0)
            for k, f in NILEARN_FILES.items()}
    head = vols["t1"] > 0.04
    idx = np.argwhere(head)
    lo, hi = idx.min(0), idx.max(0) + 1
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return {k: v[sl] for k, v in vols.items()}


def bias_field(shape, rng) -> np.ndarray:
    """Smooth multiplicative field in about [0.8, 1.2]: a random low-order polynomial."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    c = rng.uniform(-1, 1, size=6)
    f = (c[0] * grids[0] + c[1] * grids[1] + c[2] * grids[2] + c[3] * grids[0] * grids[1]
         + c[4] * grids[2] ** 2 + c[5] * grids[1] ** 2)
    f = f / (np.abs(f).max() + 1e-6)
    return (1.0 + 0.2 * f).astype(np.float32)


def simulate_t2(t: dict[str, np.ndarray], rng, *, noise: float = 0.01) -> np.ndarray:
    """T2-weighted-like volume (0..1000) of the same anatomy and grid as ``t["t1"]``."""
    t1, gm, wm = t["t1"], np.clip(t["gm"], 0, 1), np.clip(t["wm"], 0, 1)
    rest = np.clip(1.0 - gm - wm, 0, 1)
    head = (t1 > 0.04).astype(np.float32)
    t2 = head * (0.45 * gm + 0.30 * wm + rest * np.clip(1.0 - 0.75 * t1, 0, 1))
    t2 = t2 * bias_field(t1.shape, rng)
    n1, n2 = rng.normal(0, noise, t1.shape), rng.normal(0, noise, t1.shape)
    return (1000.0 * np.sqrt((t2 + n1) ** 2 + n2 ** 2)).astype(np.float32)  # Rician magnitude


def make_data(out: Path, seed: int = 0, n_train: int = 4) -> tuple[Path, Path, dict]:
    """NIfTI pairs in BIDS folders + manifests (A: T1, B: T2) split train/val; returns paths."""
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest import Manifest
    from medgen.manifest.build import build_manifest

    rng = np.random.default_rng(seed)
    t = load_template()
    aff = Volume.make_affine([2.0, 2.0, 2.0])
    subjects = []
    for i in range(n_train + 1):
        t1 = t["t1"] * 1000.0 * bias_field(t["t1"].shape, rng)  # each "scan" its own T1 bias too
        t2 = simulate_t2(t, rng)
        sl = slice(0, SPLIT_K) if i < n_train else slice(SPLIT_K, None)
        name = f"sub-{i:02d}"
        for dom, arr, suffix in (("A", t1, "T1w"), ("B", t2, "T2w")):
            p = out / dom / name / f"{name}_{suffix}.nii.gz"
            p.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(Volume(np.ascontiguousarray(arr[:, :, sl]).astype(np.float32), aff, {}), p)
        subjects.append(name)
    key = Key(b"b" * 32, "bench")
    paths = []
    for dom in ("A", "B"):
        m = build_manifest(out / dom, key).manifest
        recs = []
        for r in m.records:
            last = r.files[0].path.startswith(f"sub-{n_train:02d}/")
            recs.append(r.model_copy(update={"split": "val" if last else "train"}))
        m = Manifest(recs, root=out / dom)
        p = out / ("t1.jsonl" if dom == "A" else "t2.jsonl")
        m.write(p)
        paths.append(p)
    return paths[0], paths[1], {"shape_train": list(t["t1"][:, :, :SPLIT_K].shape),
                                "shape_test": list(t["t1"][:, :, SPLIT_K:].shape)}


def train_config(ma: Path, mb: Path, out: Path, model: str, budget: float, seed: int):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    paired = model == "pix2pix"
    data = {
        "version": 1, "task": "translate", "seed": seed, "output_dir": str(out / "runs"),
        "checkpoint_every": 1000,
        "model": {"name": model, "spatial_dims": 3, "channels": [16, 32, 64], "num_res_units": 1,
                  "intensity_b": {"mode": "range", "a_min": 0.0, "a_max": 1000.0}},
        "data": {"manifest": str(ma), "patch_size": [32, 32, 32], "batch_size": 2},
        "degradation": {"preset": None},
        "intensity": {"mode": "percentile", "lower": 0.5, "upper": 99.5},
        "optim": {"lr": 0.002, "max_steps": 100000, "time_budget_s": budget, "warmup_steps": 20,
                  "min_lr_ratio": 1.0},
        "val": {"every_steps": 100, "max_volumes": 1, "images": False, "sw_batch_size": 1},
        "tracking": {"enabled": False},
        "translate": {"paired": paired, "target_manifest": str(mb), "warmup_steps": 100,
                      "l1_weight": 100.0 if paired else 0.0, "adv_weight": 1.0,
                      "pool_size": 0 if paired else 50,
                      "discriminator": {"channels": 16, "num_layers_d": 2,
                                        "spectral_norm": not paired}},
        "card": {"intended_use": "translation benchmark (T1 to simulated T2w)", "modality": "MR"},
    }
    return load_config(TrainConfig, data=data)


def score(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    import torch

    from medgen.train.validation import psnr_ssim

    p, s = psnr_ssim(torch.from_numpy(out)[None, None], torch.from_numpy(ref)[None, None], 3)
    return {"psnr": p, "ssim": s, "mae": float(np.abs(out - ref).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per model")
    ap.add_argument("--out", type=Path, default=Path("bench_out/translate"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="pix2pix,cyclegan")
    ap.add_argument("--data-only", action="store_true")
    args = ap.parse_args()

    import torch
    from skimage.exposure import match_histograms

    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.translate import TranslatePredictor
    from medgen.io import read_volume
    from medgen.manifest import Manifest
    from medgen.train.trainer import train

    torch.set_num_threads(args.threads)
    out = args.out
    ma, mb, shapes = make_data(out, args.seed)
    if args.data_only:
        print(f"wrote {ma} and {mb}")
        return
    A, B = Manifest.load(ma), Manifest.load(mb)
    test_a = read_volume(A.paths(A.split("val")[0])[0])
    test_b = read_volume(B.paths(B.split("val")[0])[0]).array.astype(np.float32)
    train_b = [read_volume(B.paths(r)[0]).array for r in B.split("train")]
    lo_b, hi_b = np.percentile(np.concatenate([v.ravel() for v in train_b]), [0.5, 99.5])
    a = test_a.array.astype(np.float32)
    lo_a, hi_a = np.percentile(a, [0.5, 99.5])
    rows: dict[str, dict] = {}
    rows["identity (rescaled)"] = score((a - lo_a) / (hi_a - lo_a) * (hi_b - lo_b) + lo_b, test_b)
    rows["histogram matching"] = score(match_histograms(a, train_b[0]).astype(np.float32), test_b)
    for model in [m for m in args.models.split(",") if m]:
        t0 = time.perf_counter()
        res = train(train_config(ma, mb, out / model, model, args.budget, args.seed), quiet=True)
        t_train = time.perf_counter() - t0
        ckpt = res.last  # not "best": validation runs on the test slab (monitoring only)
        pred = TranslatePredictor.from_checkpoint(ckpt, InferenceSettings(device="cpu", roi_size=(32, 32, 32)))
        t1 = time.perf_counter()
        y = pred(test_a).array.astype(np.float32)
        t_inf = time.perf_counter() - t1
        label = "pix2pix (paired)" if model == "pix2pix" else "cyclegan (unpaired)"
        rows[label] = {**score(y, test_b), "steps": res.step, "train_s": round(t_train, 1),
                       "infer_s": round(t_inf, 2), "mode_collapse": res.metrics.get("val/mode_collapse"),
                       "collapse_ratio": res.metrics.get("val/collapse_ratio")}
    print(f"{'method':24s} {'PSNR dB':>8s} {'SSIM':>7s} {'MAE':>8s}  notes")
    for k, r in rows.items():
        notes = f"{r['steps']} steps in {r['train_s']} s" if "steps" in r else ""
        print(f"{k:24s} {r['psnr']:8.2f} {r['ssim']:7.4f} {r['mae']:8.2f}  {notes}")
    meta = {"budget_s_per_model": args.budget, "threads": args.threads, "seed": args.seed,
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "data": {"source": "nilearn MNI152 2009a T1 + GM/WM maps, 2 mm", **shapes,
                     "units": "simulated T2w 0..1000"}}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
