"""Which torch device a 'device' option names: serving and training resolve it alike."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' picks the first GPU when there is one; 'cuda' without a GPU is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but no CUDA GPU is available')
    return device
