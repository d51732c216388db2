"""Image helpers: reading, network input tensors, depth colourisation."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.tif', '.tiff')


class ImageError(ValueError):
    """An image cannot be read or used."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H,W,3]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f'cannot read image {path} (missing, not an image, or corrupt)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_network_size(height: int, width: int) -> None:
    """PackNet packs 5 times, so both sides must be positive multiples of 32."""
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ValueError(f'network input size {height}x{width} must be positive multiples of 32 (e.g. 192x640)')


def resize_area(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The image at height x width by area resampling, which training and serving share (a
    network sees frames resampled as it learnt from); one already that size is returned as is."""
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def rgb_to_tensor(rgb: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """RGB uint8 [...,H,W,3] -> float [...,3,H,W] in [0,1]. Moved to `device` while still uint8:
    a quarter of the bytes of the floats."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb))
    if device is not None:
        pixels = pixels.to(device)
    return pixels.movedim(-1, -3).float().div_(255.0)


def to_tensor(rgb: np.ndarray, height: int, width: int) -> torch.Tensor:
    """RGB uint8 [H,W,3] -> float [1,3,height,width] in [0,1] (area resampling, as for training)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f'expected an RGB image [H,W,3], got shape {rgb.shape}')
    return rgb_to_tensor(resize_area(rgb, height, width))[None]


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth [H,W] metres -> RGB uint8 [H,W,3], magma on inverse depth (near = bright).

    Inverse depth spreads colour where depth matters (nearby); it is normalised by its
    95th percentile, as the original's visualisation does. Invalid pixels are black.
    """
    valid = np.isfinite(depth) & (depth > 0)
    inv = np.zeros(depth.shape, dtype=np.float32)
    inv[valid] = 1.0 / depth[valid]
    if valid.any():
        inv = np.clip(inv / max(np.percentile(inv[valid], 95), 1e-6), 0, 1)
    bgr = cv2.applyColorMap((inv * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    bgr[~valid] = 0
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
