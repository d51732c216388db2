"""bag_player and depth_evaluator as real processes."""
import json
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from packnet_ros.data.bag import read_messages, write_kitti_bag
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.metrics import image_metrics, mean_metrics
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher
from packnet_ros.ros.node_process import ClientNode, start_node, write_params_file
from packnet_ros.ros.nodes.conversions import depth_to_image

from helpers import DEADLINE, KITTI_DRIVE, require, wait_for_reliable_subscribers

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return write_kitti_bag(require(KITTI_DRIVE), tmp_path_factory.mktemp('bag') / 'tiny')


def test_player_republishes_identical_bytes_in_order_with_clock(bag, tmp_path):
    """Timing itself is the schedule's (test_bag.py); a process test on a busy machine cannot
    measure it, so here: every message, byte for byte, in order, and bag time on /clock."""
    probe = ClientNode('player_test')
    arrivals = {'/kitti/camera/image_raw': [], '/kitti/odom': [], '/clock': []}
    for topic, cls in (('/kitti/camera/image_raw', Image), ('/kitti/odom', Odometry), ('/clock', Clock)):
        probe.node.create_subscription(cls, topic, lambda raw, t=topic: arrivals[t].append((time.monotonic(), raw)),
                                       RELIABLE, raw=True)
    rate = 2.0
    params = write_params_file(tmp_path / 'player.yaml',
                               {'bag': str(bag), 'rate': rate, 'wait_for_subscribers': 3, 'start_delay': 1.0})
    proc = start_node('bag_player', tmp_path / 'player.log', (params,))
    try:
        last_stamp = max(s for _, _, s, _ in read_messages(bag))

        def clock_at(raw):
            c = deserialize_message(raw, Clock).clock
            return c.sec * 10 ** 9 + c.nanosec

        try:
            probe.wait_for(lambda: len(arrivals['/kitti/camera/image_raw']) == 7 and len(arrivals['/kitti/odom']) == 7
                           and arrivals['/clock'] and clock_at(arrivals['/clock'][-1][1]) == last_stamp,
                           DEADLINE, 'all images, odometry and the final clock')
        except TimeoutError as exc:
            counts = {topic: len(got) for topic, got in arrivals.items()}
            raise TimeoutError(f'{exc}; received {counts}; player log: {proc.log_tail()}') from exc
        assert proc.popen.wait(timeout=DEADLINE) == 0  # exits at the end of the bag
    finally:
        proc.stop()
        probe.close()
    for topic in ('/kitti/camera/image_raw', '/kitti/odom'):
        stored = [raw for _, _, _, raw in read_messages(bag, [topic])]
        assert [bytes(raw) for _, raw in arrivals[topic]] == [bytes(raw) for raw in stored]
    # /clock is the bag time of the message being played (a latest-value topic: values may be
    # superseded, never reordered).
    clock_ns = [clock_at(raw) for _, raw in arrivals['/clock']]
    bag_stamps = [s for _, _, s, _ in read_messages(bag)]
    assert set(clock_ns) <= set(bag_stamps) and clock_ns == sorted(clock_ns) and clock_ns[-1] == bag_stamps[-1]


def test_evaluator_matches_offline_metrics(tmp_path):
    drive = KittiDrive(require(KITTI_DRIVE))
    rng = np.random.default_rng(0)
    gts = [drive.projected_depth(f) for f in drive.frames]
    preds = [np.clip(0.5 * g + rng.uniform(1, 5, g.shape), 1, 80).astype(np.float32)[::3, ::3] for g in gts]
    out_json = tmp_path / 'metrics.json'
    proc = start_node('depth_evaluator', tmp_path / 'evaluator.log', parameters={'output_json': str(out_json)})
    probe = ClientNode('evaluator_test')
    pub_pred = probe.node.create_publisher(Image, 'depth', RELIABLE)
    pub_gt = probe.node.create_publisher(Image, 'depth_gt', RELIABLE)
    watcher = DiagnosticsWatcher(probe.node)
    try:
        wait_for_reliable_subscribers(probe, ['/depth', '/depth_gt'])
        time.sleep(1.0)  # our side saw the match; give the evaluator's readers time to see ours
        for i, (gt, pred) in enumerate(zip(gts, preds)):
            header = Header(stamp=Time(sec=100 + i, nanosec=5), frame_id='cam')
            gt_msg = depth_to_image(np.where(gt > 0, gt, np.nan), header)
            pub_gt.publish(gt_msg) if i % 2 else pub_pred.publish(depth_to_image(pred, header))
            pub_pred.publish(depth_to_image(pred, header)) if i % 2 else pub_gt.publish(gt_msg)
        unpaired = Header(stamp=Time(sec=999), frame_id='cam')
        pub_pred.publish(depth_to_image(preds[0], unpaired))
        probe.wait_for(lambda: watcher.count('frames', '/depth_evaluator') == 7, DEADLINE, 'all 7 pairs evaluated')
    finally:
        proc.stop()
        probe.close()
    report = json.loads(out_json.read_text())
    assert report['summary']['frames'] == 7 and len(report['frames']) == 7
    offline = mean_metrics([image_metrics(np.where(g > 0, g, np.nan), np.asarray(p)) for g, p in zip(gts, preds)])
    for part in ('metric', 'median_scaled'):
        for name, value in asdict(getattr(offline, part)).items():
            assert report['summary']['all'][part][name] == pytest.approx(value, rel=1e-9)
    assert report['summary']['all']['scale_ratio'] == pytest.approx(offline.scale_ratio, rel=1e-9)


def test_paced_player_waits_for_each_result_and_for_the_named_nodes(bag, tmp_path):
    """A consumer far slower than the bag still gets every frame: the player starts only once
    the named node subscribes, sends what shares a frame's bag time (its camera_info) with it,
    and holds bag time until that frame's result (same header stamp) is published."""
    probe = ClientNode('paced_test', make_node=lambda context: Node('slow_consumer', namespace='/replay',
                                                                    context=context))
    node, events = probe.node, []
    results = node.create_publisher(Image, '/replay/depth', RELIABLE)

    def answer(header):
        events.append(('result', header.stamp.sec, header.stamp.nanosec))
        results.publish(Image(header=header, encoding='32FC1'))

    def on_image(msg):  # "inference" on another thread: 0.5 s, while the bag plays at 10 Hz
        events.append(('image', msg.header.stamp.sec, msg.header.stamp.nanosec))
        threading.Timer(0.5, answer, args=(msg.header,)).start()
    node.create_subscription(Image, '/kitti/camera/image_raw', on_image, RELIABLE)
    node.create_subscription(CameraInfo, '/kitti/camera/camera_info',
                             lambda m: events.append(('info', m.header.stamp.sec, m.header.stamp.nanosec)), RELIABLE)
    params = write_params_file(tmp_path / 'player.yaml', {
        'bag': str(bag), 'wait_for_nodes': ['/replay/slow_consumer'], 'pace_topic': '/replay/depth',
        'pace_input': '/kitti/camera/image_raw', 'publish_clock': False})
    proc = start_node('bag_player', tmp_path / 'player.log', (params,))
    try:
        assert proc.popen.wait(timeout=4 * DEADLINE) == 0, proc.log_tail()
    finally:
        proc.stop()
        probe.close()
    images = [e for e in events if e[0] == 'image']
    assert len(images) == 7, (events, proc.log_tail())
    for image, following in zip(images, images[1:]):  # in order: the next only after this one's result
        assert events.index(('result', *image[1:])) < events.index(following)
        assert ('info', *image[1:]) in events[:events.index(following)]  # sent before the wait, not after
    assert ', 0 without a paced result' in proc.log.read_text()
