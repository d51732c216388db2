"""Checkpoints: official packnet-sfm files load safely, our format round-trips atomically."""
import os
import resource
import subprocess
import sys
import types
import zipfile

import pytest
import torch

from packnet_ros.model import checkpoints
from packnet_ros.model.checkpoints import CheckpointError, load_checkpoint, load_networks, save_checkpoint
from packnet_ros.networks import PackNet01, PackNetSlim01, PoseNet

from helpers import deterministic_fill, load_fixture


class Payload:
    """Would run a shell command if unpickled by a plain unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def write_official(path, depth_net, pose_net, legacy=False, marker='/nonexistent/marker'):
    """An official-style .ckpt: prefixed state_dict plus a pickled yacs-like config object
    whose class (module 'yacs.config') exists only while writing."""
    yacs, config = types.ModuleType('yacs'), types.ModuleType('yacs.config')

    class CfgNode(dict):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__['__immutable__'] = True

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    config.CfgNode = CfgNode
    sys.modules.update({'yacs': yacs, 'yacs.config': config})
    try:
        state = {f'model.depth_net.{k}': v for k, v in depth_net.state_dict().items()}
        if pose_net is not None:
            state.update({f'model.pose_net.{k}': v for k, v in pose_net.state_dict().items()})
        cfg = CfgNode({'model': CfgNode({'name': 'SelfSupModel', 'depth_net': CfgNode({'name': 'PackNetSlim01'})})})
        torch.save({'config': cfg, 'state_dict': state, 'epoch': 50, 'payload': Payload(marker)}, path,
                   _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules['yacs'], sys.modules['yacs.config']


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_official_checkpoint_loads_without_its_classes_and_gives_parity(tmp_path, legacy):
    fixture = load_fixture('parity_fixtures.pt')
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'PackNetSlim01_official.ckpt'
    write_official(path, deterministic_fill(PackNetSlim01()), deterministic_fill(PoseNet()), legacy, marker)
    assert 'yacs' not in sys.modules

    depth_net, pose_net = load_networks(path)

    assert not marker.exists(), 'pickled code was executed'
    assert isinstance(depth_net, PackNetSlim01) and not depth_net.training
    with torch.no_grad():
        out = depth_net(fixture['PackNetSlim01']['input'])
        pose = pose_net(fixture['PoseNet']['target'], fixture['PoseNet']['context'])
    assert (out - fixture['PackNetSlim01']['eval_inv_depth']).abs().max() < 1e-4
    assert (pose - fixture['PoseNet']['pose_vec']).abs().max() < 1e-4
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.version, ckpt.model_width, ckpt.format) == ('PackNetSlim01', '1A', 1.0, 'packnet-sfm')


def test_official_packnet01_depth_only(tmp_path):
    fixture = load_fixture('parity_fixtures.pt')['PackNet01_small']
    path = tmp_path / 'packnet01.ckpt'
    write_official(path, deterministic_fill(PackNet01()), None)
    depth_net, pose_net = load_networks(path)
    assert isinstance(depth_net, PackNet01) and pose_net is None
    with torch.no_grad():
        assert (depth_net(fixture['input']) - fixture['eval_inv_depth']).abs().max() < 1e-4


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    depth_net, pose_net = PackNetSlim01(width=0.25), PoseNet()
    optimizer = torch.optim.Adam(list(depth_net.parameters()) + list(pose_net.parameters()), lr=1e-3)
    path = save_checkpoint(tmp_path / 'step10.ckpt', depth_net, pose_net, step=10, input_size=(96, 320),
                           optimizer=optimizer.state_dict(), extra={'loss': 0.25})
    ckpt = load_checkpoint(path)
    assert ckpt.step == 10 and ckpt.arch == 'PackNetSlim01' and ckpt.model_width == 0.25
    assert ckpt.input_size == (96, 320)
    loaded, loaded_pose = load_networks(path)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), depth_net.eval()(x))
    for k, v in pose_net.state_dict().items():
        assert torch.equal(loaded_pose.state_dict()[k], v)
    assert ckpt.optimizer['param_groups'][0]['lr'] == 1e-3 and ckpt.extra == {'loss': 0.25}
    assert [p.name for p in tmp_path.iterdir()] == ['step10.ckpt']  # no temp file left behind


def test_truncated_and_missing_files_are_rejected_with_their_path(tmp_path):
    path = save_checkpoint(tmp_path / 'good.ckpt', PackNetSlim01(width=0.25))
    data = path.read_bytes()
    for name, content in [('truncated.ckpt', data[:len(data) // 2]), ('empty.ckpt', b''),
                          ('garbage.ckpt', b'not a checkpoint at all')]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            load_networks(tmp_path / name)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_networks(tmp_path / 'absent.ckpt')


def test_mismatched_weights_name_the_keys(tmp_path):
    path = tmp_path / 'mismatch.ckpt'
    state = {f'model.depth_net.{k}': v for k, v in PackNetSlim01().state_dict().items()}
    state['model.depth_net.conv2.0.conv3.weight'] = torch.zeros(64, 32, 3, 3)
    del state['model.depth_net.disp1_layer.conv1.bias']
    torch.save({'state_dict': state}, path)
    with pytest.raises(CheckpointError) as err:
        load_networks(path)
    message = str(err.value)
    assert 'mismatch.ckpt' in message and 'disp1_layer.conv1.bias' in message
    assert 'conv2.0.conv3.weight: file (64, 32, 3, 3) vs network (64, 32, 1, 1)' in message


def test_not_a_packnet_state_dict(tmp_path):
    path = tmp_path / 'other.ckpt'
    torch.save({'state_dict': {'model.encoder.weight': torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match='no depth network weights'):
        load_networks(path)


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / 'latest.ckpt', PackNetSlim01(width=0.25), step=1)

    def crash(*args, **kwargs):
        raise OSError('simulated power loss before rename')

    monkeypatch.setattr(checkpoints.os, 'replace', crash)
    with pytest.raises(OSError, match='power loss'):
        save_checkpoint(path, PackNetSlim01(width=0.25), step=2)
    assert load_checkpoint(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ['latest.ckpt']


def test_non_finite_weights_are_rejected_and_never_written(tmp_path):
    net = PackNetSlim01(width=0.25)
    path = save_checkpoint(tmp_path / 'good.ckpt', net)
    with torch.no_grad():
        net.disp1_layer.conv1.weight[0, 0, 0, 0] = float('nan')
    with pytest.raises(CheckpointError, match='not finite.*disp1_layer.conv1.weight'):
        save_checkpoint(tmp_path / 'poisoned.ckpt', net)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good.ckpt']
    payload = torch.load(path, weights_only=True)  # a NaN written by something else is refused on load
    payload['depth_net']['pre_calc.conv_base.bias'][3] = float('inf')
    torch.save(payload, tmp_path / 'inf.ckpt')
    with pytest.raises(CheckpointError, match='inf.ckpt.*not finite'):
        load_checkpoint(tmp_path / 'inf.ckpt')


def test_a_flipped_bit_is_caught_by_the_archive_check(tmp_path):
    path = save_checkpoint(tmp_path / 'good.ckpt', PackNetSlim01(width=0.25))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # flip one bit inside the largest tensor record
        record = max(archive.infolist(), key=lambda info: info.file_size)
    offset = record.header_offset + 30 + len(record.filename) + len(record.extra) + record.file_size // 2
    data[offset] ^= 0x10
    (tmp_path / 'flipped.ckpt').write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='flipped.ckpt.*CRC'):
        load_checkpoint(tmp_path / 'flipped.ckpt')


@pytest.mark.parametrize('field,value,message', [
    ('step', None, "'step' is None"), ('arch', 'ResNet18', 'unknown architecture'),
    ('input_size', [96, 100], 'multiples of 32'), ('width', '0.25', "'width' is '0.25'"),
    ('depth_net', None, "'depth_net' is None"), ('pose_net', {'conv1.0.weight': 'text'}, 'pose weights are not')])
def test_our_metadata_is_checked_field_by_field(tmp_path, field, value, message):
    payload = torch.load(save_checkpoint(tmp_path / 'good.ckpt', PackNetSlim01(width=0.25)), weights_only=True)
    payload[field] = value
    torch.save(payload, tmp_path / 'bad.ckpt')
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / 'bad.ckpt')
    del payload[field]
    torch.save(payload, tmp_path / 'missing.ckpt')
    with pytest.raises(CheckpointError, match=f'missing.ckpt.*{field}'):
        load_checkpoint(tmp_path / 'missing.ckpt')


def test_a_directory_or_fifo_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match='is not a regular file'):
        load_checkpoint(tmp_path)
    os.mkfifo(tmp_path / 'pipe.ckpt')
    with pytest.raises(CheckpointError, match='pipe.ckpt is not a regular file'):
        load_checkpoint(tmp_path / 'pipe.ckpt')


@pytest.mark.parametrize('field,value,message', [
    ('depth_scale', 1e30, 'depth_scale 1e[+]30 is outside'), ('depth_scale', 1e-30, 'depth_scale 1e-30 is outside'),
    ('min_depth', 1e-300, 'min_depth 1e-300 is outside'), ('min_depth', 1e30, 'min_depth 1e[+]30 is outside'),
    ('format_version', 99, 'format_version 99 is not one this packnet_ros reads'),
    ('input_size', [33554432, 33554432], 'input_size .* multiples of 32 from 32 to 4096'),
    ('width', 1e12, 'width 1000000000000.0 is outside'), ('nb_ref_imgs', 10 ** 9, 'nb_ref_imgs 1000000000 is outside'),
    ('version', '2A', "version '2A' is not a PackNet version"), ('step', -3, 'step -3 is outside')])
def test_metadata_that_type_checks_but_means_nothing_is_refused(tmp_path, field, value, message):
    """Values a hostile tester found served as 100 % NaN depth or killing the loader (3 PiB)."""
    payload = torch.load(save_checkpoint(tmp_path / 'good.ckpt', PackNetSlim01(width=0.25), PoseNet(),
                                         input_size=(96, 320)), weights_only=True)
    payload[field] = value
    torch.save(payload, tmp_path / 'bad.ckpt')
    with pytest.raises(CheckpointError, match=f'bad.ckpt: {message}'):
        load_checkpoint(tmp_path / 'bad.ckpt')


def test_every_bit_flip_in_the_archive_directory_is_refused_or_harmless(tmp_path):
    """Flipped bits in the zip's central directory made Python's zipfile raise
    NotImplementedError (compression method, encryption flag, version): each must be a
    CheckpointError, or load the same weights."""
    path = save_checkpoint(tmp_path / 'good.ckpt', PackNetSlim01(width=0.25))
    data = path.read_bytes()
    end = data.rindex(b'PK\x05\x06')
    directory = data.rindex(b'PK\x01\x02', 0, end)  # the last central header
    outcomes = {'refused': 0, 'same': 0}
    # every field of that header and of the end record (a flipped disk number: "span multiple disks")
    for offset in [*range(directory, directory + 46), *range(end, end + 22)]:
        for bit in (0, 3, 6):
            flipped = bytearray(data)
            flipped[offset] ^= 1 << bit
            (tmp_path / 'flipped.ckpt').write_bytes(bytes(flipped))
            try:
                ckpt = load_checkpoint(tmp_path / 'flipped.ckpt')
            except CheckpointError:
                outcomes['refused'] += 1
                continue
            good = load_checkpoint(path)
            assert all(torch.equal(ckpt.depth_state[k], v) for k, v in good.depth_state.items())
            outcomes['same'] += 1
    assert outcomes['refused'] > 0, outcomes


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path):
    sparse = tmp_path / 'huge.ckpt'
    with open(sparse, 'wb') as f:
        f.truncate(checkpoints.MAX_FILE_BYTES + 1)  # sparse: nothing on disk, 4 GiB to read
    with pytest.raises(CheckpointError, match='huge.ckpt is 4.0 GiB, more than the 4.0 GiB'):
        load_checkpoint(sparse)
    with open(sparse, 'wb') as f:
        f.truncate(3 * 2 ** 30)  # within the limit, but neither a zip nor a pickle: refused from its ends
    started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match='huge.ckpt is unreadable .*neither a zip archive nor a pickle'):
        load_checkpoint(sparse)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - started < 2 ** 20  # KiB: not read into memory


def test_a_checkpoint_rewritten_in_place_after_loading_cannot_crash_its_reader(tmp_path):
    """Memory-mapped weights died with SIGBUS when the file was truncated under them."""
    path = save_checkpoint(tmp_path / 'live.ckpt', PackNetSlim01(width=0.25))
    expected = sum(float(v.float().sum()) for v in load_checkpoint(path).depth_state.values())
    script = ('import sys, torch\n'
              'from packnet_ros.model.checkpoints import load_checkpoint\n'
              'ckpt = load_checkpoint(sys.argv[1])\n'
              'open(sys.argv[1], "wb").close()  # truncated in place, same inode\n'
              'print(sum(float(v.float().sum()) for v in ckpt.depth_state.values()))\n')
    result = subprocess.run([sys.executable, '-c', script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(expected)
