"""Edge-aware smoothness of mean-normalised inverse depth."""
from __future__ import annotations

import torch


def smoothness_loss(inv_depths: list[torch.Tensor], images: list[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of |grad(inv_depth / mean)| * exp(-|grad image|), scale i weighted 1/2^i.

    Normalising by the mean inverse depth keeps the term from shrinking depth scale.
    """
    total = 0.0
    for i, (inv_depth, image) in enumerate(zip(inv_depths, images)):
        d = inv_depth / inv_depth.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        dx = d[..., :, :-1] - d[..., :, 1:]
        dy = d[..., :-1, :] - d[..., 1:, :]
        wx = torch.exp(-(image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True))
        wy = torch.exp(-(image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True))
        total = total + ((dx * wx).abs().mean() + (dy * wy).abs().mean()) / 2 ** i
    return total / len(inv_depths)
