"""Access to ../shared/reference fixtures and the documented deterministic weight fill."""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get('PACKNET_SHARED', Path(__file__).resolve().parents[1].parent / 'shared'))
REFERENCE = SHARED / 'reference'
KITTI_TINY = SHARED / 'data' / 'KITTI_tiny'
KITTI_DRIVE = KITTI_TINY / '2011_09_26' / '2011_09_26_drive_0023_sync'


def require(path: Path) -> Path:
    """Skip (or fail under CI=true) when a shared fixture is absent, e.g. in a user's clone."""
    if not path.exists():
        reason = f'shared fixture {path} is absent (tests read it from ../shared)'
        if os.environ.get('CI') == 'true':
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def load_fixture(name: str):
    return torch.load(require(REFERENCE / name), weights_only=True)


def deterministic_fill(net: torch.nn.Module) -> torch.nn.Module:
    """Fill every floating tensor from a generator seeded by the CRC32 of its key."""
    with torch.no_grad():
        for name, t in sorted(net.state_dict().items()):
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            z = torch.randn(t.shape, generator=g, dtype=torch.float64)
            if t.dim() > 1:
                v = z / math.sqrt(t[0].numel())
            elif name.endswith('running_var'):
                v = 1 + 0.1 * z.abs()
            elif name.endswith('weight'):
                v = 1 + 0.1 * z
            else:
                v = 0.1 * z
            t.copy_(v.to(t.dtype))
    return net
