"""Depth inference: image in, metric depth out, on CPU or GPU."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from packnet_ros.checkpoints import load_checkpoint
from packnet_ros.image import check_network_size, to_tensor
from packnet_ros.networks import PackNet

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
DEFAULT_SIZE = (192, 640)


def resolve_device(name: str) -> torch.device:
    """'auto' picks the first GPU when there is one; 'cuda' without a GPU is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but no CUDA GPU is available')
    return device


def mask_out_of_range(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth outside [min_depth, max_depth] becomes NaN: 'no valid measurement' (REP 118)."""
    return depth.masked_fill((depth < min_depth) | (depth > max_depth), float('nan'))


@dataclass
class DepthEstimator:
    """A depth network ready for inference at a fixed input size.

    infer() takes RGB uint8 at any size and returns depth in metres at network
    resolution: 1 / inverse depth, NaN outside [min_depth, max_depth] (by default
    every depth is kept).
    """

    net: PackNet
    height: int = DEFAULT_SIZE[0]
    width: int = DEFAULT_SIZE[1]
    device: torch.device = torch.device('cpu')
    precision: str = 'fp32'
    min_depth: float = 0.0
    max_depth: float = float('inf')
    identity: str = ''
    step: int = 0

    def __post_init__(self) -> None:
        check_network_size(self.height, self.width)
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}')
        self.net = self.net.to(self.device).eval()
        if self.device.type == 'cuda':  # 2D convolutions only: the packing blocks' 3D ones have 5D weights
            for module in self.net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, height: int | None = None, width: int | None = None,
                        device: str = 'cpu', **kwargs) -> 'DepthEstimator':
        """Load weights; the input size defaults to the one the checkpoint was trained at."""
        ckpt = load_checkpoint(path)
        net, _ = ckpt.networks()
        trained = ckpt.input_size or DEFAULT_SIZE
        return cls(net, height or trained[0], width or trained[1], resolve_device(device), identity=ckpt.name,
                   step=ckpt.step, **kwargs)

    @torch.inference_mode()
    def infer_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B,3,height,width] in [0,1] -> depth [B,1,height,width] metres (float32, NaN out of range)."""
        rgb = rgb.to(self.device, non_blocking=True)
        if self.device.type == 'cuda':
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            inv_depth = self.net(rgb)
        return mask_out_of_range(1.0 / inv_depth.float().clamp(min=1e-6), self.min_depth, self.max_depth)

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> depth float32 [height,width] metres."""
        batch = to_tensor(rgb, self.height, self.width)
        if self.device.type == 'cuda':
            batch = batch.pin_memory()  # lets the host->device copy run asynchronously
        return self.infer_tensor(batch)[0, 0].cpu().numpy()
