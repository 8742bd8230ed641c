"""Synthesis: ``vae-gen`` (autoencoder with a prior) and ``ldm`` (two-stage latent diffusion).

``ldm`` trains in one run: steps ``[0, synth.autoencoder_steps)`` fit the autoencoder, then the
latent scale is fixed from training latents and the remaining steps fit the diffusion UNet
(or the autoencoder comes from ``synth.autoencoder_checkpoint`` and every step trains the UNet).
Each phase has its own optimizer and cosine schedule. Randomness is the trainer's step-indexed
torch seed plus the sampler's ``step_seed`` streams, so resume is exact.

The validation metric ``val/score`` is minus the diffusion loss at fixed noise and timesteps on
the validation volumes (``ldm``; ``-1e6 - loss`` during the autoencoder phase so a checkpoint
without a trained UNet is never "best") or minus the VAE loss (``vae-gen``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from medgen.errors import ConfigError
from medgen.synth.data import (
    condition_vector,
    fill_conditions,
    output_spacing,
    prepare,
    slice_indices,
)
from medgen.train.data import step_seed
from medgen.train.tasks.base import TrainTask
from medgen.train.trainer import cosine_schedule

log = logging.getLogger("medgen.train")

AE_PHASE_SCORE = -1e6


def load_autoencoder_weights(model, ckpt_dir: str) -> None:
    """Copy a first stage from a checkpoint (``ldm``: ``autoencoder.*``; ``vae``/``vae-gen``:
    ``net.*``) into ``model.autoencoder``; raises ConfigError when shapes differ."""
    from pathlib import Path

    from medgen.models import read_state_dict

    path = Path(ckpt_dir)
    f = path / "model.safetensors"
    if not f.exists():
        raise ConfigError(path.name, "task.autoencoder_checkpoint: no model.safetensors")
    sd = read_state_dict(f)
    for prefix in ("autoencoder.", "net."):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            try:
                model.autoencoder.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise ConfigError(path.name, "autoencoder weights do not fit model "
                                  f"(ae_channels/latent_channels?): {str(exc).splitlines()[0][:120]}"
                                  ) from None
            return
    raise ConfigError(path.name, "no autoencoder weights in this checkpoint")


class SynthSampler:
    """Prepared training samples and the batch of a step (random items, random 2D slices)."""

    def __init__(self, task: SynthTask, dataset):
        cfg = task.cfg
        self.task = task
        self.seed = cfg.seed
        self.batch_size = cfg.data.batch_size
        self.dims = cfg.model.spatial_dims
        self.size = list(cfg.data.patch_size)
        s = cfg.task
        self.fit = s.fit
        self.slice_range = s.slice_range
        self.label_channels = s.label_channels
        self.conditions = task.model.config.conditions
        self.items, self.conds = self._load(dataset)
        if not self.items:
            raise ConfigError("data", "no usable training volume for synthesis (see the log)")

    def _load(self, dataset):
        items, conds = [], []
        for i in range(len(dataset)):
            it = dataset[i]
            c = condition_vector(self.conditions, it.get("labels", {}))
            if c is None:
                log.warning("record %s skipped: missing or unknown condition label", it.get("record"))
                continue
            if self.label_channels and "label" not in it:
                log.warning("record %s skipped: no label map", it.get("record"))
                continue
            img = torch.as_tensor(it["image"]).float()
            entry = {"image": img.as_tensor() if hasattr(img, "as_tensor") else img}
            if "label" in it:
                entry["label"] = torch.as_tensor(it["label"])
            if self.dims == 3 and self.fit == "resize":  # resample once
                entry = {"x": prepare(entry, self.size, 3, label_channels=self.label_channels)}
            items.append(entry)
            conds.append(c)
        return items, conds

    def sample(self, idx: int, rng: np.random.Generator | None) -> torch.Tensor:
        it = self.items[idx]
        if "x" in it:
            return it["x"]
        k = None
        if self.dims == 2:
            ks = slice_indices(int(it["image"].shape[-1]), self.slice_range)
            k = ks[len(ks) // 2] if rng is None else ks[int(rng.integers(0, len(ks)))]
        return prepare(it, self.size, self.dims, fit=self.fit, label_channels=self.label_channels,
                       slice_index=k, rng=rng)

    def cond_tensor(self, idxs: list[int]) -> torch.Tensor | None:
        if not self.conditions:
            return None
        return torch.tensor([self.conds[i] for i in idxs], dtype=torch.float32)

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng(step_seed(self.seed, step, "synth"))
        idxs = [int(rng.integers(0, len(self.items))) for _ in range(self.batch_size)]
        x = torch.stack([self.sample(i, rng) for i in idxs])
        return {"image": x, "cond": self.cond_tensor(idxs), "index": idxs}

    def stack(self, n: int) -> torch.Tensor:
        """Up to ``n`` deterministic training samples (latent-scale estimation)."""
        return torch.stack([self.sample(i, None) for i in range(min(n, len(self.items)))])


class SynthTask(TrainTask):
    card_task = "synth"
    val_metric = "val/score"

    # --- set-up ---------------------------------------------------------------------------------
    def _model_config(self):
        from medgen.models import parse_model_config

        cfg = self.cfg
        s = cfg.task
        recs = self.trainer.train_records
        try:
            conditions = fill_conditions(s.conditions, [r.labels for r in recs])
        except ValueError as exc:
            raise ConfigError("task.conditions", str(exc)) from None
        dims = cfg.model.spatial_dims
        spacing = output_spacing([r.shape for r in recs], [r.spacing for r in recs],
                                 cfg.data.patch_size, dims, s.fit)
        data = cfg.model.model_dump()
        chans = 1 + s.label_channels if s.label_channels else cfg.model.in_channels
        data.update(conditions=[c.model_dump() for c in conditions],
                    label_channels=s.label_channels, in_channels=chans, out_channels=chans,
                    image_size=list(cfg.data.patch_size), spacing_mm=spacing,
                    modality=cfg.card.modality if cfg.card.modality != "any" else "OT",
                    fit=s.fit, slice_range=list(s.slice_range))
        if cfg.model.name == "ldm":
            data["diffusion"] = s.diffusion.model_dump()
        return parse_model_config(data)

    def build(self) -> None:
        from medgen.models import build_model

        cfg = self.cfg
        s = cfg.task
        self.s = s
        self.kl_weight = s.kl(cfg.model.name)
        mcfg = self._model_config()
        self.model = build_model(mcfg).to(self.device)
        self.is_ldm = mcfg.name == "ldm"
        o = cfg.optim
        self.ae_steps = s.autoencoder_steps if self.is_ldm else 0
        if self.is_ldm:
            if s.autoencoder_checkpoint:
                load_autoencoder_weights(self.model, s.autoencoder_checkpoint)
            if self.ae_steps:
                self.optimizers["autoencoder"] = torch.optim.AdamW(
                    self.model.autoencoder.parameters(), lr=s.autoencoder_lr or o.lr,
                    weight_decay=o.weight_decay)
                self.schedulers["autoencoder"] = torch.optim.lr_scheduler.LambdaLR(
                    self.optimizers["autoencoder"],
                    cosine_schedule(self.ae_steps, min(o.warmup_steps, self.ae_steps // 2), o.min_lr_ratio))
            gen_params = list(self.model.diffusion.parameters())
            n_gen = o.max_steps - self.ae_steps
        else:
            gen_params = list(self.model.parameters())
            n_gen = o.max_steps
        self.gen_params = gen_params
        self.optimizers["generator"] = torch.optim.AdamW(gen_params, lr=o.lr,
                                                         weight_decay=o.weight_decay)
        self.schedulers["generator"] = torch.optim.lr_scheduler.LambdaLR(
            self.optimizers["generator"], cosine_schedule(n_gen, o.warmup_steps, o.min_lr_ratio))
        if s.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(s.ema_decay),
                                     use_buffers=True)
        self._sampler: SynthSampler | None = None

    def sampler(self, dataset):
        self._sampler = SynthSampler(self, dataset)
        return self._sampler

    # --- one step ------------------------------------------------------------------------------
    def _ae_step(self, x, cond) -> dict[str, float]:
        from medgen.models.module import crop_to, pad_to_multiple
        from medgen.models.synth.common import kl_loss, reconstruction_loss

        m = self.model
        with self.autocast():
            if self.is_ldm:
                xp, sizes = pad_to_multiple(x, m.config.ae_divisor())
                rec, mu, sigma = self.trainer.wrapped(m.autoencoder)(xp)
                rec = crop_to(rec, sizes)
                name, params = "autoencoder", m.autoencoder.parameters()
            else:
                rec, mu, sigma = self.trainer.wrapped(m)(x, cond)
                name, params = "generator", m.parameters()
            loss, parts = reconstruction_loss(rec.float(), x, m.config.label_channels, self.s.recon)
            kl = kl_loss(mu.float(), sigma.float())
            loss = loss + self.kl_weight * kl
        parts["kl"] = float(kl.detach())
        gn = self.step_optimizer(name, loss, params, self.cfg.optim.grad_clip)
        if gn is not None:
            parts["grad_norm"] = gn
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.schedulers[name].get_last_lr()[0])
        return parts

    def _diffusion_step(self, x, cond) -> dict[str, float]:
        m = self.model
        if float(m.latent_scale) == 0.0:  # first UNet step: fix the latent scale
            m.autoencoder.eval()
            with torch.no_grad():
                v = m.set_latent_scale(self._sampler.stack(16).to(self.device))
            log.info("latent scale set to %.4f", v)
        m.autoencoder.eval()
        m.autoencoder.requires_grad_(False)
        lat = m.latent_shape() if list(x.shape[2:]) == m.image_size() else None
        with torch.no_grad():  # a posterior sample (mu + sigma * eps) * scale, as in MONAI's LDM
            eps = torch.randn((x.shape[0], *lat), device=x.device) if lat else None
            z0 = m.latents(x, noise=eps).float()
        if cond is not None and self.s.cond_drop_prob > 0:
            keep = (torch.rand(cond.shape[0], device=cond.device) >= self.s.cond_drop_prob).float()
            cond = cond * keep[:, None]
        noise = torch.randn_like(z0)
        t = torch.randint(0, m.config.diffusion.num_train_timesteps, (z0.shape[0],),
                          device=z0.device)
        sched = m.scheduler()
        with self.autocast():
            zt = sched.add_noise(original_samples=z0, noise=noise, timesteps=t)
            pred = self.trainer.wrapped(m.diffusion)(zt, t, cond)
            target = noise if m.config.diffusion.objective == "ddpm" else z0 - noise
            loss = torch.nn.functional.mse_loss(pred.float(), target)
        parts = {"diffusion": float(loss.detach())}
        gn = self.step_optimizer("generator", loss, self.gen_params, self.cfg.optim.grad_clip)
        if gn is not None:
            parts["grad_norm"] = gn
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.schedulers["generator"].get_last_lr()[0])
        return parts

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        x = batch["image"].to(self.device)
        cond = batch["cond"].to(self.device) if batch["cond"] is not None else None
        self.model.train()
        if self.is_ldm and step >= self.ae_steps:
            parts = self._diffusion_step(x, cond)
            update_ema = True
        else:
            parts = self._ae_step(x, cond)
            update_ema = not self.is_ldm
        if self.ema is not None and update_ema:
            self.ema.update_parameters(self.model)
        return parts

    # --- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, val_ds, sampler, run, step: int) -> dict[str, float]:
        from medgen.models.synth.common import kl_loss, reconstruction_loss

        m = self.model
        m.eval()
        vs = SynthSampler.__new__(SynthSampler)  # same preparation, validation volumes
        vs.__dict__.update({k: v for k, v in sampler.__dict__.items() if k not in ("items", "conds")})
        vs.items, vs.conds = vs._load(val_ds)
        if not vs.items:
            return {self.val_metric: AE_PHASE_SCORE * 2}
        ae_losses, diff_losses = [], []
        diffusion_phase = self.is_ldm and step > self.ae_steps
        for i in range(len(vs.items)):
            x = vs.sample(i, None)[None].to(self.device)
            cond = vs.cond_tensor([i])
            cond = cond.to(self.device) if cond is not None else None
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(step_seed(self.cfg.seed, i, "val"))
                if self.is_ldm:
                    loss, _ = m.autoencoder_loss(x, None, kl_weight=self.kl_weight,
                                                 recon=self.s.recon)
                else:
                    rec, mu, sigma = m(x, cond)
                    loss, _ = reconstruction_loss(rec, x, m.config.label_channels, self.s.recon)
                    loss = loss + self.kl_weight * kl_loss(mu, sigma)
                ae_losses.append(float(loss))
                if diffusion_phase:
                    z0 = m.latents(x)
                    g = torch.Generator().manual_seed(step_seed(self.cfg.seed, i, "val-noise"))
                    noise = torch.randn(z0.shape, generator=g).to(self.device)
                    T = m.config.diffusion.num_train_timesteps
                    t = torch.tensor([int(T * (j + 0.5) / 4) for j in range(4)], device=self.device)
                    d = m.diffusion_loss(z0.expand(4, *z0.shape[1:]),
                                         None if cond is None else cond.expand(4, -1),
                                         noise.expand(4, *noise.shape[1:]), t)
                    diff_losses.append(float(d))
        metrics = {"val/ae_loss": float(np.mean(ae_losses))}
        if self.is_ldm:
            if diff_losses:
                metrics["val/diffusion_loss"] = float(np.mean(diff_losses))
                metrics[self.val_metric] = -metrics["val/diffusion_loss"]
            else:
                metrics[self.val_metric] = AE_PHASE_SCORE - metrics["val/ae_loss"]
        else:
            metrics[self.val_metric] = -metrics["val/ae_loss"]
        if run is not None and self.cfg.val.images and (diffusion_phase or not self.is_ldm):
            cond = vs.cond_tensor([0])
            gen = m.generate([step_seed(self.cfg.seed, step, "val-sample")], cond,
                             steps=self.s.val_sample_steps)
            img, _ = m.split_output(gen)
            real = vs.sample(0, None)[:1]
            grid = {"real": real[0].numpy(), "generated": img[0, 0].cpu().numpy()}
            if self.dims2():
                grid = {k: v[..., None] for k, v in grid.items()}
            run.log_figure_grid(grid, name="val", step=step, diff=None)
        return metrics

    def dims2(self) -> bool:
        return self.cfg.model.spatial_dims == 2

    # --- checkpoint extras ---------------------------------------------------------------------------
    def card_fields(self):
        c = self.model.config
        lineage = {"synth_model": c.name,
                   "conditions": "+".join(x.name for x in c.conditions) or "none",
                   "label_channels": str(c.label_channels)}
        if self.is_ldm:
            lineage["objective"] = c.diffusion.objective
        return {"lineage": lineage}

    def extra_state(self):
        return {"ema_n": int(self.ema.n_averaged) if self.ema is not None else 0}
