"""Evaluation of outputs against references (denoising and other paired tasks)."""
