"""Denoising model families (``vae``, ``unet``), their losses and blind-spot masking."""
