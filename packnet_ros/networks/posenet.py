"""PoseNet: relative camera motion from a target frame and its context frames.

Same layout as the original (SfMLearner-style encoder with GroupNorm), so official
weights load key for key.
"""
from __future__ import annotations

import torch
import torch.nn as nn

CONV_CHANNELS = (16, 32, 64, 128, 256, 256, 256)
KERNELS = (7, 5, 3, 3, 3, 3, 3)
POSE_SCALE = 0.01


def conv_gn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Stride-2 conv -> GroupNorm(16) -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, stride=2),
        nn.GroupNorm(16, out_channels),
        nn.ReLU(inplace=True),
    )


class PoseNet(nn.Module):
    """Predicts one 6-DoF pose per context image: translation xyz then euler angles xyz.

    The pose maps points from the target camera frame to the context camera frame
    (see geometry.pose_vec_to_mat). Outputs are scaled by 0.01 so training starts near
    the identity.
    """

    def __init__(self, nb_ref_imgs: int = 2):
        super().__init__()
        self.nb_ref_imgs = nb_ref_imgs
        in_channels = 3 * (1 + nb_ref_imgs)
        for i, (out_channels, k) in enumerate(zip(CONV_CHANNELS, KERNELS), start=1):
            setattr(self, f'conv{i}', conv_gn(in_channels, out_channels, k))
            in_channels = out_channels
        self.pose_pred = nn.Conv2d(in_channels, 6 * nb_ref_imgs, kernel_size=1, padding=0)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def scale_translations(self, factor: float) -> None:
        """Multiply every predicted translation by `factor` (exact: the output layer is linear)."""
        with torch.no_grad():
            for j in range(self.nb_ref_imgs):
                self.pose_pred.weight[6 * j:6 * j + 3] *= factor
                self.pose_pred.bias[6 * j:6 * j + 3] *= factor

    def initialize_translations(self, translations: list[tuple[float, float, float]]) -> None:
        """Bias the output so a fresh network predicts these translations (metres, one per
        context image, target -> context) on top of its small random output: a motion prior."""
        if len(translations) != self.nb_ref_imgs:
            raise ValueError(f'{len(translations)} translations for {self.nb_ref_imgs} context images')
        with torch.no_grad():
            for j, t in enumerate(translations):
                self.pose_pred.bias[6 * j:6 * j + 3] = torch.tensor(t) / POSE_SCALE

    def forward(self, target: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        """target [B,3,H,W], context N x [B,3,H,W] -> pose vectors [B,N,6]."""
        if len(context) != self.nb_ref_imgs:
            raise ValueError(f'PoseNet expects {self.nb_ref_imgs} context images, got {len(context)}')
        x = torch.cat([target, *context], 1)
        for i in range(1, len(CONV_CHANNELS) + 1):
            x = getattr(self, f'conv{i}')(x)
        pose = self.pose_pred(x).mean(dim=(2, 3))
        return POSE_SCALE * pose.view(pose.shape[0], self.nb_ref_imgs, 6)
