"""Validation helpers shared by tasks: full-volume sliding-window prediction and PSNR/SSIM."""

from __future__ import annotations

import torch


def sliding_predict(model, x: torch.Tensor, roi: list[int], *, sw_batch_size: int = 4,
                    overlap: float = 0.25, device: torch.device | None = None, amp=None) -> torch.Tensor:
    """MONAI sliding-window inference with Gaussian blending through the ``predict`` contract."""
    from monai.inferers import sliding_window_inference

    from medgen.models import predict

    device = device or next(model.parameters()).device
    roi = [min(p, s) for p, s in zip(roi, x.shape[2:])]
    from medgen.utils.device import autocast

    with autocast(device, amp), torch.no_grad():
        out = sliding_window_inference(x.to(device), roi, sw_batch_size, lambda t: predict(model, t),
                                       overlap=overlap, mode="gaussian")
    return out.float().cpu()


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor, spatial_dims: int) -> tuple[float, float]:
    """PSNR and SSIM of ``pred`` vs ``target`` ((B, C, *spatial)), data range = target's range.

    The SSIM window shrinks for small volumes (MONAI's default 11 fails below 11 voxels a side).
    """
    from monai.metrics import PSNRMetric, SSIMMetric

    rng = float(target.max() - target.min()) or 1.0
    psnr = float(PSNRMetric(max_val=rng)(pred, target).mean())
    sides = [s if s % 2 else s - 1 for s in target.shape[2:]]
    win = max(3, min(7, *sides))
    ssim = float(SSIMMetric(spatial_dims=spatial_dims, data_range=rng, win_size=win)(pred, target).mean())
    return psnr, ssim


def volume_for_grid(t: torch.Tensor, spatial_dims: int):
    """(B, C, *spatial) -> a 3D numpy volume for PNG grids (2D: slices stacked along k)."""
    if spatial_dims == 2:
        return t[:, 0].permute(1, 2, 0).numpy()
    return t[0, 0].numpy()
