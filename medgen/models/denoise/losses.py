"""Losses of the denoising models.

:class:`DenoiseVAELoss`: reconstruction (L1 or L2) + ``kl_weight`` * KL(q(z|x) || N(0, I))
+ optional ``adv_weight`` * adversarial term with MONAI's ``PatchDiscriminator`` and
``PatchAdversarialLoss`` (the recipe of MONAI's generative AutoencoderKL tutorials). The
discriminator lives in this module so the trainer saves it in the checkpoint's train state.

:func:`reconstruction_loss` is the plain loss used for the UNet baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.models.denoise.config import VAELossConfig


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1 or L2 (MSE) loss."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown reconstruction loss '{kind}' (l1, l2)")


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims, averaged over the batch."""
    var = z_sigma.float().pow(2)
    kl = 0.5 * (z_mu.float().pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(1).mean()


class DenoiseVAELoss(nn.Module):
    """Generator-side loss of the denoising VAE, plus the discriminator's loss when adversarial.

    Parameters
    ----------
    config : VAELossConfig
    spatial_dims : int
    in_channels : int
        Channels of the images the discriminator sees.

    Examples
    --------
    >>> loss_fn = DenoiseVAELoss(VAELossConfig(), spatial_dims=3, in_channels=1)
    >>> rec, mu, sigma = model(noisy)                          # doctest: +SKIP
    >>> loss, parts = loss_fn(rec, clean, mu, sigma)           # doctest: +SKIP
    >>> d_loss = loss_fn.discriminator_loss(rec, clean)        # doctest: +SKIP
    """

    def __init__(self, config: VAELossConfig, spatial_dims: int, in_channels: int = 1) -> None:
        super().__init__()
        self.config = config
        self.discriminator: nn.Module | None = None
        self.adversarial: nn.Module | None = None
        if config.adv_weight > 0:
            from monai.losses import PatchAdversarialLoss
            from monai.networks.nets import PatchDiscriminator

            d = config.discriminator
            self.discriminator = PatchDiscriminator(
                spatial_dims=spatial_dims, channels=d.channels, in_channels=in_channels,
                out_channels=1, num_layers_d=d.num_layers_d, norm=d.norm.upper())
            self.adversarial = PatchAdversarialLoss(criterion=config.adv_criterion)

    @property
    def uses_adversarial(self) -> bool:
        return self.discriminator is not None

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        assert self.discriminator is not None
        return self.discriminator(x.contiguous().float())[-1]

    def forward(self, recon: torch.Tensor, target: torch.Tensor, z_mu: torch.Tensor,
                z_sigma: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts (floats, for logging).

        ``mask`` (bool, broadcastable to ``recon``) restricts the reconstruction term to the
        masked voxels (blind-spot training).
        """
        if mask is None:
            rec = reconstruction_loss(recon, target, self.config.recon)
        else:
            from medgen.models.denoise.blindspot import masked_loss

            rec = masked_loss(recon, target, mask, self.config.recon)
        kl = kl_divergence(z_mu, z_sigma)
        total = rec + self.config.kl_weight * kl
        parts = {"recon": float(rec.detach()), "kl": float(kl.detach())}
        if self.discriminator is not None and self.adversarial is not None:
            adv = self.adversarial(self._logits(recon), target_is_real=True,
                                   for_discriminator=False)
            total = total + self.config.adv_weight * adv
            parts["adv_g"] = float(adv.detach())
        parts["total"] = float(total.detach())
        return total, parts

    def discriminator_loss(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of the discriminator step (real = ``target``, fake = detached ``recon``)."""
        if self.discriminator is None or self.adversarial is None:
            raise RuntimeError("adversarial term disabled (adv_weight == 0)")
        fake = self.adversarial(self._logits(recon.detach()), target_is_real=False,
                                for_discriminator=True)
        real = self.adversarial(self._logits(target), target_is_real=True, for_discriminator=True)
        return 0.5 * (fake + real)
