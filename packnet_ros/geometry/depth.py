"""Depth from the networks' inverse depth."""
from __future__ import annotations

import torch

# Inverse depth is clamped here before inverting: a head's zero reads as 1000 km, never inf.
MIN_INVERSE_DEPTH = 1e-6


def inv2depth(inv_depth: torch.Tensor) -> torch.Tensor:
    """Depth (metres) from inverse depth (1/m), the one conversion losses, training and serving share."""
    return 1.0 / inv_depth.clamp(min=MIN_INVERSE_DEPTH)
