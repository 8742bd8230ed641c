"""Benchmark: medgen generators (vae-gen, ldm) vs trivial baselines on slabs of a real brain.

Data (installed locally, nothing downloaded): nilearn's bundled MNI152 T1 template (ICBM 2009a
sym, 1 mm; the `bench` extra). Axial slabs 32 mm thick (z start 40..128, every 4 mm) cropped to
the head (160 x 192 mm in-plane) with a seeded in-plane jitter of up to 6 mm are the "scans";
every 4th slab (z order) is a held-out test scan, every 8th (offset 1) a validation scan, the rest
train. Slabs of one template are far more alike than different patients: the numbers are a
reference for the report's scale, not a claim about clinical data.

Methods (each gives N samples on the 32 x 32 x 16 generated grid, normalised intensity):
  * ``vae-gen`` and ``ldm`` trained through ``medgen.train`` (task synth, CPU, fixed step
    counts) and sampled through ``medgen.synth.sampling.synthesize`` (with its memorization
    check; flagged samples kept for the report);
  * ``train+noise``: random training slabs plus Gaussian noise (sigma 0.03) - a copying
    "generator" the memorization check must flag;
  * ``voxel-gaussian``: independent normal per voxel with the training slabs' mean and std;
  * ``real (train)``: N training slabs themselves - the reference of "real vs real".
Every method is compared by ``quality_report`` with the held-out test slabs (same
normalisation), and checked against the training slabs calibrated on val + test slabs.
Sampling seconds per volume are CPU wall time (batch 4; ldm with DDIM, 50 steps). No GPU was
available to this session; on a CUDA machine ``synthesize`` runs there with bf16 autocast.
Usage: python bench/synth_bench.py [--n 16] [--json bench/results/synth_bench.json]
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
GRID = [32, 32, 16]


def make_slabs(root: Path, seed: int = 0) -> Path:
    """Write the slab NIfTIs and a split manifest under ``root``; return the manifest path."""
    import nilearn

    from medgen.io import Volume, read_volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest

    vol = read_volume(Path(nilearn.__file__).parent / "datasets" / "data" / MNI)
    a = np.asarray(vol.array, dtype=np.float32)
    rng = np.random.default_rng(seed)
    splits = {}
    for i, z in enumerate(range(40, 129, 4)):
        dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
        x0, y0 = 18 + dx, 20 + dy
        slab = a[x0:x0 + 160, y0:y0 + 192, z:z + 32]
        name = f"slab-{i:02d}.nii.gz"
        write_nifti(Volume(slab.copy(), Volume.make_affine([1.0, 1.0, 1.0]), {"modality": "MR"}),
                    root / name)
        splits[name] = "test" if i % 4 == 3 else ("val" if i % 8 == 1 else "train")
    m = build_manifest(root, Key(b"b" * 32, "bench")).manifest
    for r in m.records:
        r.split = splits[r.files[0].path]
    path = root / "slabs.jsonl"
    m.write(path)
    return path


def train_config(manifest: Path, out: Path, model: str, steps: int, ae_steps: int = 0):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    models = {
        "vae-gen": {"name": "vae-gen", "channels": [16, 32, 32], "latent_channels": 4,
                    "norm_num_groups": 8},
        "ldm": {"name": "ldm", "ae_channels": [16, 32], "latent_channels": 3,
                "ae_norm_num_groups": 8, "unet_channels": [32, 64], "unet_norm_num_groups": 16,
                "num_head_channels": 16},
    }
    synth = {"autoencoder_steps": ae_steps,
             "diffusion": {"num_train_timesteps": 1000, "inference_steps": 50}} if model == "ldm" else {}
    data = {"version": 1, "task": "synth", "seed": 0, "output_dir": str(out),
            "checkpoint_every": 100000, "model": models[model],
            "data": {"manifest": str(manifest), "patch_size": GRID, "batch_size": 8},
            "intensity": {"mode": "percentile", "lower": 0.5, "upper": 99.5, "clip": True},
            "optim": {"lr": 0.002, "max_steps": steps},
            "val": {"every_steps": steps, "max_volumes": 3, "images": False},
            "tracking": {"enabled": False}, "synth": synth,
            "card": {"intended_use": "benchmark synthesis model", "modality": "MR"}}
    return load_config(TrainConfig, data=data)


def read_samples(dst: Path) -> list[np.ndarray]:
    import nibabel as nib

    return [np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
            for p in sorted((dst / "samples").glob("synth-*.nii.gz"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="samples per method")
    ap.add_argument("--vae-steps", type=int, default=400)
    ap.add_argument("--ldm-ae-steps", type=int, default=300)
    ap.add_argument("--ldm-steps", type=int, default=1500, help="total ldm steps (AE + UNet)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("bench/results/synth_bench.json"))
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (default: a new temp folder); runs trained there before "
                         "are re-scored, not retrained (their recorded training time is reported)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from medgen.manifest import Manifest
    from medgen.models import IntensityNorm
    from medgen.synth.data import load_reference
    from medgen.synth.evaluate import load_arrays
    from medgen.synth.memorization import build_reference
    from medgen.synth.quality import quality_report
    from medgen.synth.sampling import synthesize
    from medgen.train.trainer import train

    tmp = args.work or Path(tempfile.mkdtemp(prefix="synth-bench-"))
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    mpath = make_slabs(tmp / "data")
    man = Manifest.load(mpath)
    norm = IntensityNorm(mode="percentile", lower=0.5, upper=99.5, clip=True)
    test = man.split("test")
    held = [r for r in man if r.split in ("val", "test")]
    real_test, _ = load_arrays(man, test, intensity=norm)
    train_arr, train_ids, _ = load_reference(man, man.split("train"), norm, GRID, 3)
    held_arr, held_ids, _ = load_reference(man, held, norm, GRID, 3)
    ref = build_reference(train_arr, held_arr, train_ids=train_ids, heldout_ids=held_ids)
    counts = {s: len(man.split(s)) for s in ("train", "val", "test")}
    print(f"slabs: {counts}; grid {GRID}", flush=True)

    rows = []
    rng = np.random.default_rng(1)

    def report(name, arrays, train_s=None, sps=None, memorization_rate=None):
        t = time.perf_counter()
        rep = quality_report(real_test, arrays, seed=0, shape=GRID)
        if memorization_rate is None:
            memorization_rate = float(np.mean([r["flagged"] for r in ref.check(arrays)]))
        s = rep["summary"]
        row = {"method": name, "train_s": train_s, "s_per_volume": sps,
               "memorization_rate": memorization_rate, **s, "report_s": time.perf_counter() - t}
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
              flush=True)

    # generators
    for model, steps, ae in (("vae-gen", args.vae_steps, 0),
                             ("ldm", args.ldm_steps, args.ldm_ae_steps)):
        done = sorted((tmp / "runs").glob(f"{model}-*/train_seconds.json"))
        if args.work is not None and done:  # re-score a run trained earlier in this work folder
            rec = json.loads(done[-1].read_text())
            last, train_s = done[-1].parent / "checkpoints" / "last", rec["train_s"]
            print(f"{model}: reusing {done[-1].parent.name} ({rec['steps']} steps)", flush=True)
        else:
            t = time.perf_counter()
            res = train(train_config(mpath, tmp / "runs", model, steps, ae))
            train_s = time.perf_counter() - t
            (res.run_dir / "train_seconds.json").write_text(
                json.dumps({"train_s": train_s, "steps": steps}))
            last = res.last
        dst = tmp / f"out-{model}"
        sres = synthesize(last, args.n, dst, seed=0, batch=4, train_manifest=mpath,
                          keep_flagged=True, tracking=False, device="cpu")
        report(model, read_samples(dst), train_s, sres.seconds_per_sample, sres.memorization["rate"])
    # baselines
    idx = rng.integers(0, len(train_arr), args.n)
    noisy = [np.clip(train_arr[i] + rng.normal(0, 0.03, train_arr[i].shape), 0, 1)
             .astype(np.float32) for i in idx]
    report("train+noise", noisy, 0.0, 0.0)
    st = np.stack(train_arr)
    mu, sd = st.mean(0), st.std(0)
    gauss = [np.clip(mu + sd * rng.standard_normal(mu.shape), 0, 1).astype(np.float32)
             for _ in range(args.n)]
    report("voxel-gaussian", gauss, 0.0, 0.0)
    report("real (train slabs)", [train_arr[i] for i in idx[: args.n]], None, None)

    cols = ["method", "train_s", "s_per_volume", "mmd2_downsampled", "mmd_p_downsampled",
            "mmd2_embedding", "mmd_p_embedding", "diversity_ratio", "hist_wasserstein1",
            "c2st_auc", "memorization_rate"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
        print("| " + " | ".join(cells) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    import torch as _t

    meta = {"grid": GRID, "splits": counts, "n": args.n, "threads": args.threads,
            "torch": _t.__version__, "cpu_count": os.cpu_count(), "gpu": "none in this session",
            "steps": {"vae-gen": args.vae_steps, "ldm": args.ldm_steps,
                      "ldm_autoencoder": args.ldm_ae_steps}}
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
