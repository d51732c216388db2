"""Training core: replay buffer bounds, trainer step (triplets from streams: test_stream.py)."""
import dataclasses

import numpy as np
import pytest
import torch

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.model.checkpoints import load_networks
from packnet_ros.networks import PackNetSlim01, PoseNet
from packnet_ros.training import (
    ReplayBuffer,
    Trainer,
    TrainerConfig,
    Triplet,
)
from packnet_ros.training.session import HOLE_TOLERANCE

from helpers import KITTI_DRIVE, SHIPPED_MODEL, kitti_triplets, synthetic_holdout

H, W = 32, 64


def test_replay_buffer_respects_count_and_byte_bounds():
    def triplet(i):
        return Triplet(np.full((3, H, W, 3), i, np.uint8), np.ones(2, np.float32), float(i))
    size = triplet(0).nbytes
    buf = ReplayBuffer(max_triplets=10, max_bytes=int(3.5 * size), seed=0)
    for i in range(20):
        buf.add(triplet(i))
        assert len(buf) <= 3 and buf.nbytes <= 3.5 * size
    assert [t.stamp for t in buf.items] == [17.0, 18.0, 19.0]
    assert {t.stamp for t in buf.sample(5)} == {17.0, 18.0, 19.0}
    with pytest.raises(ValueError, match='exceeds'):
        ReplayBuffer(10, size - 1).add(triplet(0))


def gps_positions(drive):
    """Metric positions from OXTS latitude/longitude (Mercator, as KITTI's devkit does)."""
    lat = np.radians([p.values['lat'] for p in drive.oxts()])
    lon = np.radians([p.values['lon'] for p in drive.oxts()])
    scale = 6378137.0 * np.cos(lat[0])
    return np.stack([scale * lon, scale * np.log(np.tan(np.pi / 4 + lat / 2))], 1)


def test_kitti_distances_agree_with_gps():
    triplets, _ = kitti_triplets()
    # 7 frames, but OXTS starts after camera frame 0, so only frames 2..5 can be targets
    assert len(triplets) == 4
    drive = KittiDrive(KITTI_DRIVE)
    steps = np.linalg.norm(np.diff(gps_positions(drive), axis=0), axis=1)
    integrated = np.array([t.distances.sum() for t in triplets])
    gps = np.array([steps[i - 1] + steps[i] for i in range(2, 6)])
    np.testing.assert_allclose(integrated, gps, rtol=0.03)


def test_trainer_step_updates_and_reduces_loss_on_repeated_batch():
    torch.manual_seed(0)
    triplets, K = kitti_triplets()
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K, TrainerConfig(learning_rate=1e-3, warmup_steps=0))
    first = trainer.step(triplets)
    assert first is not None and set(first) >= {'loss', 'photometric', 'smoothness', 'velocity', 'scale'}
    for _ in range(14):
        last = trainer.step(triplets)
    assert trainer.step_count == 15
    assert last['loss'] < first['loss']
    assert last['velocity'] < first['velocity']  # the translation norm moves towards 0.87 m


def test_learning_rate_warms_up_linearly():
    triplets, K = kitti_triplets()
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K, TrainerConfig(learning_rate=1e-3, warmup_steps=4))
    seen = []
    for _ in range(6):
        seen.append(trainer.learning_rate())
        trainer.step(triplets[:2])
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert trainer.optimizer.param_groups[0]['lr'] == pytest.approx(1e-3)


def test_velocity_weight_ramps_up():
    triplets, K = kitti_triplets()
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K,
                      TrainerConfig(velocity_loss_weight=0.4, velocity_warmup_steps=4))
    weights = []
    for _ in range(5):
        weights.append(trainer.current_velocity_weight())
        out = trainer.step(triplets[:2])
        assert out['loss'] == pytest.approx(out['photometric'] + out['smoothness'] + weights[-1] * out['velocity'],
                                            rel=1e-5)
    assert weights == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_nonfinite_loss_skips_the_step():
    triplets, K = kitti_triplets()
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K)
    before = {k: v.clone() for k, v in trainer.depth_net.state_dict().items()}
    bad = [Triplet(t.images, np.array([np.nan, 1.0], np.float32), t.stamp) for t in triplets]
    assert trainer.step(bad) is None and trainer.step_count == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.depth_net.state_dict().items())


def test_folding_the_learnt_scales_changes_nothing_computed():
    triplets, K = kitti_triplets()
    torch.manual_seed(0)
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K,
                      TrainerConfig(depth_scale_lr=0.5, translation_scale_lr=0.5, warmup_steps=0))
    for _ in range(3):
        trainer.step(triplets[:2])
    assert trainer.depth_scale() != 1.0 and float(trainer.log_translation_scale.detach()) != 0.0
    with torch.no_grad():
        before = trainer.losses(triplets)
        trainer.fold_scales()
        after = trainer.losses(triplets)
    assert trainer.depth_scale() == 1.0 and float(trainer.log_translation_scale.detach()) == 0.0
    for key in ('photometric', 'velocity', 'scale'):
        assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-4), key


def test_direct_scale_gives_translations_the_measured_length():
    triplets, K = kitti_triplets()
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K, TrainerConfig(scale_from_speed='direct'))
    poses = [trainer._with_length(torch.eye(4)[None].repeat(2, 1, 1) + torch.tensor(
        [[0, 0, 0, 0.3], [0, 0, 0, -0.1], [0, 0, 0, 0.05], [0, 0, 0, 0]]), torch.tensor([1.5, 0.2]))]
    np.testing.assert_allclose(poses[0][:, :3, 3].norm(dim=-1).numpy(), [1.5, 0.2], rtol=1e-6)
    direction = poses[0][0, :3, 3] / 1.5
    np.testing.assert_allclose(direction.numpy(), np.array([0.3, -0.1, 0.05]) / np.linalg.norm([0.3, -0.1, 0.05]),
                               rtol=1e-6)
    out = trainer.step(triplets[:2])
    assert out['velocity'] > 0 and out['loss'] == pytest.approx(out['photometric'] + out['smoothness'], rel=1e-5)


def test_held_out_score_sees_the_depth_scale_that_the_photometric_loss_cannot():
    """The validation gate's reason to exist: on frames with known depth and speed, the loss at
    measured motion is lowest for metric depth; scaling depth and motion together leaves the
    loss at PoseNet's own motion unchanged, while the velocity error sees the motion's scale."""
    held, K, metric_scale = synthetic_holdout()
    trainer = Trainer(*load_networks(SHIPPED_MODEL), K)
    assert not 0.5 < metric_scale < 2  # the shipped model is not metric on this camera
    start = trainer.weights()

    def score(depth_factor: float, translation_factor: float = 1.0):
        pose = PoseNet()
        pose.load_state_dict(start.pose_net)
        pose.scale_translations(translation_factor)
        weights = dataclasses.replace(start, depth_scale=start.depth_scale * metric_scale * depth_factor,
                                      pose_net=pose.state_dict())
        return trainer.evaluate(held, weights)

    metric = score(1.0)
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert score(factor).metric_photometric > metric.metric_photometric, factor
    doubled = score(2.0, translation_factor=2.0)
    assert doubled.photometric == pytest.approx(score(1.0).photometric, rel=1e-3)
    assert doubled.velocity != pytest.approx(metric.velocity, rel=0.1)
    # the synthetic street has nothing at infinity below the horizon; holes do not see scale
    assert metric.holes < HOLE_TOLERANCE and doubled.holes == metric.holes
    assert trainer.evaluate([]) is None
