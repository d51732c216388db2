"""Synthetic drive: deterministic, physically consistent, readable as a KITTI drive."""
import numpy as np
import pytest
import torch

from packnet_ros.cli import main
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.data.synthetic import CameraRig, drive, positions, speed_profile
from packnet_ros.geometry import view_synthesis
from packnet_ros.losses import travelled_distance


@pytest.fixture(scope='module')
def frames():
    return list(drive(12, seed=7, camera=CameraRig(192, 64), start_time=4.0))


def test_deterministic_per_seed(frames):
    again = list(drive(2, seed=7, camera=CameraRig(192, 64), start_time=4.0))
    assert np.array_equal(again[0].rgb, frames[0].rgb) and np.array_equal(again[1].depth, frames[1].depth)
    other = next(drive(1, seed=8, camera=CameraRig(192, 64), start_time=4.0))
    assert not np.array_equal(other.rgb, frames[0].rgb)


def test_warping_with_true_depth_and_pose_reproduces_the_next_frame(frames):
    K = torch.tensor(CameraRig(192, 64).K, dtype=torch.float32)[None]
    for a, b in zip(frames[:-1:3], frames[1::3]):
        depth = torch.from_numpy(np.where(np.isfinite(a.depth), a.depth, 1e4))[None, None]
        T = torch.eye(4)[None].clone()
        T[0, 2, 3] = -(b.position - a.position)  # the camera moved forward along z
        target = torch.from_numpy(a.rgb).permute(2, 0, 1)[None].float() / 255
        ref = torch.from_numpy(b.rgb).permute(2, 0, 1)[None].float() / 255
        warped = view_synthesis(ref, depth, K, T)
        inside = warped.sum(1)[0] > 0
        warp_err = (warped - target).abs().mean(1)[0][inside]
        still_err = (ref - target).abs().mean(1)[0][inside]
        assert warp_err.median() < 0.015, 'warping should reproduce all but occlusions and edges'
        assert warp_err.mean() < 0.5 * still_err.mean()


def test_speed_profile_has_a_stop_and_positions_integrate_it():
    t = np.arange(0, 25, 0.1)
    v = speed_profile(t)
    assert v.max() > 7 and np.any(v == 0) and v[-1] > 7
    assert positions(np.array([20.0]))[0] == pytest.approx(travelled_distance(t, v, 0, 20), rel=1e-3)


def test_depth_is_metric_z(frames):
    f = frames[0]
    v = 63  # bottom row looks at the road: depth = camera height / ray slope
    K = CameraRig(192, 64).K
    expected = 1.65 / ((v - K[1, 2]) / K[1, 1])
    centre = f.depth[v, 90:102]
    assert np.allclose(centre, expected, rtol=1e-6)


def test_cli_writes_a_kitti_drive(tmp_path):
    assert main(['synth', str(tmp_path), '--frames', '6', '--seed', '3', '--width', '96', '--height', '32',
                 '--workers', '1']) == 0
    drive_dir = next(tmp_path.glob('*/*_sync'))
    kitti = KittiDrive(drive_dir)
    assert kitti.frames == list(range(6))
    np.testing.assert_allclose(kitti.intrinsics(), CameraRig(96, 32).K, rtol=1e-6)
    stamps = np.array(kitti.stamps())
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-6)
    speeds = [p.speed for p in kitti.oxts()]
    np.testing.assert_allclose(speeds, speed_profile(stamps - stamps[0]), rtol=1e-6)  # float64 POSIX stamps
    depth = kitti.projected_depth(5)
    assert depth.shape == (32, 96) and (depth == 0).any() and depth.max() > 10  # sky and far facades
    assert main(['synth', str(tmp_path), '--frames', '2']) == 2
