"""SE(3) helpers on batches of 4x4 homogeneous matrices."""
from __future__ import annotations

import torch


def euler_to_mat(angles: torch.Tensor) -> torch.Tensor:
    """Euler angles [B,3] (rx, ry, rz) -> rotation [B,3,3] = Rx @ Ry @ Rz (original convention)."""
    x, y, z = angles[:, 0], angles[:, 1], angles[:, 2]
    zeros, ones = torch.zeros_like(z), torch.ones_like(z)
    cz, sz, cy, sy, cx, sx = z.cos(), z.sin(), y.cos(), y.sin(), x.cos(), x.sin()
    rz = torch.stack([cz, -sz, zeros, sz, cz, zeros, zeros, zeros, ones], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zeros, sy, zeros, ones, zeros, -sy, zeros, cy], 1).view(-1, 3, 3)
    rx = torch.stack([ones, zeros, zeros, zeros, cx, -sx, zeros, sx, cx], 1).view(-1, 3, 3)
    return rx.bmm(ry).bmm(rz)


def pose_vec_to_mat(vec: torch.Tensor, mode: str = 'euler') -> torch.Tensor:
    """Pose vector [B,6] (tx, ty, tz, rx, ry, rz) -> [B,4,4] mapping target points to context."""
    if mode != 'euler':
        raise ValueError(f'unsupported rotation mode {mode!r}; only "euler" is implemented')
    T = torch.eye(4, dtype=vec.dtype, device=vec.device).repeat(vec.shape[0], 1, 1)
    T[:, :3, :3] = euler_to_mat(vec[:, 3:])
    T[:, :3, 3] = vec[:, :3]
    return T


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms [B,4,4] using R^T, without a general matrix inverse."""
    Tinv = torch.eye(4, dtype=T.dtype, device=T.device).repeat(T.shape[0], 1, 1)
    Rt = T[:, :3, :3].transpose(1, 2)
    Tinv[:, :3, :3] = Rt
    Tinv[:, :3, 3] = -Rt.bmm(T[:, :3, 3:]).squeeze(-1)
    return Tinv


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply [B,4,4] to points [B,3,H,W] -> [B,3,H,W]."""
    b, _, h, w = points.shape
    out = T[:, :3, :3].bmm(points.reshape(b, 3, -1)) + T[:, :3, 3:]
    return out.view(b, 3, h, w)
