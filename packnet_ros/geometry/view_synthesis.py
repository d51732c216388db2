"""Rebuild a target view from a context image through depth and relative pose."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from packnet_ros.geometry.camera import Camera
from packnet_ros.geometry.pose import transform_points


def view_synthesis(ref_image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                   T_target_to_ref: torch.Tensor, ref_K: torch.Tensor | None = None,
                   padding_mode: str = 'zeros') -> torch.Tensor:
    """Warp ref_image [B,C,H,W] into the target view.

    depth [B,1,H,W] is the target depth; K / ref_K [B,3,3] the target / reference
    intrinsics at this resolution; T_target_to_ref [B,4,4] maps target-frame points into
    the reference frame. Pixels that land outside the reference image read `padding_mode`.
    """
    points = Camera(K).reconstruct(depth)
    coords = Camera(K if ref_K is None else ref_K).project(transform_points(T_target_to_ref, points))
    return F.grid_sample(ref_image, coords, mode='bilinear', padding_mode=padding_mode, align_corners=True)
