"""`packnet-ros eval`: the Eigen protocol on real KITTI frames, split files and their errors;
depth_evaluator refusing malformed messages."""
import json

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from packnet_ros.cli import main
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.data.split import SplitError, parse_split_line, read_split
from packnet_ros.image import read_rgb
from packnet_ros.metrics import image_metrics
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher, Level
from packnet_ros.ros.node_process import ClientNode, start_node
from packnet_ros.ros.nodes.conversions import depth_to_image
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve

from helpers import DEADLINE, KITTI_DRIVE, KITTI_TINY, require, wait_for_reliable_subscribers


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, make_small_checkpoint):
    # a plausible scale, so that the 80 m cap and clipping matter less than noise
    return make_small_checkpoint(tmp_path_factory.mktemp('ckpt') / 'small.ckpt', size=(96, 320), depth=12.0)


def test_split_lines_in_both_common_formats():
    assert parse_split_line('2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png '
                            '2011_09_26/2011_09_26_drive_0002_sync/image_03/data/0000000069.png') == \
        ('2011_09_26/2011_09_26_drive_0002_sync', 2, 69)
    assert parse_split_line('2011_09_26/2011_09_26_drive_0002_sync 69 r') == \
        ('2011_09_26/2011_09_26_drive_0002_sync', 3, 69)
    assert parse_split_line('   ') is None
    with pytest.raises(SplitError, match='cannot read split line'):
        parse_split_line('some/image.png')


def test_eval_equals_metrics_module_on_the_same_pairs(checkpoint, tmp_path, capsys):
    root = require(KITTI_TINY)
    out = tmp_path / 'result.json'
    assert main(['eval', '--checkpoint', str(checkpoint), '--data', str(root), '--split',
                 str(root / 'kitti_tiny.txt'), '--device', 'cpu', '--batch-size', '2', '--workers', '0',
                 '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'median-scaled' in printed and 'abs_rel' in printed
    result = json.loads(out.read_text())

    estimator = DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'torch', 'fp32'))
    drive = KittiDrive(KITTI_DRIVE)
    per_image = []
    for frame in range(1, 6):  # kitti_tiny.txt names frames 1-5 of the left camera
        rgb = read_rgb(drive.image_path(frame))
        gt = drive.projected_depth(frame)
        assert gt is not None and gt.shape == rgb.shape[:2]
        per_image.append(image_metrics(gt, estimator.infer(rgb), min_depth=0.0, max_depth=80.0, crop='garg'))
    assert result['images'] == 5 and result['without_ground_truth'] == 0
    assert result['input_size'] == [96, 320] and result['reported'] == 'metric'
    for row in ('metric', 'median_scaled'):
        for key in ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3'):
            expected = np.mean([getattr(getattr(r, row), key) for r in per_image])
            assert result[row][key] == pytest.approx(expected, rel=1e-4, abs=1e-6), (row, key)
    assert result['scale_ratio'] == pytest.approx(np.mean([r.scale_ratio for r in per_image]), rel=1e-4)


def test_eval_of_a_drive_folder_without_split(checkpoint, tmp_path):
    out = tmp_path / 'drive.json'
    assert main(['eval', '--checkpoint', str(checkpoint), '--data', str(require(KITTI_DRIVE)), '--device', 'cpu',
                 '--workers', '0', '--median-scaling', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['images'] == 7 and result['reported'] == 'median_scaled'
    fast = tmp_path / 'fast.json'
    assert main(['eval', '--checkpoint', str(checkpoint), '--data', str(require(KITTI_DRIVE)), '--device', 'cpu',
                 '--workers', '0', '--backend', 'onnxruntime', '--json', str(fast)]) == 0
    fast = json.loads(fast.read_text())
    assert fast['settings']['backend'] == 'onnxruntime'
    assert fast['metric']['abs_rel'] == pytest.approx(result['metric']['abs_rel'], rel=1e-4)


def test_split_naming_missing_data_lists_all_of_it(checkpoint, tmp_path, capsys):
    root = require(KITTI_TINY)
    split = tmp_path / 'split.txt'
    split.write_text('2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000001.png\n'
                     '2011_09_26/2011_09_26_drive_0099_sync 5 l\n'
                     '2011_09_30/2011_09_30_drive_0016_sync 7 l\n'
                     '2011_09_26/2011_09_26_drive_0023_sync 42 l\n')
    with pytest.raises(SplitError) as error:
        read_split(root, split)
    message = str(error.value)
    assert 'missing drive 2011_09_26/2011_09_26_drive_0099_sync' in message
    assert 'missing drive 2011_09_30/2011_09_30_drive_0016_sync' in message
    assert 'missing image 2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000042.png' in message
    assert main(['eval', '--checkpoint', str(checkpoint), '--data', str(root), '--split', str(split)]) == 2
    assert 'drive_0099_sync' in capsys.readouterr().err


def test_eval_without_ground_truth_says_where_it_looked(checkpoint, tmp_path, capsys):
    drive = tmp_path / '2011_09_26' / '2011_09_26_drive_0023_sync' / 'image_02' / 'data'
    drive.mkdir(parents=True)
    (drive / '0000000000.png').write_bytes((require(KITTI_DRIVE) / 'image_02' / 'data' / '0000000000.png')
                                           .read_bytes())
    assert main(['eval', '--checkpoint', str(checkpoint), '--data', str(drive.parent.parent), '--device', 'cpu',
                 '--workers', '0']) == 2
    assert 'no frame has ground truth' in capsys.readouterr().err


def test_evaluator_refuses_truncated_messages_and_evaluates_the_next_pair(tmp_path):
    """A depth_gt (or depth) message whose data is shorter than height*step ended the node
    (numpy: 'buffer is smaller than requested size'); now it is dropped, logged and counted."""
    out_json = tmp_path / 'metrics.json'
    proc = start_node('depth_evaluator', tmp_path / 'evaluator.log',
                      parameters={'output_json': str(out_json), 'crop': 'none'})
    client = ClientNode('truncated_test')
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_pred = client.node.create_publisher(Image, 'depth', reliable)
    pub_gt = client.node.create_publisher(Image, 'depth_gt', reliable)
    watcher = DiagnosticsWatcher(client.node)

    def values() -> dict[str, str]:
        return watcher.values('/depth_evaluator')
    gt = np.full((24, 32), 10.0, np.float32)
    try:
        wait_for_reliable_subscribers(client, ['/depth', '/depth_gt'])
        truncated = depth_to_image(gt, Header(stamp=Time(sec=5), frame_id='cam'))
        truncated.data = truncated.data[:len(truncated.data) // 2]
        pub_gt.publish(truncated)
        short_rows = depth_to_image(gt, Header(stamp=Time(sec=6), frame_id='cam'))
        short_rows.step = 8  # less than width*4
        pub_pred.publish(short_rows)
        header = Header(stamp=Time(sec=7), frame_id='cam')
        pub_gt.publish(depth_to_image(gt, header))
        pub_pred.publish(depth_to_image(gt * 1.1, header))
        client.wait_for(lambda: values().get('frames') == '1' and values().get('rejected') == '2', DEADLINE,
                        'the good pair evaluated and both bad messages counted')
        assert proc.alive(), proc.log_tail()
        status = watcher.latest(node='/depth_evaluator')
        assert status.level == Level.WARN  # errors beside successes
        assert '2 errors in 10 s, latest: depth' in status.message
    finally:
        proc.stop()
        client.close()
    log = proc.log.read_text()
    assert 'depth_evaluator.depth_gt]: dropping message: data has 1536 bytes, expected step*height = 3072' in log
    assert 'depth_evaluator.depth]: dropping message: step 8 is smaller than width*4 = 128' in log
    assert 'Traceback' not in log
    report = json.loads(out_json.read_text())
    assert report['summary']['frames'] == 1
    assert report['frames'][0]['metric']['abs_rel'] == pytest.approx(0.1, rel=1e-5)
