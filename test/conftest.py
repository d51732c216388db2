"""Session-wide test settings, and fixtures shared by several test files."""
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.image import read_rgb
from packnet_ros.model.checkpoints import save_checkpoint
from packnet_ros.networks import PackNetSlim01, PoseNet

from helpers import KITTI_DRIVE, require


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
    """Automatic ONNX exports (onnxruntime backend) go to a per-run cache, not the user's;
    node processes started by the tests inherit it."""
    previous = os.environ.get('XDG_CACHE_HOME')
    os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))
    yield
    if previous is None:
        os.environ.pop('XDG_CACHE_HOME', None)
    else:
        os.environ['XDG_CACHE_HOME'] = previous


# ------------------------------------------------------------------ serving: small models, KITTI frames
# (test_depth_node*, test_cli, test_evaluation, test_export*)


def save_small_checkpoint(path: Path, seed: int = 0, size: tuple[int, int] = (64, 192), step: int = 0,
                          depth: float | None = None, scale: float | None = None, pose: bool = False) -> Path:
    """A PackNetSlim01 of width 0.25 with weights drawn from `seed`, trained (so it says) at
    `size`; `depth` sets its initial depth (metres), `scale` a learnt depth scale, `pose` adds
    a PoseNet. Quick to export and to run, on any machine."""
    torch.manual_seed(seed)
    net = PackNetSlim01(width=0.25)
    if depth is not None:
        net.initialize_depth(depth)
    if scale is not None:
        net.depth_scale = scale
    return save_checkpoint(path, net, PoseNet() if pose else None, step=step, input_size=size)


@pytest.fixture(scope='session')
def make_small_checkpoint() -> Callable[..., Path]:
    """save_small_checkpoint, for fixtures and tests that want their own."""
    return save_small_checkpoint


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory) -> Path:
    """save_small_checkpoint's defaults: seed 0, 64x192, step 0."""
    return save_small_checkpoint(tmp_path_factory.mktemp('ckpt') / 'small.ckpt')


@pytest.fixture(scope='session')
def kitti() -> tuple[KittiDrive, list[np.ndarray]]:
    """KITTI_tiny's drive and its RGB frames."""
    drive = KittiDrive(require(KITTI_DRIVE))
    return drive, [read_rgb(drive.image_path(f)) for f in drive.frames]
