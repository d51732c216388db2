"""KITTI -> rosbag2 conversion, read back with rosbags, checked against the raw files."""
import shutil
from collections import defaultdict

import numpy as np
import pytest

from packnet_ros.cli import main
from packnet_ros.data.bag import (
    TOPICS,
    BagError,
    deserialize,
    playback,
    read_messages,
    stamp_ns,
    topics_of,
    write_kitti_bag,
)
from packnet_ros.data.kitti import KittiDrive, read_calib

from helpers import KITTI_DRIVE, require


def by_topic(bag):
    out = defaultdict(list)
    for topic, msgtype, timestamp, raw in read_messages(bag):
        out[topic].append((timestamp, deserialize(raw, msgtype)))
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_kitti_tiny_round_trip(tmp_path, storage):
    drive = KittiDrive(require(KITTI_DRIVE))
    bag = tmp_path / 'tiny'
    assert main(['kitti-to-bag', str(KITTI_DRIVE), str(bag), '--storage', storage]) == 0
    msgs = by_topic(bag)
    assert {topic: len(v) for topic, v in msgs.items()} == {t: 7 for t, _ in TOPICS.values()}
    stamps = [stamp_ns(s) for s in drive.stamps()]
    images = msgs['/kitti/camera/image_raw']
    assert [ts for ts, _ in images] == stamps
    assert [m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec for _, m in images] == stamps
    first = images[0][1]
    assert (first.encoding, first.width, first.height) == ('rgb8', 1242, 375)
    p_rect = read_calib(KITTI_DRIVE.parent / 'calib_cam_to_cam.txt')['P_rect_02'].reshape(3, 4)
    for _, info in msgs['/kitti/camera/camera_info']:
        np.testing.assert_array_equal(np.array(info.k).reshape(3, 3), p_rect[:, :3])
    for (_, odom), packet in zip(msgs['/kitti/odom'], drive.oxts()):
        lin = odom.twist.twist.linear
        assert (lin.x, lin.y, lin.z) == (packet.values['vf'], packet.values['vl'], packet.values['vu'])
        assert odom.header.stamp.sec * 10 ** 9 + odom.header.stamp.nanosec == stamp_ns(packet.stamp)
    for (_, depth), frame in zip(msgs['/kitti/depth_gt'], drive.frames):
        got = depth.data.view(np.float32).reshape(depth.height, depth.width)
        expected = drive.projected_depth(frame)
        assert depth.encoding == '32FC1'
        np.testing.assert_array_equal(np.nan_to_num(got, nan=0.0), expected)
        assert np.isnan(got[expected == 0]).all()


def test_failures_leave_no_bag(tmp_path):
    drive_copy = tmp_path / '2011_09_26' / KITTI_DRIVE.name
    shutil.copytree(require(KITTI_DRIVE), drive_copy)
    shutil.copy(KITTI_DRIVE.parent / 'calib_cam_to_cam.txt', drive_copy.parent)
    (drive_copy / 'image_02' / 'data' / '0000000004.png').write_bytes(b'broken')
    bag = tmp_path / 'out'
    assert main(['kitti-to-bag', str(drive_copy), str(bag)]) == 2
    assert not bag.exists() and not list(tmp_path.glob('.out*'))
    (drive_copy.parent / 'calib_cam_to_cam.txt').unlink()
    assert main(['kitti-to-bag', str(drive_copy), str(bag)]) == 2
    (tmp_path / 'exists').mkdir()
    assert main(['kitti-to-bag', str(KITTI_DRIVE), str(tmp_path / 'exists')]) == 2


def test_mismatched_oxts_count_is_an_error(tmp_path, capsys):
    drive_copy = tmp_path / '2011_09_26' / KITTI_DRIVE.name
    shutil.copytree(require(KITTI_DRIVE), drive_copy)
    shutil.copy(KITTI_DRIVE.parent / 'calib_cam_to_cam.txt', drive_copy.parent)
    (drive_copy / 'oxts' / 'data' / '0000000006.txt').unlink()
    assert main(['kitti-to-bag', str(drive_copy), str(tmp_path / 'bag')]) == 2
    assert 'OXTS packet' in capsys.readouterr().err


def test_lidar_projection_recovers_projected_depth(tmp_path):
    """Lift KITTI_tiny's projected depth into the velodyne frame, write it as a .bin scan,
    and project it back with the calibration chain: the same depth must come out."""
    drive_copy = tmp_path / '2011_09_26' / KITTI_DRIVE.name
    shutil.copytree(require(KITTI_DRIVE), drive_copy)
    for name in ('calib_cam_to_cam.txt', 'calib_velo_to_cam.txt'):
        shutil.copy(KITTI_DRIVE.parent / name, drive_copy.parent)
    drive = KittiDrive(drive_copy)
    depth = drive.projected_depth(0)
    v, u = np.nonzero(depth)
    z = depth[v, u].astype(np.float64)
    M = np.vstack([drive.velodyne_to_image(), [0, 0, 0, 1]])
    pts = np.linalg.solve(M, np.vstack([u * z, v * z, z, np.ones_like(z)]))
    scan = np.hstack([pts[:3].T, np.zeros((len(z), 1))]).astype(np.float32)
    (drive_copy / 'velodyne_points' / 'data').mkdir(parents=True)
    scan.tofile(drive_copy / 'velodyne_points' / 'data' / '0000000000.bin')
    lidar = drive.lidar_depth(0, depth.shape)
    np.testing.assert_allclose(lidar, depth, rtol=1e-4, atol=1e-4)


def test_playback_schedule_keeps_the_recorded_intervals(tmp_path):
    bag = write_kitti_bag(require(KITTI_DRIVE), tmp_path / 'bag')
    stamps = [s for _, _, s, _ in read_messages(bag)]
    played = list(playback(bag, rate=2.0))
    assert [p[2] for p in played] == stamps  # every message, in order
    np.testing.assert_allclose([p[0] for p in played], (np.array(stamps) - stamps[0]) / 1e9 / 2.0)
    later = list(playback(bag, rate=0.5, start_offset=0.25))
    first = stamps[0] + 250_000_000
    assert [p[2] for p in later] == [s for s in stamps if s >= first]
    np.testing.assert_allclose([p[0] for p in later], (np.array([p[2] for p in later]) - first) / 1e9 / 0.5)
    with pytest.raises(ValueError, match='rate'):
        next(playback(bag, rate=0))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_damaged_bags_are_bag_errors_naming_the_bag(tmp_path, storage):
    """rosbags' ReaderError (and, for some damage, TypeError or UnicodeDecodeError) and
    SerdeError become BagError, a ValueError whose message says which bag and what is wrong."""
    good = write_kitti_bag(require(KITTI_DRIVE), tmp_path / 'good', storage)
    truncated = shutil.copytree(good, tmp_path / 'truncated')
    storage_file = next(p for p in truncated.iterdir() if p.name != 'metadata.yaml')
    storage_file.write_bytes(storage_file.read_bytes()[:4096])
    broken = shutil.copytree(good, tmp_path / 'broken')
    (broken / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed\n')
    for bag in (truncated, broken):
        with pytest.raises(BagError, match=f'^{bag}: not a readable rosbag2') as error:
            list(read_messages(bag))
        assert error.value.bag == bag and len(str(error.value).splitlines()) == 1
        with pytest.raises(BagError, match=f'^{bag}: not a readable rosbag2'):
            topics_of(bag)
    with pytest.raises(BagError, match='a sensor_msgs/msg/Image message cannot be decoded'):
        deserialize(b'\x00\x01\x00\x00\x05', 'sensor_msgs/msg/Image')
