"""KITTI raw reader on the real KITTI_tiny drive."""
import numpy as np
import pytest

from packnet_ros.data.kitti import KittiDrive, KittiError, parse_timestamp, read_calib

from helpers import KITTI_DRIVE, require


@pytest.fixture(scope='module')
def drive():
    return KittiDrive(require(KITTI_DRIVE))


def test_frames_and_stamps(drive):
    assert drive.frames == list(range(7))
    stamps = np.array(drive.stamps())
    assert np.all(np.diff(stamps) > 0.09) and np.all(np.diff(stamps) < 0.11)  # 10 Hz camera


def test_intrinsics_are_p_rect(drive):
    calib = read_calib(KITTI_DRIVE.parent / 'calib_cam_to_cam.txt')
    np.testing.assert_array_equal(drive.intrinsics(), calib['P_rect_02'].reshape(3, 4)[:, :3])
    assert drive.intrinsics()[0, 0] == pytest.approx(721.5377)


def test_oxts_speed_is_velocity_norm(drive):
    packets = drive.oxts()
    first = packets[0]
    assert first.values['vf'] == pytest.approx(8.7424908583432)
    assert first.speed == pytest.approx(np.linalg.norm([8.7424908583432, 0.076390461431484, -0.10478895840789]))
    assert len(packets) == 7


def test_projected_depth(drive):
    depth = drive.projected_depth(0)
    assert depth.shape == (375, 1242) and depth.dtype == np.float32
    assert 1000 < (depth > 0).sum() < depth.size // 10 and depth.max() < 120


def test_timestamp_keeps_nanoseconds():
    a = parse_timestamp('2011-09-26 13:17:59.293761040')
    b = parse_timestamp('2011-09-26 13:17:59.393600894')
    assert b - a == pytest.approx(0.099839854, abs=1e-6)


def test_not_a_drive(tmp_path):
    with pytest.raises(KittiError, match='not a KITTI drive'):
        KittiDrive(tmp_path)
