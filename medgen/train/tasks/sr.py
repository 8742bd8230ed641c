"""Super-resolution GAN training (``task: sr``): on-the-fly LR/HR pairs, L1 warm-up then
adversarial, EMA generator, validation against cubic B-spline on held-out volumes.

Phase 1 (``step < sr.warmup_steps``): ``l1_weight * L1 + freq_weight * FFT-magnitude L1``.
Phase 2: + ``adv_weight *`` adversarial (LSGAN or hinge; the discriminator is stepped after the
generator) + ``perceptual_weight *`` local-weights perceptual loss. ``sr.adv_weight: 0`` never
builds a discriminator: the L1-only generator (the ablation of the benchmark).

The generator's exponential moving average (``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn(sr.ema_decay)``) is updated after every generator step, saved as
``ema.safetensors`` by the trainer, used for validation and loaded by inference by default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medgen.errors import ConfigError
from medgen.train.data import step_seed
from medgen.train.tasks.base import TrainTask
from medgen.train.validation import psnr_ssim, sliding_predict

log = logging.getLogger("medgen.train")


def _plain(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    return (t.as_tensor() if hasattr(t, "as_tensor") else t).float()


class SRPairSampler:
    """Draws the LR/HR batch of a given step (a pure function of ``(seed, step)``).

    Each HR patch is cut with ``sr.context`` LR voxels of margin along every upsampled axis,
    degraded (:func:`medgen.models.sr.degrade.make_lr`), and the margin is cut off again, so the
    patch border never shows the degradation's edge handling. 2D models get one plane orthogonal to
    ``model.slice_axis`` (degraded in 3D, so through-plane factors of a 2D model are real thick
    slices).
    """

    def __init__(self, cfg, dataset):
        from medgen.transforms import load_preset

        self.cfg = cfg
        self.sr = cfg.task
        self.ds = dataset
        self.n = len(dataset)
        if self.n == 0:
            raise ConfigError("data", f"no volumes in split '{cfg.data.train_split}'")
        self.factors = [int(f) for f in self.sr.factors]
        self.dims = cfg.model.spatial_dims
        self.slice_axis = int(cfg.model.slice_axis) if self.dims == 2 else None
        patch = list(cfg.data.patch_size)
        if self.dims == 2:
            patch.insert(self.slice_axis, 1)
        self.patch = patch  # HR patch per volume axis
        self.margin = [self.sr.context * f if f > 1 else 0 for f in self.factors]
        self.preset = cfg.task.degradation
        self._noise = None
        if self.preset:  # noise only: the config refuses grid-changing presets here
            self._noise = load_preset(self.preset, keys="noisy", source_key="image")

    # -- pairs ------------------------------------------------------------------------------
    def _noisy(self, lr: torch.Tensor, seed: int) -> tuple[torch.Tensor, list]:
        if self._noise is None:
            return lr, []
        self._noise.set_random_state(seed=seed)
        s = self._noise({"image": lr})
        return _plain(s["noisy"]), list(s.get("degradations", []))

    def pair(self, img: torch.Tensor, rng: np.random.Generator, noise_seed: int
             ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """One (LR, HR) training pair from a ``(C, I, J, K)`` volume."""
        from medgen.models.sr.degrade import make_lr

        region = [p + 2 * m for p, m in zip(self.patch, self.margin)]
        spatial = list(img.shape[1:])
        need = [max(r, s) for r, s in zip(region, spatial)]
        if need != spatial:  # small volumes: replicate-pad up to the region
            pad: list[int] = []
            for r, s in reversed(list(zip(need, spatial))):
                pad += [0, r - s]
            img = F.pad(img[None], pad, mode="replicate")[0]
            spatial = need
        start = [int(rng.integers(0, s - r + 1)) for s, r in zip(spatial, region)]
        sl = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(start, region))
        hr_region = img[sl]
        lr_region, recs = make_lr(hr_region, self.factors, profile=self.sr.profile,
                                  kspace_axes=self.sr.kspace_axes)
        ctx = self.sr.context
        lr_sl = (slice(None),) + tuple(
            slice(ctx, ctx + p // f) if f > 1 else slice(None)
            for p, f in zip(self.patch, self.factors))
        hr_sl = (slice(None),) + tuple(slice(m, m + p) for m, p in zip(self.margin, self.patch))
        lr, hr = lr_region[lr_sl], hr_region[hr_sl]
        lr, noise_recs = self._noisy(lr.contiguous(), noise_seed)
        if self.dims == 2:
            lr, hr = lr.squeeze(self.slice_axis + 1), hr.squeeze(self.slice_axis + 1)
        return lr.contiguous(), hr.contiguous(), recs + noise_recs

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng(step_seed(self.cfg.seed, step, "patches"))
        lrs, hrs, records = [], [], []
        for b in range(self.cfg.data.batch_size):
            idx = int(rng.integers(0, self.n))
            img = _plain(self.ds[idx]["image"])
            lr, hr, rec = self.pair(img, rng, step_seed(self.cfg.seed, step, f"noise{b}"))
            lrs.append(lr)
            hrs.append(hr)
            records.append(rec)
        return {"lr": torch.stack(lrs), "hr": torch.stack(hrs), "degradations": records}

    def degrade_volume(self, img: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation pair of volume ``index``: (HR cropped to the factors, LR)."""
        from medgen.models.sr.degrade import crop_to_factors, make_lr

        hr = crop_to_factors(_plain(img), self.factors).contiguous()
        lr, _ = make_lr(hr, self.factors, profile=self.sr.profile, kspace_axes=self.sr.kspace_axes)
        lr, _ = self._noisy(lr.contiguous(), step_seed(self.cfg.seed, index, "val"))
        return hr, lr


class SRTask(TrainTask):
    card_task = "sr"
    val_metric = "val/psnr"

    def build(self) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        from medgen.models import build_model
        from medgen.models.sr.losses import (
            AdversarialLoss,
            LocalPerceptualLoss,
            build_discriminator,
        )

        cfg = self.cfg
        sr = cfg.task
        self.model = build_model(cfg.model).to(self.device)
        self.init_sha = None
        if sr.init_from:
            self._init_from(sr.init_from)
        skip = [p for n, p in self.model.named_parameters() if n.startswith("poly.")]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("poly.")]
        groups = [{"params": rest}]
        if skip:  # the learned skip's taps: few parameters, a larger step (sr.skip_lr_mult)
            groups.append({"params": skip, "lr": cfg.optim.lr * sr.skip_lr_mult, "weight_decay": 0.0})
        self.optimizers["model"] = torch.optim.Adam(groups, lr=cfg.optim.lr, betas=(0.9, 0.99),
                                                    weight_decay=cfg.optim.weight_decay)
        self.schedulers["model"] = self.trainer.make_scheduler(self.optimizers["model"])
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(sr.ema_decay),
                                 use_buffers=True)
        self.disc = None
        self.adv = None
        if sr.adv_weight > 0:
            self.disc = build_discriminator(sr.discriminator, cfg.model.spatial_dims,
                                            cfg.model.out_channels).to(self.device)
            self.adv = AdversarialLoss(sr.adv_criterion)
            self.optimizers["discriminator"] = torch.optim.Adam(
                self.disc.parameters(), lr=sr.d_lr or cfg.optim.lr, betas=(0.9, 0.99))
        self.perceptual = None
        if sr.perceptual_weight > 0 and sr.perceptual_weights:
            self.perceptual = LocalPerceptualLoss(sr.perceptual_weights,
                                                  cfg.model.spatial_dims).to(self.device)

    def _init_from(self, ckpt: str) -> None:
        """Start from another checkpoint's generator (its EMA weights when present)."""
        import json

        from medgen.models import parse_model_config, read_state_dict, state_dict_sha256

        path = Path(ckpt)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ConfigError("task.init_from", f"'{path.name}' is not a checkpoint folder (no config.json)")
        other = parse_model_config(json.loads(cfg_file.read_text()))
        mine = self.cfg.model.model_dump(exclude={"patch_size"})
        if other.model_dump(exclude={"patch_size"}) != mine:
            raise ConfigError("task.init_from", f"'{path.name}' holds a different generator config")
        weights = path / "ema.safetensors"
        if not weights.is_file():
            weights = path / "model.safetensors"
        sd = read_state_dict(weights, self.device)
        self.model.load_state_dict(sd)
        self.init_sha = state_dict_sha256(sd)
        log.info("generator initialised from %s (%s)", path.name, weights.name)

    def extra_modules(self):
        return {"discriminator": self.disc} if self.disc is not None else {}

    def sampler(self, dataset):
        return SRPairSampler(self.cfg, dataset)

    def phase(self, step: int) -> int:
        """1: L1 warm-up, 2: adversarial (only when a discriminator exists)."""
        return 2 if self.disc is not None and step >= self.cfg.task.warmup_steps else 1

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        from medgen.models.sr.losses import frequency_loss

        cfg, sr = self.cfg, self.cfg.task
        lr_in = batch["lr"].to(self.device)
        hr = batch["hr"].to(self.device)
        net = self.trainer.wrapped(self.model)
        net.train()
        phase = self.phase(step)
        parts: dict[str, float] = {"phase": float(phase)}
        dnet = None
        if phase == 2:
            dnet = self.trainer.wrapped(self.disc)
            dnet.train()
            for p in self.disc.parameters():
                p.requires_grad_(False)
        with self.autocast():
            out = net(lr_in).float()
            l1 = F.l1_loss(out, hr)
            loss = sr.l1_weight * l1
            parts["l1"] = float(l1.detach())
            if sr.freq_weight > 0:
                fl = frequency_loss(out, hr)
                loss = loss + sr.freq_weight * fl
                parts["freq"] = float(fl.detach())
            if phase == 2:
                adv = self.adv.generator(dnet, out)
                loss = loss + sr.adv_weight * adv
                parts["adv_g"] = float(adv.detach())
                if self.perceptual is not None:
                    pl = self.perceptual(out, hr)
                    loss = loss + sr.perceptual_weight * pl
                    parts["perceptual"] = float(pl.detach())
        gn = self.step_optimizer("model", loss, self.model.parameters(), cfg.optim.grad_clip)
        if gn is not None:
            parts["grad_norm"] = gn
        self.ema.update_parameters(self.model)
        if phase == 2:
            for p in self.disc.parameters():
                p.requires_grad_(True)
            with self.autocast():
                d_loss = self.adv.discriminator(dnet, out.detach(), hr)
            self.step_optimizer("discriminator", d_loss, self.disc.parameters(), None)
            parts["d_loss"] = float(d_loss.detach())
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.schedulers["model"].get_last_lr()[0])
        return parts

    # -- validation -------------------------------------------------------------------------
    def lr_patch(self) -> list[int]:
        """The sliding-window ROI on the LR input grid (the HR patch divided by the factors)."""
        return [p // f for p, f in zip(self.cfg.data.patch_size, self.cfg.model.scale_factors)]

    def upscale_volume(self, model, lr: torch.Tensor) -> torch.Tensor:
        """``(C, I, J, K)`` LR -> HR with ``model`` (sliding window; 2D models slice-wise)."""
        dims = self.cfg.model.spatial_dims
        if dims == 3:
            y = sliding_predict(model, lr[None], self.lr_patch(), sw_batch_size=self.cfg.val.sw_batch_size,
                                overlap=self.cfg.val.overlap, device=self.device, amp=self.amp)
            return y[0]
        s = int(self.cfg.model.slice_axis) + 1
        x = lr.movedim(s, -1).permute(3, 0, 1, 2)  # slices become the batch
        y = sliding_predict(model, x, self.lr_patch(), sw_batch_size=self.cfg.val.sw_batch_size,
                            overlap=self.cfg.val.overlap, device=self.device, amp=self.amp)
        return y.permute(1, 2, 3, 0).movedim(-1, s)

    @torch.no_grad()
    def validate(self, val_ds, sampler, run, step: int) -> dict[str, float]:
        from medgen.models.sr.degrade import interpolate_baseline
        from medgen.train.validation import volume_for_grid

        model = self.ema.module if self.ema is not None else self.model
        factors = sampler.factors
        rows, grid = [], None
        for i in range(len(val_ds)):
            hr, lr = sampler.degrade_volume(_plain(val_ds[i]["image"]), i)
            sr = self.upscale_volume(model, lr)
            base = torch.from_numpy(np.stack([interpolate_baseline(c.numpy(), factors, "bspline")
                                              for c in lr]))
            rows.append((*psnr_ssim(sr[None], hr[None], 3), *psnr_ssim(base[None], hr[None], 3)))
            if grid is None and self.cfg.val.images and run is not None:
                grid = {"bspline": volume_for_grid(base[None], 3), "sr": volume_for_grid(sr[None], 3),
                        "hr": volume_for_grid(hr[None], 3),
                        "difference": volume_for_grid((sr - hr)[None], 3)}
        a = np.array(rows)
        m = {"val/psnr": float(a[:, 0].mean()), "val/ssim": float(a[:, 1].mean()),
             "val/psnr_bspline": float(a[:, 2].mean()), "val/ssim_bspline": float(a[:, 3].mean())}
        m["val/psnr_gain"] = m["val/psnr"] - m["val/psnr_bspline"]
        m["val/ssim_gain"] = m["val/ssim"] - m["val/ssim_bspline"]
        if grid is not None:
            run.log_figure_grid(grid, name="val", step=step)
        return m

    # -- card / state -----------------------------------------------------------------------
    def card_fields(self):
        cfg, sr = self.cfg, self.cfg.task
        factors = "x".join(str(int(f)) for f in sr.factors)
        lineage = {"sr_factors": factors, "sr_profile": sr.profile,
                   "sr_kspace_axes": "-".join(str(a) for a in sr.kspace_axes) or "none",
                   "sr_adversarial": "on" if sr.adv_weight > 0 else "off",
                   "sr_warmup_steps": str(sr.warmup_steps),
                   "sr_ema_decay": str(sr.ema_decay)}
        if cfg.task.degradation:
            lineage["noise_preset"] = Path(cfg.task.degradation).stem
        if self.init_sha:
            lineage["sr_init_weights_sha256"] = self.init_sha
        fields = {"lineage": lineage, "patch_size": self.lr_patch()}
        spacings = [r.spacing for r in self.trainer.train_records]
        if spacings:  # the model's *input* is the LR grid
            fields["expected_spacing_mm"] = [float(np.median([s[i] for s in spacings])) * f
                                             for i, f in enumerate(sr.factors)]
        return fields

    def extra_state(self):
        n = getattr(self.ema, "n_averaged", None)
        return {"ema_n": int(n) if n is not None else 0}
