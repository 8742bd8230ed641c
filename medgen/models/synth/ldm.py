"""``ldm``: latent diffusion with MONAI's AutoencoderKL (first stage) and DiffusionModelUNet.

Training (driven by :mod:`medgen.train.tasks.synth`): the autoencoder is trained first
(:meth:`autoencoder_loss`) or loaded from a checkpoint, then frozen; the latent scale is set to
``1 / std`` of training latents (:meth:`set_latent_scale`), and the UNet learns to predict the
noise (``objective: ddpm``, MONAI ``DDPMScheduler.add_noise``) or the rectified-flow velocity
``z0 - noise`` (``objective: rflow``, MONAI ``RFlowScheduler``) - :meth:`diffusion_loss`.

Sampling (:meth:`generate`) is written out step by step (the diffusers habit) rather than hidden
in an inferer, so per-sample noise streams, classifier-free guidance and AMP are visible: DDPM
(ancestral) and DDIM updates are spelled out from the scheduler's ``alphas_cumprod`` (MONAI's
``DDPMScheduler.step`` assumes consecutive timesteps and draws noise from the device RNG; we need
strided steps and one noise stream per sample), RFlow uses ``RFlowScheduler.step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from medgen.models.module import crop_to, pad_to_multiple
from medgen.models.synth.common import (
    NoiseStreams,
    SynthModule,
    amp_context,
    kl_loss,
    reconstruction_loss,
)
from medgen.models.synth.config import LDMConfig


class CondEmbedding(torch.nn.Module):
    """Conditioning vector -> timestep-embedding space (replaces MONAI's ``nn.Embedding``).

    ``DiffusionModelUNet`` adds ``class_embedding(class_labels)`` to the timestep embedding; this
    MLP takes the float conditioning vector instead of an integer label, so class one-hots and
    scalar attributes go through the same path.
    """

    def __init__(self, cond_dim: int, emb_dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(cond_dim, emb_dim), torch.nn.SiLU(),
                                       torch.nn.Linear(emb_dim, emb_dim))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c.float())


class ConditionedUNet(torch.nn.Module):
    """MONAI ``DiffusionModelUNet`` + the condition's latent map: ``forward(z, t, cond)``.

    One module, so DDP wraps (and syncs) everything the diffusion phase trains.
    """

    def __init__(self, unet: DiffusionModelUNet, cond_map: torch.nn.Module | None,
                 grid: list[int] | None):
        super().__init__()
        self.unet = unet
        self.cond_map = cond_map
        self.grid = grid

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = z
        if self.cond_map is not None:
            if cond is None:
                raise ValueError("conditional model: cond is required")
            cmap = self.cond_map(cond.float()).view(z.shape[0], -1, *self.grid).to(z.dtype)
            if list(z.shape[2:]) != self.grid:
                cmap = F.interpolate(cmap, size=list(z.shape[2:]), mode="nearest")
            x = torch.cat([z, cmap], 1)
        return self.unet(x, timesteps=t, class_labels=cond)


class LatentDiffusion(SynthModule):
    """Autoencoder + conditioned diffusion UNet + latent scale (a buffer, saved with the weights)."""

    def __init__(self, config: LDMConfig) -> None:
        super().__init__(config)
        c = config
        self.autoencoder = AutoencoderKL(
            spatial_dims=c.spatial_dims, in_channels=c.in_channels, out_channels=c.out_channels,
            num_res_blocks=(c.ae_num_res_blocks,) * len(c.ae_channels),
            channels=tuple(c.ae_channels), attention_levels=(False,) * len(c.ae_channels),
            latent_channels=c.latent_channels, norm_num_groups=c.ae_norm_num_groups,
            with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
        d = c.cond_dim()
        # conditioning enters twice: a learned latent-sized map concatenated to the UNet input
        # (local: "this region is brighter") and an MLP embedding added to the timestep
        # embedding (global), see CondEmbedding
        grid = [-(-s // c.ae_divisor()) for s in c.image_size] if c.image_size else None
        cond_map = (torch.nn.Linear(d, c.latent_channels * math.prod(grid)) if d and grid
                    else None)
        unet = DiffusionModelUNet(
            spatial_dims=c.spatial_dims,
            in_channels=c.latent_channels * (2 if cond_map is not None else 1),
            out_channels=c.latent_channels, num_res_blocks=c.unet_num_res_blocks,
            channels=tuple(c.unet_channels), attention_levels=tuple(c.attention()),
            norm_num_groups=c.unet_norm_num_groups, num_head_channels=c.num_head_channels,
            num_class_embeds=1 if d else None)
        if d:
            unet.class_embedding = CondEmbedding(d, c.unet_channels[0] * 4)
        self.diffusion = ConditionedUNet(unet, cond_map, grid)
        self.register_buffer("latent_scale", torch.tensor(0.0))  # 0: not set yet

    # --- first stage -----------------------------------------------------------------------
    def encode_mean(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        xp, _ = pad_to_multiple(x, self.config.ae_divisor())
        return self.autoencoder.encode(xp)[0]

    def autoencoder_loss(self, x, cond, *, kl_weight, recon="l1"):
        xp, sizes = pad_to_multiple(x, self.config.ae_divisor())
        rec, mu, sigma = self.autoencoder(xp)
        loss, parts = reconstruction_loss(crop_to(rec, sizes), x, self.config.label_channels, recon)
        kl = kl_loss(mu.float(), sigma.float())
        parts["kl"] = float(kl.detach())
        return loss + kl_weight * kl, parts

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic autoencoder reconstruction (decode the posterior mean)."""
        return self.autoencoder.decode(self.autoencoder.encode(x)[0])

    @torch.no_grad()
    def set_latent_scale(self, x: torch.Tensor) -> float:
        """Set ``latent_scale = 1 / std`` of the (posterior-mean) latents of ``x``."""
        std = float(self.encode_mean(x).float().std())
        value = 1.0 / std if std > 1e-8 and math.isfinite(std) else 1.0
        self.latent_scale.fill_(value)
        return value

    def latents(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents of ``x``: ``(mu + sigma * noise) * latent_scale`` (noise: N(0, I))."""
        xp, _ = pad_to_multiple(x, self.config.ae_divisor())
        with torch.no_grad():
            mu, sigma = self.autoencoder.encode(xp)
        z = mu if noise is None else mu + sigma * noise
        return z * self.scale()

    def scale(self) -> torch.Tensor:
        return torch.where(self.latent_scale > 0, self.latent_scale, torch.ones_like(self.latent_scale))

    # --- diffusion ---------------------------------------------------------------------------
    def scheduler(self, kind: str | None = None):
        """A MONAI scheduler for ``kind`` (ddpm, ddim, rflow); default: the training objective."""
        from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

        s = self.config.diffusion
        kind = kind or s.objective
        if kind == "rflow":
            return RFlowScheduler(num_train_timesteps=s.num_train_timesteps,
                                  use_discrete_timesteps=True, sample_method="uniform",
                                  spatial_dim=self.config.spatial_dims)
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        kw = {"schedule": s.schedule, "clip_sample": False}
        if s.schedule != "cosine":
            # betas are given for T = 1000 (the usual convention) and scaled by 1000 / T, so the
            # chain ends near pure noise for any T (unscaled, T = 100 would end at 63% signal)
            f = 1000.0 / s.num_train_timesteps
            kw.update(beta_start=min(0.5, s.beta_start * f), beta_end=min(0.999, s.beta_end * f))
        return cls(num_train_timesteps=s.num_train_timesteps, **kw)

    def unet_out(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.diffusion(z, t, cond)

    def diffusion_loss(self, z0: torch.Tensor, cond: torch.Tensor | None,
                       noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """MSE of the UNet's noise (ddpm) or velocity (rflow) prediction at timesteps ``t``."""
        sched = self.scheduler()
        zt = sched.add_noise(original_samples=z0, noise=noise, timesteps=t)
        pred = self.unet_out(zt, t, cond)
        target = noise if self.config.diffusion.objective == "ddpm" else z0 - noise
        return F.mse_loss(pred.float(), target.float())

    def sample_timesteps(self, z0: torch.Tensor, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
        """Training timesteps: uniform integers in [0, T) (both objectives), on CPU generator."""
        T = self.config.diffusion.num_train_timesteps
        return torch.randint(0, T, (z0.shape[0],), generator=generator).to(z0.device)

    # --- sampling -----------------------------------------------------------------------------
    def latent_shape(self) -> tuple[int, ...]:
        div = self.config.ae_divisor()
        return (self.config.latent_channels, *[-(-s // div) for s in self.image_size()])

    def _guided(self, z, t, cond, guidance: float):
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        if cond is None:
            return self.unet_out(z, tt, None)
        if guidance == 1.0:
            return self.unet_out(z, tt, cond)
        both = self.unet_out(torch.cat([z, z]), torch.cat([tt, tt]),
                             torch.cat([cond, torch.zeros_like(cond)]))
        c, u = both.chunk(2)
        return u + guidance * (c - u)

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], cond: torch.Tensor | None = None, *,
                 sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None,
                 amp: torch.dtype | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Generate one sample per seed: ``(B, C, *image_size)`` (image + label logits).

        Parameters
        ----------
        seeds : sequence of int
            One noise seed per sample (see :mod:`medgen.models.synth.common`).
        cond : torch.Tensor, optional
            ``(B, cond_dim)`` conditioning vectors (:func:`encode_conditions`).
        sampler, steps, guidance, eta
            Override the config's ``diffusion`` defaults.
        amp : torch.dtype, optional
            Autocast dtype on CUDA (ignored on CPU).
        progress : callable, optional
            ``progress(step, total)`` after each denoising step.
        """
        s = self.config.diffusion
        sampler = sampler or s.default_sampler()
        s.check_sampler(sampler)
        steps = int(steps or s.inference_steps)
        guidance = s.guidance_scale if guidance is None else float(guidance)
        eta = s.eta if eta is None else float(eta)
        if sampler == "ddpm":
            steps = min(steps, s.num_train_timesteps)
        dev = next(self.parameters()).device
        cond = self.check_cond(None if cond is None else cond.to(dev), len(seeds))
        streams = NoiseStreams(seeds)
        shape = self.latent_shape()
        z = streams.draw(shape, dev)
        sched = self.scheduler(sampler)
        T = s.num_train_timesteps
        if sampler == "rflow":
            sched.set_timesteps(num_inference_steps=steps, device=dev,
                                input_img_size_numel=math.prod(shape[1:]))
            ts = [int(t) for t in sched.timesteps]
        else:
            # evenly strided integer timesteps from T-1 down to 0 (DDPM with steps == T is the
            # full ancestral chain)
            ts = sorted({int(round(x)) for x in torch.linspace(T - 1, 0, steps).tolist()},
                        reverse=True)
        acp = sched.alphas_cumprod.to(torch.float64) if sampler != "rflow" else None
        with amp_context(dev, amp):
            for i, t in enumerate(ts):
                out = self._guided(z, t, cond, guidance).float()
                if sampler == "rflow":
                    nxt = ts[i + 1] if i + 1 < len(ts) else 0
                    z, _ = sched.step(out, t, z, nxt)
                else:
                    t_prev = ts[i + 1] if i + 1 < len(ts) else -1
                    ab_t = float(acp[t])
                    ab_prev = float(acp[t_prev]) if t_prev >= 0 else 1.0
                    x0 = (z - math.sqrt(1 - ab_t) * out) / math.sqrt(ab_t)
                    if sampler == "ddim":
                        sigma = (eta * math.sqrt((1 - ab_prev) / (1 - ab_t))
                                 * math.sqrt(max(0.0, 1 - ab_t / ab_prev)))
                        z = (math.sqrt(ab_prev) * x0
                             + math.sqrt(max(0.0, 1 - ab_prev - sigma ** 2)) * out)
                    else:  # ddpm posterior q(z_prev | z_t, x0) with the effective beta of the stride
                        beta = 1 - ab_t / ab_prev
                        mean = (math.sqrt(ab_prev) * beta / (1 - ab_t) * x0
                                + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t) * z)
                        sigma = math.sqrt(beta * (1 - ab_prev) / (1 - ab_t)) if t_prev >= 0 else 0.0
                        z = mean
                    if sigma > 0:
                        z = z + sigma * streams.draw(shape, dev)
                if progress:
                    progress(i + 1, len(ts))
            img = self.autoencoder.decode(z / self.scale())
        return crop_to(img.float(), self.image_size())


def build_ldm(config: LDMConfig) -> LatentDiffusion:
    """Registry builder for ``name: ldm``."""
    return LatentDiffusion(config)
