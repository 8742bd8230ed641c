"""Short ablation probes for the denoise benchmark: train one medgen denoiser for ``--budget``
seconds with ``--set`` overrides of the bench config, print its mean PSNR gain per test case.

Same data, noise and held-out blocks as ``bench/denoise_bench.py`` (no classical baselines, so a
probe takes budget + ~10 s). Used to choose the bench model; the table is in docs/models.md.
Usage: python bench/denoise_probe.py --budget 150 --model unet --set model.norm=none ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import denoise_bench as B  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--model", default="unet", choices=["unet", "vae"])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE override")
    args = ap.parse_args()
    import os

    import torch

    from medgen.models import load_checkpoint

    torch.set_num_threads(os.cpu_count() or 2)
    vol = B.mni152()
    blocks = B.held_out_blocks(vol)
    ck, steps = B.train_medgen(vol, Path(tempfile.mkdtemp(prefix="probe-")), args.model,
                               args.budget, args.sets)
    net = load_checkpoint(ck)[0]
    gains = {}
    for ci, (kind, sigma) in enumerate(B.CASES):
        g = []
        for bi, clean in enumerate(blocks):
            noisy = B.add_noise(clean, kind, sigma, 1000 * ci + bi)
            den = B.medgen_denoise(net, noisy)
            g.append(B.metrics(den, clean)[0] - B.metrics(noisy, clean)[0])
        gains[f"{kind}-{sigma}"] = float(np.mean(g))
    print(f"{args.model} {' '.join(args.sets) or '(bench config)'}: {steps} steps, "
          f"mean gain {np.mean(list(gains.values())):+.2f} dB; "
          + ", ".join(f"{k} {v:+.2f}" for k, v in gains.items()))


if __name__ == "__main__":
    main()
