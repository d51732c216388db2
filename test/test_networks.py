"""Networks: official state_dict layout and output parity with the original implementation."""
import json

import numpy as np
import pytest
import torch

from packnet_ros.networks import PackNet01, PackNetSlim01, PoseNet

from helpers import REFERENCE, deterministic_fill, load_fixture, require

OFFICIAL = {'PackNet01': PackNet01, 'PackNetSlim01': PackNetSlim01, 'PoseNet': PoseNet}
PARITY_KEYS = {'PackNetSlim01': PackNetSlim01, 'PackNet01_small': PackNet01}


@pytest.fixture(scope='module')
def manifest():
    return json.loads(require(REFERENCE / 'official_state_dict_manifest.json').read_text())


@pytest.fixture(scope='module')
def parity():
    return load_fixture('parity_fixtures.pt')


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_state_dict_layout_equals_official(manifest, name):
    layout = {k: list(v.shape) for k, v in OFFICIAL[name]().state_dict().items()}
    assert layout == manifest[name]


@pytest.mark.parametrize('name', sorted(PARITY_KEYS))
def test_depth_outputs_match_original(parity, name):
    fixture = parity[name]
    net = deterministic_fill(PARITY_KEYS[name]())
    with torch.no_grad():
        out = net.eval()(fixture['input'])
        assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 64, 192)
        assert (out - fixture['eval_inv_depth']).abs().max() < 1e-4
        outs = net.train()(fixture['input'])
    assert isinstance(outs, list) and len(outs) == 4
    for i, (got, want) in enumerate(zip(outs, fixture['train_inv_depths'])):
        assert got.shape == (1, 1, 64 // 2 ** i, 192 // 2 ** i)
        assert (got - want).abs().max() < 1e-4


def test_posenet_matches_original(parity):
    fixture = parity['PoseNet']
    net = deterministic_fill(PoseNet()).eval()
    with torch.no_grad():
        pose = net(fixture['target'], fixture['context'])
    assert pose.shape == (1, 2, 6)
    assert (pose - fixture['pose_vec']).abs().max() < 1e-4


def test_posenet_rejects_wrong_context_count():
    with pytest.raises(ValueError, match='expects 2 context'):
        PoseNet()(torch.rand(1, 3, 64, 64), [torch.rand(1, 3, 64, 64)])


@pytest.mark.parametrize('cls', [PackNet01, PackNetSlim01])
def test_width_keeps_blocks_and_shrinks_channels(cls):
    full, small = cls(), cls(width=0.25)
    assert list(small.state_dict()) == list(full.state_dict())
    n_full = sum(p.numel() for p in full.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < n_full / 8
    assert all(c % 16 == 0 for c in small.channels)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = small.eval()(x)
    assert out.shape == (2, 1, 64, 96)
    # InvDepth is sigmoid / min_depth(0.5): inverse depth in (0, 2)
    assert torch.all(out > 0) and torch.all(out < 2)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match='version'):
        PackNet01(version='1B')
    with pytest.raises(ValueError, match='width'):
        PackNet01(width=0)


def test_priors_for_training_from_scratch():
    from packnet_ros.training.trainer import forward_motion
    torch.manual_seed(0)
    net = PackNetSlim01(width=0.25)
    net.initialize_depth(12.0)
    x = torch.rand(1, 3, 64, 192)
    with torch.no_grad():
        depth = 1 / net.eval()(x)
    assert 8 < float(depth.median()) < 18  # about 12 m everywhere, instead of ~1 m
    pose_net = PoseNet()
    pose_net.initialize_translations(forward_motion(0.5))
    with torch.no_grad():
        t = pose_net.eval()(x, [x, x])[0, :, :3]
    np.testing.assert_allclose(t[:, 2].numpy(), [0.5, -0.5], atol=0.05)  # previous frame behind, next ahead
    pose_net.scale_translations(2.0)
    with torch.no_grad():
        np.testing.assert_allclose(pose_net(x, [x, x])[0, :, :3].numpy(), 2 * t.numpy(), rtol=1e-5, atol=1e-7)
    net.depth_scale = 2.0  # the learnt global scale: exactly proportional, the decoder is untouched
    with torch.no_grad():
        np.testing.assert_allclose((1 / net(x)).numpy(), 2 * depth.numpy(), rtol=1e-5)
