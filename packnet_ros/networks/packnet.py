"""PackNet depth networks (Guizilini et al., CVPR 2020), version 01.

`PackNet01` and `PackNetSlim01` reproduce the official presets exactly (state_dict keys,
shapes and outputs). `width` scales every channel count of the same blocks so a small
model can train at interactive speed on a CPU; width=1.0 is the official network.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from packnet_ros.networks.layers import Conv2D, InvDepth, PackLayerConv3d, UnpackLayerConv3d, residual_block

NUM_BLOCKS = (2, 2, 3, 3)
PACK_KERNELS = (5, 3, 3, 3, 3)


def scaled_channels(base: int, width: float, multiple: int) -> int:
    """Round base*width to a positive multiple of `multiple` (GroupNorm needs 16 | C)."""
    return max(multiple, int(round(base * width / multiple)) * multiple)


class PackNet(nn.Module):
    """Encoder of packing blocks, decoder of unpacking blocks, inverse depth at 4 scales.

    Input height and width must be multiples of 32 (five packing levels).
    Eval mode: forward returns the finest inverse depth [B,1,H,W].
    Train mode: forward returns 4 inverse depths, finest first, [B,1,H/2^i,W/2^i].
    """

    arch: str = ''
    base_ni: int = 0
    base_channels: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    num_3d_feat: int = 0

    def __init__(self, version: str = '1A', width: float = 1.0, min_depth: float = 0.5):
        super().__init__()
        if version != '1A':
            raise ValueError(f'unsupported PackNet version {version!r}; only "1A" (skip concatenation, '
                             'the published models) is implemented')
        if width <= 0:
            raise ValueError(f'width must be positive, got {width}')
        self.version = version
        self.width = float(width)
        d = self.num_3d_feat
        # GroupNorm(16) after the unpacking conv (C*4/d channels) needs 16 | C*4/d.
        multiple = max(16, 4 * d)
        ni = scaled_channels(self.base_ni, width, multiple)
        n1, n2, n3, n4, n5 = (scaled_channels(c, width, multiple) for c in self.base_channels)
        self.channels = (ni, n1, n2, n3, n4, n5)

        self.pre_calc = Conv2D(3, ni, 5, 1)
        self.pack1 = PackLayerConv3d(n1, PACK_KERNELS[0], d=d)
        self.pack2 = PackLayerConv3d(n2, PACK_KERNELS[1], d=d)
        self.pack3 = PackLayerConv3d(n3, PACK_KERNELS[2], d=d)
        self.pack4 = PackLayerConv3d(n4, PACK_KERNELS[3], d=d)
        self.pack5 = PackLayerConv3d(n5, PACK_KERNELS[4], d=d)

        self.conv1 = Conv2D(ni, n1, 7, 1)
        self.conv2 = residual_block(n1, n2, NUM_BLOCKS[0], 1)
        self.conv3 = residual_block(n2, n3, NUM_BLOCKS[1], 1)
        self.conv4 = residual_block(n3, n4, NUM_BLOCKS[2], 1)
        self.conv5 = residual_block(n4, n5, NUM_BLOCKS[3], 1)

        # Decoder: unpack, concatenate the encoder skip (and the upsampled coarser
        # inverse depth from scale 3 down), then fuse.
        self.unpack5 = UnpackLayerConv3d(n5, n5, 3, d=d)
        self.unpack4 = UnpackLayerConv3d(n5, n4, 3, d=d)
        self.unpack3 = UnpackLayerConv3d(n4, n3, 3, d=d)
        self.unpack2 = UnpackLayerConv3d(n3, n2, 3, d=d)
        self.unpack1 = UnpackLayerConv3d(n2, n1, 3, d=d)

        self.iconv5 = Conv2D(n5 + n4, n5, 3, 1)
        self.iconv4 = Conv2D(n4 + n3, n4, 3, 1)
        self.iconv3 = Conv2D(n3 + n2 + 1, n3, 3, 1)
        self.iconv2 = Conv2D(n2 + n1 + 1, n2, 3, 1)
        self.iconv1 = Conv2D(n1 + ni + 1, n1, 3, 1)

        self.disp4_layer = InvDepth(n4, min_depth=min_depth)
        self.disp3_layer = InvDepth(n3, min_depth=min_depth)
        self.disp2_layer = InvDepth(n2, min_depth=min_depth)
        self.disp1_layer = InvDepth(n1, min_depth=min_depth)

        self.init_weights()
        # Multiplies every output depth: a learnt global scale lives here, outside the decoder
        # (which feeds coarse inverse depths back into finer scales), so folding it is exact.
        self.depth_scale = 1.0

    @property
    def heads(self) -> tuple[InvDepth, ...]:
        return self.disp1_layer, self.disp2_layer, self.disp3_layer, self.disp4_layer

    @property
    def min_depth(self) -> float:
        """Depth = min_depth / sigmoid(head output) (times depth_scale): the heads' nearest depth."""
        return self.disp1_layer.min_depth

    def set_min_depth(self, min_depth: float) -> None:
        if not (min_depth > 0 and math.isfinite(min_depth)):
            raise ValueError(f'min_depth must be positive and finite, got {min_depth}')
        for head in self.heads:
            head.min_depth = float(min_depth)

    def initialize_depth(self, depth: float) -> None:
        """Make a fresh network predict about `depth` metres everywhere (instead of 2 x min_depth),
        through the heads' bias: a prior for training from scratch."""
        if not depth > 2 * self.min_depth:
            raise ValueError(f'initial depth {depth} must exceed twice min_depth ({self.min_depth})')
        with torch.no_grad():
            for head in self.heads:
                head.conv1.bias.fill_(math.log(self.min_depth / (depth - self.min_depth)))

    def init_weights(self) -> None:
        """Xavier-uniform convolutions with zero bias, as the original trains from."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """rgb [B,3,H,W] in [0,1] -> inverse depth (see class docstring)."""
        x = self.pre_calc(rgb)
        x1p = self.pack1(self.conv1(x))
        x2p = self.pack2(self.conv2(x1p))
        x3p = self.pack3(self.conv3(x2p))
        x4p = self.pack4(self.conv4(x3p))
        x5p = self.pack5(self.conv5(x4p))

        iconv5 = self.iconv5(torch.cat((self.unpack5(x5p), x4p), 1))
        iconv4 = self.iconv4(torch.cat((self.unpack4(iconv5), x3p), 1))
        disp4 = self.disp4_layer(iconv4)
        iconv3 = self.iconv3(torch.cat((self.unpack3(iconv4), x2p, _upsample(disp4)), 1))
        disp3 = self.disp3_layer(iconv3)
        iconv2 = self.iconv2(torch.cat((self.unpack2(iconv3), x1p, _upsample(disp3)), 1))
        disp2 = self.disp2_layer(iconv2)
        iconv1 = self.iconv1(torch.cat((self.unpack1(iconv2), x, _upsample(disp2)), 1))
        disp1 = self.disp1_layer(iconv1)
        outputs = [disp1, disp2, disp3, disp4] if self.training else [disp1]
        if self.depth_scale != 1.0:
            outputs = [d / self.depth_scale for d in outputs]
        return outputs if self.training else outputs[0]


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode='nearest')


class PackNet01(PackNet):
    """The CVPR 2020 PackNet (64-channel stem, 8 3D features per packing block)."""

    arch = 'PackNet01'
    base_ni = 64
    base_channels = (64, 64, 128, 256, 512)
    num_3d_feat = 8


class PackNetSlim01(PackNet):
    """Slimmer PackNet (32-channel stem, 4 3D features per packing block)."""

    arch = 'PackNetSlim01'
    base_ni = 32
    base_channels = (32, 64, 128, 256, 512)
    num_3d_feat = 4


DEPTH_NETWORKS: dict[str, type[PackNet]] = {cls.arch: cls for cls in (PackNet01, PackNetSlim01)}


def build_depth_net(arch: str, width: float = 1.0, version: str = '1A', min_depth: float = 0.5) -> PackNet:
    """The one way to build a depth network by name (nodes, checkpoints and trainers use it)."""
    if arch not in DEPTH_NETWORKS:
        raise ValueError(f'unknown depth architecture {arch!r}; known: {sorted(DEPTH_NETWORKS)}')
    return DEPTH_NETWORKS[arch](version=version, width=width, min_depth=min_depth)
