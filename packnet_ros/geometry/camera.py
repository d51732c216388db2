"""Pinhole camera: intrinsics scaling, back-projection and projection.

Pixel centres are at integer coordinates (0..W-1), as in the original implementation.
"""
from __future__ import annotations

import numpy as np
import torch


def scale_intrinsics(K: torch.Tensor | np.ndarray, x_scale: float, y_scale: float | None = None):
    """Intrinsics [...,3,3] (tensor or array, returned as the same type) of an image resized
    by (x_scale, y_scale).

    The principal point moves with pixel *edges*, hence the half-pixel shift: a resize
    maps continuous coordinate u to (u + 0.5) * s - 0.5.
    """
    y_scale = x_scale if y_scale is None else y_scale
    K = K.clone() if isinstance(K, torch.Tensor) else np.array(K, dtype=np.float64)
    K[..., 0, 0] *= x_scale
    K[..., 1, 1] *= y_scale
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * x_scale - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * y_scale - 0.5
    return K


def invert_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of pinhole intrinsics [B,3,3] (no skew)."""
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    Kinv = torch.zeros_like(K)
    Kinv[:, 0, 0] = 1.0 / fx
    Kinv[:, 1, 1] = 1.0 / fy
    Kinv[:, 0, 2] = -cx / fx
    Kinv[:, 1, 2] = -cy / fy
    Kinv[:, 2, 2] = 1.0
    return Kinv


def pixel_grid(b: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Homogeneous pixel coordinates [B,3,H,W] (u, v, 1)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                            torch.arange(w, dtype=dtype, device=device), indexing='ij')
    grid = torch.stack([xs, ys, torch.ones_like(xs)], 0)
    return grid.unsqueeze(0).expand(b, 3, h, w)


class Camera:
    """Batch of pinhole cameras with intrinsics K [B,3,3]."""

    def __init__(self, K: torch.Tensor):
        if K.dim() == 2:
            K = K.unsqueeze(0)
        self.K = K

    def scaled(self, x_scale: float, y_scale: float | None = None) -> 'Camera':
        if x_scale == 1.0 and (y_scale is None or y_scale == 1.0):
            return self
        return Camera(scale_intrinsics(self.K, x_scale, y_scale))

    def reconstruct(self, depth: torch.Tensor) -> torch.Tensor:
        """depth [B,1,H,W] -> 3D points [B,3,H,W] in this camera's frame."""
        b, c, h, w = depth.shape
        if c != 1:
            raise ValueError(f'depth must have one channel, got shape {tuple(depth.shape)}')
        rays = invert_intrinsics(self.K).bmm(pixel_grid(b, h, w, depth.dtype, depth.device).reshape(b, 3, -1))
        return rays.view(b, 3, h, w) * depth

    def project_pixels(self, points: torch.Tensor) -> torch.Tensor:
        """3D points [B,3,H,W] in this camera's frame -> pixel coordinates [B,H,W,2]."""
        b, _, h, w = points.shape
        p = self.K.bmm(points.reshape(b, 3, -1))
        z = p[:, 2].clamp(min=1e-5)
        return torch.stack([p[:, 0] / z, p[:, 1] / z], -1).view(b, h, w, 2)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """3D points [B,3,H,W] -> grid_sample coordinates [B,H,W,2] in [-1,1] (align_corners)."""
        _, _, h, w = points.shape
        uv = self.project_pixels(points)
        scale = uv.new_tensor([2.0 / (w - 1), 2.0 / (h - 1)])
        return uv * scale - 1.0
