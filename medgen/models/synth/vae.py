"""``vae-gen``: a (conditional) generative VAE on MONAI's AutoencoderKL, sampled from its prior."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.networks.nets import AutoencoderKL

from medgen.models.module import crop_to, pad_to_multiple
from medgen.models.synth.common import (
    NoiseStreams,
    SynthModule,
    amp_context,
    kl_loss,
    reconstruction_loss,
)
from medgen.models.synth.config import GenVAEConfig


class GenerativeVAE(SynthModule):
    """``forward(x, cond) -> (reconstruction, z_mu, z_sigma)``; ``generate`` decodes prior draws.

    Conditioning (when the config has conditions): the encoder input gets ``cond_dim`` constant
    channels holding the conditioning vector, and the decoder input is ``z + W c`` where ``W c``
    is a full latent map: a learned condition-dependent prior mean ``p(z | c) = N(W c, I)``.
    """

    def __init__(self, config: GenVAEConfig) -> None:
        super().__init__(config)
        d = config.cond_dim()
        self.net = AutoencoderKL(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels + d,
            out_channels=config.out_channels,
            num_res_blocks=(config.num_res_blocks,) * len(config.channels),
            channels=tuple(config.channels),
            attention_levels=(False,) * len(config.channels),
            latent_channels=config.latent_channels,
            norm_num_groups=config.norm_num_groups,
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )
        # conditional prior mean: one latent map per conditioning vector (a spatially constant
        # shift cannot say "bright region on the left"; convolutions are translation-equivariant)
        self.latent_grid = ([-(-s // self.size_divisor) for s in config.image_size]
                            if config.image_size else [1] * config.spatial_dims)
        n_lat = config.latent_channels * math.prod(self.latent_grid)
        self.cond_shift = torch.nn.Linear(d, n_lat) if d else None

    # --- pieces --------------------------------------------------------------------------------
    def _with_cond(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.cond_shift is None:
            return x
        maps = cond.to(x.dtype).view(*cond.shape, *([1] * (x.ndim - 2)))
        return torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], 1)

    def _shift(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.cond_shift is None:
            return z
        s = self.cond_shift(cond.to(z.dtype)).view(z.shape[0], -1, *self.latent_grid)
        if list(z.shape[2:]) != self.latent_grid:  # another grid than the generated size
            s = s.mean(tuple(range(2, z.ndim)), keepdim=True)
        return z + s

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        cond = self.check_cond(cond, x.shape[0])
        return self.net.encode(self._with_cond(x, cond))

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.check_cond(cond, z.shape[0])
        return self.net.decode(self._shift(z, cond))

    def encode_mean(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None and self.cond_dim():
            cond = torch.zeros(x.shape[0], self.cond_dim(), device=x.device)
        xp, _ = pad_to_multiple(x, self.size_divisor)
        return self.encode(xp, cond)[0]

    # --- training ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        xp, sizes = pad_to_multiple(x, self.size_divisor)
        mu, sigma = self.encode(xp, cond)
        z = self.net.sampling(mu, sigma)
        return crop_to(self.decode(z, cond), sizes), mu, sigma

    def autoencoder_loss(self, x, cond, *, kl_weight, recon="l1"):
        rec, mu, sigma = self(x, cond)
        loss, parts = reconstruction_loss(rec, x, self.config.label_channels, recon)
        kl = kl_loss(mu.float(), sigma.float())
        parts["kl"] = float(kl.detach())
        return loss + kl_weight * kl, parts

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (posterior mean, null condition)."""
        mu = self.encode_mean(x)
        cond = torch.zeros(x.shape[0], self.cond_dim(), device=x.device) if self.cond_dim() else None
        return self.decode(mu, cond)

    # --- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, seeds: Sequence[int], cond: torch.Tensor | None = None, *,
                 sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None,
                 amp: torch.dtype | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Decode ``z ~ N(0, I)`` (one draw per seed); ``(B, C, *image_size)``.

        ``sampler``, ``steps``, ``guidance`` and ``eta`` are diffusion settings and are ignored.
        """
        dev = next(self.parameters()).device
        size = self.image_size()
        cond = self.check_cond(None if cond is None else cond.to(dev), len(seeds))
        lat = [-(-s // self.size_divisor) for s in size]
        z = NoiseStreams(seeds).draw((self.config.latent_channels, *lat), dev)
        with amp_context(dev, amp):
            out = self.decode(z, cond)
        if progress:
            progress(1, 1)
        return crop_to(out.float(), size)


def build_gen_vae(config: GenVAEConfig) -> GenerativeVAE:
    """Registry builder for ``name: vae-gen``."""
    return GenerativeVAE(config)
