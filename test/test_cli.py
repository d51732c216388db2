"""`packnet-ros infer` on real KITTI frames, and its error messages."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from packnet_ros.checkpoints import save_checkpoint
from packnet_ros.cli import main
from packnet_ros.image import read_rgb
from packnet_ros.inference import DepthEstimator
from packnet_ros.networks import PackNetSlim01

from helpers import KITTI_DRIVE, require


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'small.ckpt'
    return save_checkpoint(path, PackNetSlim01(width=0.25), input_size=(64, 192))


def test_infer_on_kitti_drive_writes_depth_equal_to_library(small_checkpoint, tmp_path, capsys):
    drive = require(KITTI_DRIVE)
    assert main(['infer', '--checkpoint', str(small_checkpoint), str(drive), str(tmp_path)]) == 0
    npys = sorted(tmp_path.glob('*.npy'))
    assert [p.stem for p in npys] == [f'{i:010d}' for i in range(7)]
    assert len(list(tmp_path.glob('*_depth.png'))) == 7
    depth = np.load(npys[3])
    assert depth.shape == (64, 192) and depth.dtype == np.float32
    expected = DepthEstimator.from_checkpoint(small_checkpoint).infer(
        read_rgb(drive / 'image_02' / 'data' / '0000000003.png'))
    np.testing.assert_array_equal(depth, expected)
    assert np.all(depth >= 0.5)  # InvDepth caps inverse depth at 1/min_depth(0.5)
    assert read_rgb(tmp_path / '0000000003_depth.png').shape == (64, 192, 3)


def test_infer_single_image_at_input_size(small_checkpoint, tmp_path):
    image = require(KITTI_DRIVE) / 'image_02' / 'data' / '0000000000.png'
    assert main(['infer', '--checkpoint', str(small_checkpoint), '--output-size', 'input',
                 str(image), str(tmp_path)]) == 0
    assert np.load(tmp_path / '0000000000.npy').shape == (375, 1242)


def test_errors_are_clear(small_checkpoint, tmp_path, capsys):
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    (image_dir / 'broken.png').write_bytes(b'\x89PNG not really')
    assert main(['infer', '--checkpoint', str(tmp_path / 'missing.ckpt'), str(image_dir), str(tmp_path / 'o')]) == 2
    assert 'missing.ckpt does not exist' in capsys.readouterr().err
    assert main(['infer', '--checkpoint', str(small_checkpoint), str(image_dir), str(tmp_path / 'o')]) == 1
    assert 'cannot read image' in capsys.readouterr().err
    assert main(['infer', '--checkpoint', str(small_checkpoint), '--height', '100',
                 str(image_dir), str(tmp_path / 'o')]) == 2
    assert 'multiples of 32' in capsys.readouterr().err
    assert main(['infer', '--checkpoint', str(small_checkpoint), str(tmp_path / 'nowhere'), str(tmp_path / 'o')]) == 2
    assert 'nowhere does not exist' in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, '-m', 'packnet_ros.cli', 'infer', '--help'],
                            capture_output=True, text=True, check=True)
    assert '--checkpoint' in result.stdout
