"""`packnet-ros infer` on real KITTI frames; every command's errors as one line on stderr, with
nothing half-written left behind (read-only folder, full disk, damaged bags and images)."""
import builtins
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from packnet_ros.cli import main
from packnet_ros.data.bag import write_kitti_bag
from packnet_ros.data.synthetic import CameraRig, write_kitti_drive
from packnet_ros.image import read_rgb
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve

from helpers import KITTI_DRIVE, require


def test_infer_on_kitti_drive_writes_depth_equal_to_library(small_checkpoint, tmp_path, capsys):
    drive = require(KITTI_DRIVE)
    assert main(['infer', '--checkpoint', str(small_checkpoint), str(drive), str(tmp_path)]) == 0
    npys = sorted(tmp_path.glob('*.npy'))
    assert [p.stem for p in npys] == [f'{i:010d}' for i in range(7)]
    assert len(list(tmp_path.glob('*_depth.png'))) == 7
    depth = np.load(npys[3])
    assert depth.shape == (64, 192) and depth.dtype == np.float32
    expected = DepthEstimator.provision(small_checkpoint, resolve(small_checkpoint, 'cpu', 'torch', 'fp32')).infer(
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


# ------------------------------------------------------------------ every error one line, nothing half-written

TINY_TRAINING = ['--height', '32', '--width', '96', '--batch-size', '2', '--device', 'cpu', '--workers', '0',
                 '--set', 'model_width=0.125', '--no-tensorboard']


@pytest.fixture(scope='module')
def drive(tmp_path_factory):
    return write_kitti_drive(tmp_path_factory.mktemp('synth'), 24, seed=3, camera=CameraRig(96, 32), workers=1)


@pytest.fixture(scope='module')
def bag(drive, tmp_path_factory):
    return write_kitti_bag(drive, tmp_path_factory.mktemp('bag') / 'drive')


def commands(checkpoint, drive, target):
    """A command per kind of output, each writing under `target`."""
    return {
        'infer': ['infer', '--checkpoint', str(checkpoint), str(drive), str(target)],
        'eval --json': ['eval', '--checkpoint', str(checkpoint), '--data', str(drive), '--device', 'cpu',
                        '--workers', '0', '--json', str(target / 'metrics.json')],
        'kitti-to-bag': ['kitti-to-bag', str(drive), str(target / 'bag')],
        'export': ['export', '--checkpoint', str(checkpoint), '--onnx', str(target / 'depth.onnx'),
                   '--height', '32', '--width', '96'],
        'train --out': ['train', '--data', str(drive), '--out', str(target), '--steps', '1', *TINY_TRAINING],
    }


def fill_up(monkeypatch, folder):
    """Make `folder` a full disk: a write to a file under it lands half its bytes, then fails
    with ENOSPC, as on a real one (a file opened for writing is where partial output appears)."""
    real_open = io.open

    class FullFile:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            self.file.write(data[:len(data) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def __getattr__(self, name):
            return getattr(self.file, name)

    def full_open(file, mode='r', *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        under = isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)).is_relative_to(folder)
        return FullFile(opened) if under and set(mode) & set('wax+') else opened
    monkeypatch.setattr(builtins, 'open', full_open)
    monkeypatch.setattr(io, 'open', full_open)


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*') if not p.is_dir())


@pytest.mark.parametrize('command', ['infer', 'eval --json', 'kitti-to-bag', 'export', 'train --out'])
@pytest.mark.parametrize('failure', ['read-only folder', 'full disk'])
def test_write_failures_are_one_line_and_leave_nothing(small_checkpoint, drive, tmp_path, capsys, monkeypatch,
                                                       failure, command):
    target = tmp_path / 'target'
    target.mkdir()
    if failure == 'read-only folder':
        target.chmod(0o500)
        try:
            (target / 'probe').touch()
        except PermissionError:
            pass
        else:
            target.chmod(0o700)
            pytest.skip('this user writes into read-only folders (root with CAP_DAC_OVERRIDE)')
        expected = 'Permission denied'
    else:
        fill_up(monkeypatch, target)
        expected = 'No space left on device'
    try:
        assert main(commands(small_checkpoint, drive, target)[command]) == 2
    finally:
        target.chmod(0o700)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f'packnet-ros {command.split()[0]}: error: '), err
    assert expected in err and str(target) in err
    if command == 'train --out':
        assert 'could not save a checkpoint at step 1' in err and f'no checkpoint was written to {target}' in err
    assert files_under(target) == []


def test_train_says_which_saves_failed_and_what_is_left(drive, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'ckpts'
    assert main(['train', '--data', str(drive), '--out', str(out), '--steps', '1', *TINY_TRAINING]) == 0
    capsys.readouterr()
    fill_up(monkeypatch, out)
    assert main(['train', '--data', str(drive), '--out', str(out), '--steps', '3', '--resume',
                 '--set', 'save_every_steps=1', *TINY_TRAINING]) == 2
    err = capsys.readouterr().err.splitlines()
    # the failure the run went on from as it happened, the one that ended it as the error, once each
    assert err == ['packnet-ros train: could not save a checkpoint at step 2: [Errno 28] No space left on device',
                   'packnet-ros train: error: could not save a checkpoint at step 3: [Errno 28] No space left on '
                   f'device; the newest checkpoint in {out} is step_000000001.ckpt, older than step 3: '
                   '--resume continues from it']
    assert files_under(out) == ['step_000000001.ckpt']


def damaged_bag(good, folder, damage):
    bag = folder / damage.replace(' ', '_')
    if damage == 'undecodable message':
        from rosbags.rosbag2 import Writer

        from packnet_ros.data.bag import TOPICS, TYPESTORE
        with Writer(bag, version=9) as writer:
            for topic, msgtype in TOPICS.values():
                writer.write(writer.add_connection(topic, msgtype, typestore=TYPESTORE), 1, b'\x00\x01\x00\x00\x05')
        return bag
    shutil.copytree(good, bag)
    if damage == 'truncated mcap':
        mcap = next(bag.glob('*.mcap'))
        mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    else:
        (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed\n')
    return bag


@pytest.mark.parametrize('command', ['train', 'export --int8'])
@pytest.mark.parametrize('damage,reason', [('truncated mcap', 'not a readable rosbag2 (truncated or corrupt?): '
                                                              'File end magic is invalid'),
                                           ('broken metadata', 'not a readable rosbag2 (truncated or corrupt?): '
                                                               'Could not load YAML'),
                                           ('undecodable message', 'message cannot be decoded')])
def test_damaged_bags_are_one_line_naming_the_bag(bag, small_checkpoint, tmp_path, capsys, command, damage,
                                                  reason):
    damaged = damaged_bag(bag, tmp_path, damage)
    out = tmp_path / 'out'
    args = {'train': ['train', '--data', str(damaged), '--out', str(out), '--steps', '1', *TINY_TRAINING],
            'export --int8': ['export', '--checkpoint', str(small_checkpoint), '--onnx', str(out / 'depth.onnx'),
                              '--height', '32', '--width', '96', '--int8', '--calibration', str(damaged)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f': error: {damaged}: ' in err and reason in err, err
    assert not out.exists() or files_under(out) == []


def damaged_drive(drive, folder, damage):
    """A copy of the drive whose later frames (read by DataLoader workers) are broken."""
    copy = folder / drive.relative_to(drive.parent.parent)
    shutil.copytree(drive.parent, copy.parent)
    for frame in range(3, 13):
        if damage == 'corrupt png':
            (copy / 'image_02' / 'data' / f'{frame:010d}.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
        else:
            (copy / 'proj_depth' / 'velodyne' / 'image_02' / f'{frame:010d}.npz').write_bytes(b'PK\x03\x04 broken')
    return copy


@pytest.mark.parametrize('damage,command', [('corrupt png', 'train'), ('corrupt png', 'eval'),
                                            ('corrupt npz', 'eval')])
def test_damaged_drive_files_are_one_line_naming_the_file(drive, small_checkpoint, tmp_path, capsys, damage,
                                                          command):
    broken = damaged_drive(drive, tmp_path, damage)
    args = {'train': ['train', '--data', str(broken), '--out', str(tmp_path / 'out'), '--steps', '4',
                      '--holdout-every', '0', *TINY_TRAINING, '--workers', '1'],
            'eval': ['eval', '--checkpoint', str(small_checkpoint), '--data', str(broken), '--device', 'cpu',
                     '--workers', '1', '--height', '32', '--width', '96']}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    if damage == 'corrupt png':
        assert f': error: cannot read image {broken}/image_02/data/00000000' in err
    else:
        assert f': error: ground truth {broken}/proj_depth/velodyne/image_02/00000000' in err
        assert 'is unreadable (truncated or corrupt?)' in err


def test_an_error_is_one_line_on_stderr_of_the_real_command(drive, tmp_path):
    """As run from a shell, with no terminal: no progress bar, no worker traceback, one line."""
    broken = damaged_drive(drive, tmp_path, 'corrupt png')
    result = subprocess.run([sys.executable, '-m', 'packnet_ros.cli', 'train', '--data', str(broken), '--out',
                             str(tmp_path / 'out'), '--steps', '4', '--holdout-every', '0', *TINY_TRAINING,
                             '--workers', '1'], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f'packnet-ros train: error: cannot read image {broken}/image_02/data/')
    assert len(result.stderr.splitlines()) == 1, result.stderr
