"""Denoising VAE on MONAI's AutoencoderKL, trained noisy -> clean.

``forward(noisy)`` returns ``(reconstruction, z_mu, z_sigma)`` with a reparameterised latent
sample (training); ``infer`` decodes the posterior mean (inference, deterministic). With
``residual: true`` the decoder output is read as the noise estimate and the reconstruction is
``input - decoded``. Measured (docs/models.md): for white noise this does not learn at all, since
the noise cannot pass the latent bottleneck; it is meant for low-frequency, structured corruptions
(bias field, ghosting) and stays off by default. ``sample_prior`` decodes ``z ~ N(0, I)`` for synthesis.
"""

from __future__ import annotations

import torch
from monai.networks.nets import AutoencoderKL

from medgen.models.denoise.config import VAEConfig
from medgen.models.module import MedgenModule, crop_to, pad_to_multiple


class DenoisingVAE(MedgenModule):
    """AutoencoderKL wrapper implementing the medgen inference contract."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.net = AutoencoderKL(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            num_res_blocks=tuple(config.res_blocks()),
            channels=tuple(config.channels),
            attention_levels=tuple(config.attention()),
            latent_channels=config.latent_channels,
            norm_num_groups=config.norm_num_groups,
            with_encoder_nonlocal_attn=config.with_nonlocal_attn,
            with_decoder_nonlocal_attn=config.with_nonlocal_attn,
            use_checkpoint=config.use_checkpoint,
        )
        self.residual = bool(config.residual)
        with torch.no_grad():
            if config.posterior_logvar_init is not None:
                head = self.net.quant_conv_log_sigma.conv
                head.weight.zero_()
                head.bias.fill_(config.posterior_logvar_init)
            if self.residual:  # decoded noise starts at 0: the untrained model is the identity
                last = [m for m in self.net.decoder.modules()
                        if isinstance(m, torch.nn.modules.conv._ConvNd)][-1]
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()

    def _out(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        return x - decoded if self.residual else decoded

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: ``(reconstruction, z_mu, z_sigma)``; spatial sizes are padded if needed."""
        xp, sizes = pad_to_multiple(x, self.size_divisor)
        z_mu, z_sigma = self.net.encode(xp)
        z = self.net.sampling(z_mu, z_sigma)
        rec = crop_to(self._out(xp, self.net.decode(z)), sizes)
        return rec, z_mu, z_sigma

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic output: decode the posterior mean."""
        z_mu, _ = self.net.encode(x)
        return self._out(x, self.net.decode(z_mu))

    def latent_shape(self, spatial: tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """``(latent_channels, *spatial // size_divisor)`` for an image of size ``spatial``."""
        return (self.config.latent_channels, *[-(-s // self.size_divisor) for s in spatial])

    @torch.no_grad()
    def sample_prior(self, n: int, spatial: tuple[int, ...] | list[int],
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` latents drawn from the prior N(0, I) (synthesis; ignores ``residual``).

        The latents are drawn on the generator's device (CPU by default) then moved, so a seed
        gives the same samples on CPU and GPU up to float rounding.
        """
        dev = next(self.parameters()).device
        gdev = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n, *self.latent_shape(spatial)), generator=generator, device=gdev)
        out = self.net.decode(z.to(dev))
        return crop_to(out, list(spatial))


def build_vae(config: VAEConfig) -> DenoisingVAE:
    """Registry builder for ``name: vae``."""
    return DenoisingVAE(config)
