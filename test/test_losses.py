"""Losses: parity with the original's loss values, velocity loss on hand-computed numbers."""
import numpy as np
import pytest
import torch

from packnet_ros.geometry import pose_vec_to_mat
from packnet_ros.losses import SelfSupervisedLoss, travelled_distance, velocity_loss

from helpers import load_fixture

SETTINGS = {'automask_min': dict(automask=True, reduce='min'),
            'mean_no_automask': dict(automask=False, reduce='mean')}


@pytest.fixture(scope='module')
def fixture():
    return load_fixture('loss_fixture.pt')


@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_photometric_loss_matches_original(fixture, setting):
    params = fixture['params']
    loss = SelfSupervisedLoss(ssim_weight=params['ssim_loss_weight'], smooth_weight=params['smooth_loss_weight'],
                              C1=params['C1'], C2=params['C2'], clip_loss=params['clip_loss'],
                              padding_mode=params['padding_mode'], **SETTINGS[setting])
    poses = [fixture['pose_mats_target_to_context'][:, j] for j in range(2)]
    out = loss(fixture['target'], fixture['context'], fixture['inv_depths_fullres'], fixture['K'], poses)
    expected = fixture[setting]
    for ours, theirs in [('loss', 'loss'), ('photometric', 'photometric_loss'), ('smoothness', 'smoothness_loss')]:
        assert abs(float(out[ours]) - expected[theirs]) / expected[theirs] < 1e-4, ours


def test_loss_defaults_are_the_papers(fixture):
    poses = [pose_vec_to_mat(fixture['pose_vecs'][:, j]) for j in range(2)]
    out = SelfSupervisedLoss()(fixture['target'], fixture['context'], fixture['inv_depths_fullres'],
                               fixture['K'], poses)
    assert abs(float(out['loss']) - fixture['automask_min']['loss']) / fixture['automask_min']['loss'] < 1e-4


def test_loss_is_differentiable_at_native_scales(fixture):
    inv_depths = [torch.nn.functional.interpolate(d, scale_factor=0.5 ** i).requires_grad_()
                  for i, d in enumerate(fixture['inv_depths_fullres'])]
    poses = [fixture['pose_mats_target_to_context'][:, j] for j in range(2)]
    out = SelfSupervisedLoss()(fixture['target'], fixture['context'], inv_depths, fixture['K'], poses)
    out['loss'].backward()
    assert all(torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0 for d in inv_depths)


def test_automask_requires_min_reduction():
    with pytest.raises(ValueError, match='automask'):
        SelfSupervisedLoss(automask=True, reduce='mean')


def test_velocity_loss_hand_computed():
    # translations (3,4,0) -> 5 m and (0,0,1) -> 1 m; measured 4 m and 1.5 m
    t1, t2 = torch.eye(4)[None].clone(), torch.eye(4)[None].clone()
    t1[0, :3, 3] = torch.tensor([3.0, 4.0, 0.0])
    t2[0, :3, 3] = torch.tensor([0.0, 0.0, 1.0])
    loss = velocity_loss([t1, t2], torch.tensor([[4.0, 1.5]]))
    assert loss.item() == pytest.approx((1.0 + 0.5) / 2)


def test_velocity_loss_gradient_pulls_norm_to_distance():
    vec = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.0, 0.0]], requires_grad=True)
    velocity_loss([pose_vec_to_mat(vec)], torch.tensor([[1.0]])).backward()
    assert vec.grad[0, 2] < 0  # descending increases tz towards 1 m


def test_travelled_distance_integrates_between_samples():
    # speed ramps 0 -> 10 m/s over 0..2 s (v = 5 t); distance over [0.5, 1.5] = 2.5 (1.5^2 - 0.5^2) = 5 m
    stamps = np.array([0.0, 1.0, 2.0])
    assert travelled_distance(stamps, 5 * stamps, 0.5, 1.5) == pytest.approx(5.0)
    # constant 12 m/s over 0.1 s -> 1.2 m, independent of sample placement
    assert travelled_distance([0.0, 0.37, 1.0], [12.0, 12.0, 12.0], 0.2, 0.3) == pytest.approx(1.2)
    # reversed interval gives the same (unsigned) distance
    assert travelled_distance(stamps, 5 * stamps, 1.5, 0.5) == pytest.approx(5.0)


def test_travelled_distance_refuses_extrapolation_and_bad_stamps():
    with pytest.raises(ValueError, match='outside'):
        travelled_distance([0.0, 1.0], [1.0, 1.0], 0.5, 1.5)
    with pytest.raises(ValueError, match='increasing'):
        travelled_distance([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], 0.1, 0.2)
