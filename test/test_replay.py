"""bag_player and depth_evaluator as real processes."""
import json
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from packnet_ros.data.bag import read_messages, write_kitti_bag
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.metrics import depth_metrics
from packnet_ros.nodes.conversions import depth_to_image
from ros_helpers import Probe, start_node, stop_node
from reference import KITTI_DRIVE, require

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return write_kitti_bag(require(KITTI_DRIVE), tmp_path_factory.mktemp('bag') / 'tiny')


def write_params(path, name, params):
    lines = [f'{name}:', '  ros__parameters:'] + [f'    {k}: {json.dumps(v)}' for k, v in params.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


def test_player_republishes_identical_bytes_with_original_timing(bag, tmp_path):
    probe = Probe('player_test')
    arrivals = {'/kitti/camera/image_raw': [], '/kitti/odom': [], '/clock': []}
    for topic, cls in (('/kitti/camera/image_raw', Image), ('/kitti/odom', Odometry), ('/clock', Clock)):
        probe.node.create_subscription(cls, topic, lambda raw, t=topic: arrivals[t].append((time.monotonic(), raw)),
                                       RELIABLE, raw=True)
    rate = 2.0
    params = write_params(tmp_path / 'player.yaml', 'bag_player',
                          {'bag': str(bag), 'rate': rate, 'wait_for_subscribers': 3, 'start_delay': 1.0})
    proc = start_node('bag_player', params, {}, tmp_path / 'player.log')
    try:
        last_stamp = max(s for _, _, s, _ in read_messages(bag))

        def clock_at(raw):
            c = deserialize_message(raw, Clock).clock
            return c.sec * 10 ** 9 + c.nanosec

        probe.wait_for(lambda: len(arrivals['/kitti/camera/image_raw']) == 7 and len(arrivals['/kitti/odom']) == 7
                       and arrivals['/clock'] and clock_at(arrivals['/clock'][-1][1]) == last_stamp,
                       30, 'all images, odometry and the final clock')
        assert proc.wait(timeout=10) == 0  # exits at the end of the bag
    finally:
        stop_node(proc)
        probe.close()
    for topic in ('/kitti/camera/image_raw', '/kitti/odom'):
        stored = [raw for _, _, _, raw in read_messages(bag, [topic])]
        assert [bytes(raw) for _, raw in arrivals[topic]] == [bytes(raw) for raw in stored]
    # Timing, from the small messages (1.4 MB images are fragmented and repaired by DDS, so
    # their delivery times measure the transport, not the player): the odometry intervals,
    # and /clock, the bag time of the message being played (a latest-value topic: values may
    # be superseded, never reordered).
    odom_wall = np.array([t for t, _ in arrivals['/kitti/odom']])
    odom_bag = np.array([s for _, _, s, _ in read_messages(bag, ['/kitti/odom'])]) / 1e9
    np.testing.assert_allclose(np.diff(odom_wall), np.diff(odom_bag) / rate, atol=0.02)
    clock_ns = [clock_at(raw) for _, raw in arrivals['/clock']]
    bag_stamps = [s for _, _, s, _ in read_messages(bag)]
    assert set(clock_ns) <= set(bag_stamps) and clock_ns == sorted(clock_ns) and clock_ns[-1] == bag_stamps[-1]


def test_evaluator_matches_offline_metrics(tmp_path):
    drive = KittiDrive(require(KITTI_DRIVE))
    rng = np.random.default_rng(0)
    gts = [drive.projected_depth(f) for f in drive.frames]
    preds = [np.clip(0.5 * g + rng.uniform(1, 5, g.shape), 1, 80).astype(np.float32)[::3, ::3] for g in gts]
    out_json = tmp_path / 'metrics.json'
    params = write_params(tmp_path / 'evaluator.yaml', 'depth_evaluator', {'output_json': str(out_json)})
    proc = start_node('depth_evaluator', params, {}, tmp_path / 'evaluator.log')
    probe = Probe('evaluator_test')
    pub_pred = probe.node.create_publisher(Image, 'depth', RELIABLE)
    pub_gt = probe.node.create_publisher(Image, 'depth_gt', RELIABLE)
    try:
        probe.wait_for(lambda: pub_pred.get_subscription_count() and pub_gt.get_subscription_count(), 30,
                       'evaluator')
        time.sleep(1.0)  # our side saw the match; give the evaluator's readers time to see ours
        for i, (gt, pred) in enumerate(zip(gts, preds)):
            header = Header(stamp=Time(sec=100 + i, nanosec=5), frame_id='cam')
            gt_msg = depth_to_image(np.where(gt > 0, gt, np.nan), header)
            pub_gt.publish(gt_msg) if i % 2 else pub_pred.publish(depth_to_image(pred, header))
            pub_pred.publish(depth_to_image(pred, header)) if i % 2 else pub_gt.publish(gt_msg)
        unpaired = Header(stamp=Time(sec=999), frame_id='cam')
        pub_pred.publish(depth_to_image(preds[0], unpaired))
        time.sleep(2.0)
    finally:
        stop_node(proc)
        probe.close()
    report = json.loads(out_json.read_text())
    assert report['summary']['frames'] == 7 and len(report['frames']) == 7
    offline = depth_metrics(np.stack([np.where(g > 0, g, np.nan) for g in gts]),
                            np.stack([np.asarray(p) for p in preds]))
    for part in ('metric', 'median_scaled'):
        for name, value in offline[part].items():
            assert report['summary']['all'][part][name] == pytest.approx(value, rel=1e-9)
    assert report['summary']['all']['scale_ratio'] == pytest.approx(offline['scale_ratio'], rel=1e-9)
