"""Back-projection of a depth image into an organised point cloud (numpy, no ROS)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _rays(fx: float, fy: float, cx: float, cy: float, w: int, h: int, stride: int) -> np.ndarray:
    """Per-pixel (x/z, y/z) of the camera rays: computed once per camera, size and stride."""
    u = np.arange(0, w, stride, dtype=np.float32)
    v = np.arange(0, h, stride, dtype=np.float32)
    rays = np.empty((len(v), len(u), 2), dtype=np.float32)
    rays[..., 0] = ((u - cx) / fx)[None, :]
    rays[..., 1] = ((v - cy) / fy)[:, None]
    return rays


def depth_to_points(depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, stride: int = 1) -> np.ndarray:
    """Organised XYZ + packed RGB [h,w,4] float32 in the optical frame (x right, y down, z forward).

    depth [H,W] metres (NaN invalid) with intrinsics K at that resolution; rgb [H,W,3] uint8.
    The rgb channel holds 0x00RRGGBB reinterpreted as float32 (the PCL convention rviz reads).
    """
    h, w = depth.shape
    rays = _rays(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), w, h, stride)
    d = depth[::stride, ::stride]
    points = np.empty(d.shape + (4,), dtype=np.float32)
    np.multiply(rays[..., 0], d, out=points[..., 0])
    np.multiply(rays[..., 1], d, out=points[..., 1])
    points[..., 2] = d
    c = rgb[::stride, ::stride].astype(np.uint32)
    points[..., 3] = ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)
    return points
