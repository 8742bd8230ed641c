"""What every synthesis model shares: the generator interface, per-sample noise, AE losses.

Per-sample randomness
---------------------
``generate`` takes one integer seed per sample. Each sample's noise (the initial latent and any
noise a stochastic sampler adds later) is drawn from its *own* CPU ``torch.Generator`` seeded
with that seed, then moved to the model's device. A sample therefore depends on its seed only,
never on which other samples share its batch or on the device's RNG. (Floating-point results of
batched convolutions can still differ in the last bits between batch sizes; the synthesis pipeline
regenerates a sample bit-exactly by recomputing its fixed batch block, see
:mod:`medgen.synth.sampling`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from medgen.models.module import MedgenModule


class NoiseStreams:
    """One CPU generator per sample; ``draw(shape)`` stacks one draw per sample."""

    def __init__(self, seeds: Sequence[int]):
        self.gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.gens)

    def draw(self, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        out = torch.stack([torch.randn(tuple(shape), generator=g) for g in self.gens])
        return out.to(device)


def amp_context(device: torch.device, amp: torch.dtype | None):
    """Autocast on CUDA only (the shared rule of :func:`medgen.utils.device.autocast`)."""
    from medgen.utils.device import autocast

    return autocast(device, amp)


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent elements, mean over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2).clamp_min(1e-12)) - 1)
    return kl.flatten(1).sum(1).mean()


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, label_channels: int,
                        recon: str = "l1") -> tuple[torch.Tensor, dict[str, float]]:
    """Intensity loss on the image channel(s) + cross-entropy on one-hot label channels."""
    n_img = target.shape[1] - label_channels
    fn = F.l1_loss if recon == "l1" else F.mse_loss
    loss = fn(rec[:, :n_img].float(), target[:, :n_img].float())
    parts = {"recon": float(loss.detach())}
    if label_channels:
        ce = F.cross_entropy(rec[:, n_img:].float(), target[:, n_img:].argmax(1))
        loss = loss + ce
        parts["label_ce"] = float(ce.detach())
    return loss, parts


class SynthModule(MedgenModule):
    """Base of the synthesis families.

    Subclasses implement :meth:`generate`, :meth:`autoencoder_loss`, :meth:`encode_mean` and
    ``infer`` (the deterministic autoencoder reconstruction, so ``medgen.models.predict`` works on
    every registered model).
    """

    def cond_dim(self) -> int:
        return self.config.cond_dim()

    def image_size(self) -> list[int]:
        size = self.config.image_size or self.config.patch_size
        if size is None:
            raise ValueError("model config has no image_size (train it with task: synth)")
        return list(size)

    def check_cond(self, cond: torch.Tensor | None, n: int) -> torch.Tensor | None:
        d = self.cond_dim()
        if d == 0:
            if cond is not None and cond.numel():
                raise ValueError("this model is unconditional")
            return None
        if cond is None:
            raise ValueError(f"this model is conditional: pass a ({n}, {d}) condition tensor")
        if tuple(cond.shape) != (n, d):
            raise ValueError(f"condition tensor must be ({n}, {d}), got {tuple(cond.shape)}")
        return cond.float()

    def split_output(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(image channels, label map (B, *spatial) int64 or None)`` of a generated batch."""
        lc = self.config.label_channels
        if not lc:
            return y, None
        n_img = y.shape[1] - lc
        return y[:, :n_img], y[:, n_img:].argmax(1)

    def generate(self, seeds: Sequence[int], cond: torch.Tensor | None = None, *,
                 sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None,
                 amp: torch.dtype | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def autoencoder_loss(self, x: torch.Tensor, cond: torch.Tensor | None, *, kl_weight: float,
                         recon: str = "l1") -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError  # pragma: no cover

    def encode_mean(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) embedding: the encoder's posterior mean, average-pooled to a 2^d grid.

        Used as an optional embedding by the memorization check and the quality report.
        """
        mu = self.encode_mean(x, None)
        grid = (2,) * (mu.ndim - 2)
        pool = F.adaptive_avg_pool3d if mu.ndim == 5 else F.adaptive_avg_pool2d
        return pool(mu.float(), grid).flatten(1)
