"""Training core: triplet accumulation from streams, replay buffer bounds, trainer step."""
import dataclasses

import numpy as np
import pytest
import torch

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.model.checkpoints import load_networks
from packnet_ros.networks import PackNetSlim01, PoseNet
from packnet_ros.training import (
    NEIGHBOURS,
    ReplayBuffer,
    SpeedTrack,
    Trainer,
    TrainerConfig,
    Triplet,
    TripletAccumulator,
    TripletRules,
)
from packnet_ros.training.session import HOLE_TOLERANCE

from helpers import KITTI_DRIVE, SHIPPED_MODEL, kitti_triplets, synthetic_holdout

H, W = 32, 64


def frame(value=0):
    return np.full((H, W, 3), value, np.uint8)


def stream(acc, frame_stamps, speed_fn, odom_stamps):
    """Interleave odometry and frames by time, as they would arrive; all emitted triplets."""
    events = [(t, 'odom') for t in odom_stamps] + [(t, 'frame') for t in frame_stamps]
    out = []
    for t, kind in sorted(events, key=lambda e: (e[0], e[1] == 'frame')):
        if kind == 'odom':
            out += acc.add_speed(t, speed_fn(t))
        else:
            out += acc.add_frame(t, frame(int(t * 10) % 255))
    return out


def test_distance_is_the_exact_integral_between_stamps():
    # v(t) = 2 + 3t sampled at 50 Hz, frames at 10 Hz with jitter: distance t0->t1 = 2dt + 1.5(t1^2 - t0^2)
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    frames = [0.1, 0.203, 0.297, 0.41]
    triplets = stream(acc, frames, lambda t: 2 + 3 * t, np.arange(0, 0.6, 0.02))
    assert len(triplets) == 2
    for triplet, (a, b, c) in zip(triplets, [frames[0:3], frames[1:4]]):
        exact = [2 * (b - a) + 1.5 * (b ** 2 - a ** 2), 2 * (c - b) + 1.5 * (c ** 2 - b ** 2)]
        np.testing.assert_allclose(triplet.distances, exact, rtol=1e-6)
        assert triplet.stamp == b and triplet.images.shape == (3, H, W, 3)


def test_downsizes_and_strides():
    acc = TripletAccumulator(H, W, TripletRules(stride=2, context_distance=0.0))
    stamps = np.arange(0, 1.0, 0.1)
    for t in np.arange(0, 1.2, 0.02):
        acc.add_speed(t, 5.0)
    first = next(t for s in stamps for t in acc.add_frame(s, np.zeros((4 * H, 4 * W, 3), np.uint8)))
    assert first.images.shape == (3, H, W, 3)
    np.testing.assert_allclose(first.distances, [1.0, 1.0], rtol=1e-6)  # 0.2 s at 5 m/s


@pytest.mark.parametrize('case,reason', [
    ('static', 'static'), ('no_odom', 'no_speed'), ('stale', 'stale_speed'), ('nan', 'invalid_speed'),
    ('negative', 'invalid_speed'), ('gap', 'gap')])
def test_unusable_triplets_are_skipped_with_their_reason(case, reason):
    acc = TripletAccumulator(H, W, TripletRules(stride=1, context_distance=0.0, min_distance=0.2))
    frames = [0.1, 0.2, 0.3, 0.4]
    speed, odom = (lambda t: 10.0), np.arange(0, 0.6, 0.02)
    if case == 'static':
        speed = lambda t: 0.5  # 5 cm per frame
    elif case == 'no_odom':
        odom = []
        frames = frames + [0.5, 0.6, 0.9, 1.2]  # long enough for waiting candidates to expire
    elif case == 'stale':
        odom = np.arange(0, 0.25, 0.02)  # odometry stopped arriving
        frames = frames + [0.5, 0.6, 0.9, 1.2]
    elif case == 'nan':
        speed = lambda t: float('nan')
    elif case == 'negative':
        speed = lambda t: -3.0
    elif case == 'gap':
        frames = [0.1, 0.2, 1.5, 1.6]
        odom = np.arange(0, 1.8, 0.02)
    out = stream(acc, frames, speed, odom)
    assert acc.skipped[reason] > 0, dict(acc.skipped)
    assert not out


def test_looping_bag_restarts_accumulation():
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    emitted = []
    for _ in range(2):  # the same 1.0 .. 1.5 s recording played twice
        for t in np.arange(1.0, 1.5, 0.02):
            emitted += acc.add_speed(t, 10.0)
            if round(t * 50) % 5 == 0:
                emitted += acc.add_frame(t, frame())
    # The first message of the second pass could be one late message; the second says the
    # stream went back: once for odometry, once for frames.
    assert acc.skipped['late'] == 2 and acc.skipped['time_backwards'] == 2
    assert len(emitted) == 3 + 2  # frames 1.0..1.4 -> 3 triplets, then 1.1..1.4 -> 2, none across the jump
    assert all(np.allclose(t.distances, 1.0) for t in emitted)


def test_speed_track_resets_when_time_goes_backwards():
    track = SpeedTrack()
    for t in (1.0, 1.1, 1.2):
        track.add(t, 4.0)
    assert track.add(0.5, 4.0) == 'late' and len(track.samples) == 3
    assert track.add(0.6, 4.0) == 'time_backwards'
    assert list(track.samples) == [(0.6, 4.0)]
    assert track.distance(1.0, 1.1) == (None, 'pending')


def test_unstamped_and_late_frames_are_dropped_with_the_window_kept():
    """A driver that does not stamp gives no triplet and says why; one late re-sent frame
    (0.2 s old) per second cleared the 3-frame window each time (81 triplets instead of ~99)."""
    def run(resend_late: bool):
        acc = TripletAccumulator(H, W, NEIGHBOURS)
        triplets = []
        for i in range(100):
            t = 1.0 + 0.1 * i
            for stamp in (t, t + 0.05):
                triplets += acc.add_speed(stamp, 10.0)
            triplets += acc.add_frame(t, frame())
            if resend_late and i % 10 == 9:
                triplets += acc.add_frame(t - 0.2, frame())
        return triplets, acc.skipped
    clean, _ = run(False)
    with_late, skipped = run(True)
    assert len(clean) == 98 and [t.stamp for t in with_late] == [t.stamp for t in clean]
    assert skipped['late'] == 10 and 'time_backwards' not in skipped
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    for _ in range(20):
        assert acc.add_speed(0.0, 10.0) == [] and acc.add_frame(0.0, frame()) == []
    assert acc.skipped['unstamped'] == 40 and not acc.frames and not acc.speed.samples


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
