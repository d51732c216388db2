"""Offline training: triplets from drives and bags, `packnet-ros train`, `packnet-ros strip`."""
import numpy as np
import pytest

from packnet_ros.cli import main
from packnet_ros.data.bag import write_kitti_bag
from packnet_ros.data.split import SplitError
from packnet_ros.data.synthetic import CameraRig, write_kitti_drive
from packnet_ros.data.triplets import BagTopics, DriveTriplets, bag_triplets, plan_triplets, split_triplets
from packnet_ros.model.checkpoints import load_checkpoint
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve
from packnet_ros.training import NEIGHBOURS, TripletAccumulator, TripletRules

from helpers import KITTI_DRIVE, kitti_triplets, require


@pytest.fixture(scope='module')
def drive(tmp_path_factory):
    return write_kitti_drive(tmp_path_factory.mktemp('synth'), 24, seed=3, camera=CameraRig(96, 32), workers=1)


def test_drive_triplets_equal_the_online_accumulators():
    online, K = kitti_triplets(64, 192)
    offline = DriveTriplets(require(KITTI_DRIVE), 64, 192, rules=NEIGHBOURS)
    assert len(offline) == len(online) == 4
    for a, b in zip(offline, online):
        assert a.stamp == b.stamp
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-6)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_allclose(a.intrinsics, K)


def test_bag_triplets_equal_the_drives(tmp_path):
    bag = write_kitti_bag(require(KITTI_DRIVE), tmp_path / 'bag')
    from_bag, skipped = bag_triplets(bag, 64, 192, rules=NEIGHBOURS)
    from_drive = DriveTriplets(KITTI_DRIVE, 64, 192, rules=NEIGHBOURS)
    assert [t.stamp for t in from_bag] == pytest.approx([t.stamp for t in from_drive])
    for a, b in zip(from_bag, from_drive):
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)
        np.testing.assert_allclose(a.intrinsics, b.intrinsics)
    with pytest.raises(ValueError, match="lacks \\['/robot/odom'\\]; it has: .*/kitti/odom"):
        bag_triplets(bag, 64, 192, BagTopics(speed='/robot/odom'))


def test_context_by_travelled_distance_online_and_offline_alike():
    """3 m/s, then 0.5 m/s, then standstill noise (0.05 m/s) at 10 Hz: fast motion takes the
    neighbours, slow motion the farthest frame allowed, standstill is static; the online
    accumulator picks exactly what the offline planner picks."""
    stamps = [round(0.1 * i, 6) for i in range(40)]
    samples = [(t, 3.0 if t < 1.45 else 0.5 if t < 2.45 else 0.05) for t in np.round(np.arange(0, 4.0, 0.05), 6)]
    rules = TripletRules(stride=4, min_distance=0.1, context_distance=0.25)
    plans, skipped = plan_triplets(stamps, samples, rules)
    by_target = {p.frames[1]: p for p in plans}
    for target in range(4, 11):
        assert by_target[target].frames == (target - 1, target, target + 1)
        np.testing.assert_allclose(by_target[target].distances, [0.3, 0.3], rtol=1e-6)
    for target in (19, 20):
        assert by_target[target].frames == (target - 4, target, target + 4)
        np.testing.assert_allclose(by_target[target].distances, [0.2, 0.2], rtol=1e-6)
    assert not any(t >= 29 for t in by_target) and skipped['static'] >= 7
    assert by_target[1].frames == (0, 1, 2)  # the offline planner also has the targets near the ends
    accumulator = TripletAccumulator(8, 8, rules)
    online, fed = [], 0
    live = 100.0  # a live stream's clock: stamp 0 would mean "not stamped"
    for i, stamp in enumerate(stamps):
        while fed < len(samples) and samples[fed][0] <= stamp + 0.05:
            online += accumulator.add_speed(live + samples[fed][0], samples[fed][1])
            fed += 1
        online += accumulator.add_frame(live + stamp, np.full((8, 8, 3), i, np.uint8))
    centred = [p for p in plans if 4 <= p.frames[1] < len(stamps) - 4]  # what the online window can centre
    np.testing.assert_allclose([t.stamp - live for t in online], [p.stamp for p in centred], atol=1e-9)
    for triplet, plan in zip(online, centred):
        np.testing.assert_allclose(triplet.distances, plan.distances, rtol=1e-6)
        assert [int(image[0, 0, 0]) for image in triplet.images] == list(plan.frames)


def test_plan_skips_with_the_online_reasons():
    stamps = [0.0, 0.1, 0.2, 0.3, 1.5, 1.6, 1.7]
    samples = [(t, 5.0 if t < 0.25 else 0.2) for t in np.arange(0, 1.8, 0.05)]  # slows to 0.2 m/s at 0.25 s
    plans, skipped = plan_triplets(stamps, samples, TripletRules(stride=1, context_distance=0.0, min_distance=0.2))
    assert [p.frames for p in plans] == [(0, 1, 2)]
    np.testing.assert_allclose(plans[0].distances, [0.5, 0.5])
    # (1,2,3): 0.2 -> 0.3 s covers 0.05*(5+0.2)/2 + 0.05*0.2 = 0.14 m; (4,5,6): 0.02 m; the rest span 1.2 s
    assert skipped['static'] == 2 and skipped['gap'] == 2


def test_train_resume_and_strip(drive, tmp_path, capsys):
    out = tmp_path / 'ckpts'
    args = ['train', '--data', str(drive), '--out', str(out), '--height', '32', '--width', '96', '--batch-size', '2',
            '--device', 'cpu', '--workers', '0', '--set', 'model_width=0.125', '--set', 'save_every_steps=2']
    assert main(args + ['--steps', '3']) == 0
    assert load_checkpoint(out / 'step_000000003.ckpt').step == 3
    assert main(args + ['--steps', '4']) == 2  # checkpoints there and no --resume: refused, nothing touched
    assert 'pass --resume' in capsys.readouterr().err
    assert main(args + ['--steps', '5', '--resume']) == 0
    assert 'resumed from' in capsys.readouterr().out and load_checkpoint(out / 'step_000000005.ckpt').step == 5
    full = out / 'step_000000005.ckpt'
    assert main(['strip', '--half', '--keep-pose', str(full), str(tmp_path / 'ship.ckpt')]) == 0
    shipped = load_checkpoint(tmp_path / 'ship.ckpt')
    assert shipped.optimizer is None and shipped.pose_state is not None
    assert (tmp_path / 'ship.ckpt').stat().st_size < 0.3 * full.stat().st_size
    rgb = np.random.default_rng(0).integers(0, 256, (32, 96, 3), dtype=np.uint8)
    on_torch = resolve(full, 'cpu', 'torch', 'fp32')
    np.testing.assert_allclose(DepthEstimator.provision(tmp_path / 'ship.ckpt', on_torch).infer(rgb),
                               DepthEstimator.provision(full, on_torch).infer(rgb), rtol=5e-3)


def test_split_file_selects_target_frames(drive, tmp_path, capsys):
    root = drive.parent.parent  # synthetic drives keep the KITTI raw layout: ROOT/DATE/DRIVE
    splits = root / 'data_splits'
    splits.mkdir(exist_ok=True)
    relative = drive.relative_to(root)
    split = splits / 'train.txt'
    split.write_text(''.join(f'{relative}/image_02/data/{f:010d}.png\n' for f in range(5, 16)))
    [selected] = split_triplets(split, 32, 96)
    everything = DriveTriplets(drive, 32, 96)
    targets = [selected.drive.frames[p.frames[1]] for p in selected.plans]
    assert targets == [everything.drive.frames[p.frames[1]] for p in everything.plans
                       if 5 <= everything.drive.frames[p.frames[1]] <= 15]
    assert len(targets) >= 8
    out = tmp_path / 'ckpts'
    assert main(['train', '--data', str(split), '--out', str(out), '--height', '32', '--width', '96', '--steps', '1',
                 '--batch-size', '2', '--device', 'cpu', '--workers', '0', '--set', 'model_width=0.125',
                 '--no-tensorboard']) == 0
    assert load_checkpoint(out / 'step_000000001.ckpt').step == 1
    broken = splits / 'broken.txt'
    broken.write_text(f'{relative} 3 l\n2000_01_01/2000_01_01_drive_0042_sync 3 l\n')
    with pytest.raises(SplitError, match='missing drive 2000_01_01/2000_01_01_drive_0042_sync'):
        split_triplets(broken, 32, 96)


def test_tensorboard_logs_losses_and_held_out_metrics(drive, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / 'ckpts'
    assert main(['train', '--data', str(drive), '--out', str(out), '--height', '32', '--width', '96', '--steps', '2',
                 '--batch-size', '2', '--device', 'cpu', '--workers', '0', '--set', 'model_width=0.125',
                 '--holdout-every', '5']) == 0
    events = EventAccumulator(str(out / 'tensorboard'))
    events.Reload()
    tags = events.Tags()
    assert {'train/loss', 'train/velocity', 'train/learning_rate', 'val/photometric', 'val/metric_photometric',
            'val/velocity', 'val/holes', 'val_metric/abs_rel',
            'val_median_scaled/abs_rel', 'val/scale_ratio'} <= set(tags['scalars'])
    assert [e.step for e in events.Scalars('train/loss')] == [1, 2]
    abs_rel = events.Scalars('val_metric/abs_rel')[-1].value
    assert abs_rel > 0 and np.isfinite(abs_rel)  # the synthetic drive's exact depth is the ground truth
    assert tags['images'] == ['val/depth']


def test_unknown_settings_and_unusable_data_are_clear_errors(drive, tmp_path, capsys):
    base = ['train', '--data', str(drive), '--out', str(tmp_path / 'o'), '--steps', '1', '--device', 'cpu']
    assert main(base + ['--set', 'learnig_rate=1']) == 2
    assert "unknown training settings ['learnig_rate']" in capsys.readouterr().err
    assert main(['train', '--data', str(tmp_path), '--out', str(tmp_path / 'o'), '--steps', '1']) == 2
    assert 'neither a KITTI-layout drive folder' in capsys.readouterr().err
