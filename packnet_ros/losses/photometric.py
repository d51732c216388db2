"""Self-supervised multi-view photometric loss (SSIM + L1, min reduction, auto-mask)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from packnet_ros.geometry import Camera, inv2depth, view_synthesis
from packnet_ros.losses.smoothness import smoothness_loss


def ssim(x: torch.Tensor, y: torch.Tensor, C1: float = 1e-4, C2: float = 9e-4) -> torch.Tensor:
    """Per-pixel SSIM [B,C,H,W] over 3x3 windows with reflection padding."""
    x, y = F.pad(x, [1, 1, 1, 1], mode='reflect'), F.pad(y, [1, 1, 1, 1], mode='reflect')
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    mu_xy, mu_x2, mu_y2 = mu_x * mu_y, mu_x.pow(2), mu_y.pow(2)
    sigma_x = F.avg_pool2d(x.pow(2), 3, 1) - mu_x2
    sigma_y = F.avg_pool2d(y.pow(2), 3, 1) - mu_y2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_xy
    num = (2 * mu_xy + C1) * (2 * sigma_xy + C2)
    den = (mu_x2 + mu_y2 + C1) * (sigma_x + sigma_y + C2)
    return num / den


def resize_like(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of image to target's spatial size (no-op when equal)."""
    if image.shape[-2:] == target.shape[-2:]:
        return image
    return F.interpolate(image, size=target.shape[-2:], mode='bilinear', align_corners=True)


class SelfSupervisedLoss(nn.Module):
    """Photometric reprojection loss over context frames plus edge-aware smoothness.

    Each scale's inverse depth warps every context image into the target view; the
    per-pixel error is ssim_weight * (1-SSIM)/2 + (1-ssim_weight) * L1. With
    reduce='min' the per-pixel minimum over context frames handles occlusion, and
    automask adds the *unwarped* context errors to that minimum so pixels that do not
    change between frames (static scene, objects moving with the camera) give no
    gradient. Inverse depths at lower resolution are compared against resized images
    with scaled intrinsics; the original upsamples them to full resolution first.
    """

    def __init__(self, ssim_weight: float = 0.85, smooth_weight: float = 0.001,
                 automask: bool = True, reduce: str = 'min', C1: float = 1e-4, C2: float = 9e-4,
                 clip_loss: float = 0.0, padding_mode: str = 'zeros'):
        super().__init__()
        if reduce not in ('min', 'mean'):
            raise ValueError(f'reduce must be "min" or "mean", got {reduce!r}')
        if automask and reduce != 'min':
            raise ValueError('automask needs reduce="min": the mask is the minimum over unwarped errors')
        self.ssim_weight = ssim_weight
        self.smooth_weight = smooth_weight
        self.automask = automask
        self.reduce = reduce
        self.C1, self.C2 = C1, C2
        self.clip_loss = clip_loss
        self.padding_mode = padding_mode

    def photometric_error(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel error [B,1,H,W] between two images [B,3,H,W]."""
        l1 = (estimate - target).abs().mean(1, keepdim=True)
        if self.ssim_weight > 0:
            dssim = ((1 - ssim(estimate, target, self.C1, self.C2)) / 2).clamp(0, 1).mean(1, keepdim=True)
            error = self.ssim_weight * dssim + (1 - self.ssim_weight) * l1
        else:
            error = l1
        if self.clip_loss > 0:
            error = error.clamp(max=float(error.mean() + self.clip_loss * error.std()))
        return error

    def _reduce(self, errors: list[torch.Tensor]) -> torch.Tensor:
        if self.reduce == 'min':
            return torch.cat(errors, 1).min(1, keepdim=True)[0].mean()
        return sum(e.mean() for e in errors) / len(errors)

    def forward(self, target: torch.Tensor, context: list[torch.Tensor], inv_depths: list[torch.Tensor],
                K: torch.Tensor, poses: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """target [B,3,H,W], context N x [B,3,H,W], inv_depths S x [B,1,h,w],
        K [B,3,3] at target resolution, poses N x [B,4,4] target -> context."""
        if len(context) != len(poses):
            raise ValueError(f'{len(context)} context images but {len(poses)} poses')
        width = target.shape[-1]
        photometric, targets = [], []
        for inv_depth in inv_depths:
            cam = Camera(K).scaled(inv_depth.shape[-1] / width, inv_depth.shape[-2] / target.shape[-2])
            tgt = resize_like(target, inv_depth)
            depth = inv2depth(inv_depth)
            errors = []
            for ref, pose in zip(context, poses):
                ref = resize_like(ref, inv_depth)
                warped = view_synthesis(ref, depth, cam.K, pose, padding_mode=self.padding_mode)
                errors.append(self.photometric_error(warped, tgt))
                if self.automask:
                    errors.append(self.photometric_error(ref, tgt))
            photometric.append(self._reduce(errors))
            targets.append(tgt)
        photometric_loss = sum(photometric) / len(photometric)
        smooth = self.smooth_weight * smoothness_loss(inv_depths, targets)
        return {'loss': photometric_loss + smooth, 'photometric': photometric_loss, 'smoothness': smooth}
