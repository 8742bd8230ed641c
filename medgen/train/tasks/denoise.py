"""Denoising: ``vae`` / ``unet`` trained noisy -> clean, or self-supervised with blind-spot masks."""

from __future__ import annotations

import numpy as np
import torch

from medgen.models.denoise.losses import reconstruction_loss
from medgen.train.data import PatchSampler, step_seed
from medgen.train.tasks.base import TrainTask
from medgen.train.validation import psnr_ssim, sliding_predict, volume_for_grid


class DenoiseTask(TrainTask):
    card_task = "denoise"
    val_metric = "val/psnr"

    def build(self) -> None:
        from medgen.models import build_model

        cfg = self.cfg
        self.model = build_model(cfg.model).to(self.device)
        self.is_vae = cfg.model.name == "vae"
        self.loss_fn = None
        if self.is_vae:
            from medgen.models.denoise.losses import DenoiseVAELoss

            self.loss_fn = DenoiseVAELoss(cfg.task.loss, cfg.model.spatial_dims,
                                          cfg.model.in_channels).to(self.device)
        self.masker = None
        if cfg.task.mode == "self-supervised":
            from medgen.models.denoise.blindspot import BlindSpotMasker

            self.masker = BlindSpotMasker(cfg.task.blindspot)
        self.optimizers["model"] = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                                     weight_decay=cfg.optim.weight_decay)
        self.schedulers["model"] = self.trainer.make_scheduler(self.optimizers["model"])
        if self.loss_fn is not None and self.loss_fn.uses_adversarial:
            self.optimizers["discriminator"] = torch.optim.AdamW(
                self.loss_fn.discriminator.parameters(), lr=cfg.optim.lr)

    def extra_modules(self):
        if self.loss_fn is not None and self.loss_fn.uses_adversarial:
            return {"discriminator": self.loss_fn.discriminator}
        return {}

    def sampler(self, dataset):
        return PatchSampler(self.cfg, dataset)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        cfg = self.cfg
        noisy = batch["noisy"].to(self.device)
        clean = batch["clean"].to(self.device)
        mask = None
        if self.masker is not None:  # no clean target: predict hidden voxels of the noisy input
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, "blindspot"))
            inp, mask = self.masker(noisy.cpu(), gen)
            inp, mask, target = inp.to(self.device), mask.to(self.device), noisy
        else:
            inp, target = noisy, clean
        net = self.trainer.wrapped(self.model)
        net.train()
        parts: dict[str, float] = {}
        with self.autocast():
            out = net(inp)
            if self.is_vae:
                rec, mu, sigma = out
                loss, parts = self.loss_fn(rec.float(), target, mu, sigma, mask=mask)
            else:
                rec = out
                if mask is not None:
                    loss = self.masker.loss(rec.float(), target, mask)
                else:
                    loss = reconstruction_loss(rec.float(), target, cfg.task.loss.recon)
        gn = self.step_optimizer("model", loss, self.model.parameters(), cfg.optim.grad_clip)
        if gn is not None:
            parts["grad_norm"] = gn
        if "discriminator" in self.optimizers:
            d_loss = self.loss_fn.discriminator_loss(rec.float(), clean)
            self.step_optimizer("discriminator", d_loss, self.loss_fn.discriminator.parameters(), None)
            parts["d_loss"] = float(d_loss.detach())
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.schedulers["model"].get_last_lr()[0])
        return parts

    @torch.no_grad()
    def validate(self, val_ds, sampler, run, step: int) -> dict[str, float]:
        cfg = self.cfg
        dims = cfg.model.spatial_dims
        rows = []
        grid = None
        for i in range(len(val_ds)):
            item = val_ds[i]
            clean = torch.as_tensor(item["image"]).float()
            clean = clean.as_tensor() if hasattr(clean, "as_tensor") else clean
            noisy = sampler.degrade_volume(clean, i, item.get("normalization"))
            if dims == 2:  # slice-wise: the slices become the batch
                x, y = noisy.permute(3, 0, 1, 2), clean.permute(3, 0, 1, 2)
            else:
                x, y = noisy[None], clean[None]
            den = sliding_predict(self.model, x, list(cfg.data.patch_size),
                                  sw_batch_size=cfg.val.sw_batch_size, overlap=cfg.val.overlap,
                                  device=self.device, amp=self.amp)
            rows.append((*psnr_ssim(den, y, dims), *psnr_ssim(x, y, dims)))
            if grid is None and cfg.val.images and run is not None:
                grid = {"noisy": volume_for_grid(x, dims), "denoised": volume_for_grid(den, dims),
                        "clean": volume_for_grid(y, dims), "difference": volume_for_grid(den - y, dims)}
        a = np.array(rows)
        m = {"val/psnr": float(a[:, 0].mean()), "val/ssim": float(a[:, 1].mean()),
             "val/psnr_noisy": float(a[:, 2].mean()), "val/ssim_noisy": float(a[:, 3].mean())}
        m["val/psnr_gain"] = m["val/psnr"] - m["val/psnr_noisy"]
        if grid is not None:
            run.log_figure_grid(grid, name="val", step=step)
        return m

    def card_fields(self):
        from pathlib import Path

        lineage = {"mode": str(self.cfg.task.mode)}
        if self.cfg.task.degradation:
            lineage["degradation_preset"] = Path(self.cfg.task.degradation).stem
        return {"lineage": lineage}
