"""depth_node with precision int8: float until its own camera's frames calibrate, then int8 (or
float again when int8 would change depth too much)."""
import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from test_depth_node import FRAME_ID, DepthClient, diagnostic_value

from packnet_ros.ros.node_process import ClientNode, start_node
from packnet_ros.ros.nodes.conversions import image_to_depth
from packnet_ros.serving.calibration import Int8Calibrator, Int8State
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve

from helpers import DEADLINE, REPO

SHIPPED = REPO / 'models' / 'synthetic_scale_free.ckpt'
SIZE = (96, 320)
CALIBRATION = 4


def start(tmp_path, kitti, **parameters):
    """The node with config/depth.yaml's defaults but for a quick calibration."""
    proc = start_node('depth_node', tmp_path / 'node.log', (REPO / 'config' / 'depth.yaml',), {
        'checkpoint': str(SHIPPED), 'device': 'cpu', 'height': SIZE[0], 'width': SIZE[1],
        'calibration_frames': CALIBRATION, 'calibration_period': 0.0, **parameters})
    client = DepthClient(ClientNode('depth_node_int8_test'))
    client.probe.wait_for(lambda: client.pub_image.get_subscription_count() > 0
                          and client.pub_info.get_subscription_count() > 0, DEADLINE, 'depth_node to come up')
    info = CameraInfo(header=Header(frame_id=FRAME_ID), width=1242, height=375)
    info.k = kitti[0].intrinsics().reshape(-1).tolist()
    client.pub_info.publish(info)
    return proc, client


def served(client):
    return diagnostic_value(client, 'precision'), diagnostic_value(client, 'int8')


def calibrate(client, frames):
    """Send the calibration frames, wait for the model they make, and return the depth it gives."""
    client.probe.wait_for(lambda: served(client) == ('fp32', f'calibrating: 0/{CALIBRATION} frames'), DEADLINE,
                          'float to be served while calibrating')
    for stamp, rgb in enumerate(frames[:CALIBRATION]):
        client.send(rgb, stamp)
    client.probe.wait_for(lambda: diagnostic_value(client, 'reloads') == '1', DEADLINE, 'the node to quantize')
    depth = image_to_depth(client.send(frames[5], 100))  # the worker swaps models before this frame
    seen = len(client.diagnostics.history())
    client.probe.wait_for(lambda: len(client.diagnostics.history()) > seen + 1, DEADLINE, 'diagnostics after the swap')
    return depth


def network_frame(rgb):
    return cv2.resize(rgb, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)


def test_int8_after_calibration_on_the_cameras_own_frames(tmp_path, kitti):
    frames = kitti[1]
    proc, client = start(tmp_path, kitti)  # precision auto: int8 on a CPU
    try:
        depth = calibrate(client, frames)
        assert served(client) == ('int8', 'serving int8')
    finally:
        client.probe.close()
        proc.stop()
    # The model the node quantized is the one these very frames give (same cache entry), and its
    # depth is float's within int8's few per cent.
    calibrated = [network_frame(rgb) for rgb in frames[:CALIBRATION]]
    int8 = DepthEstimator.provision(SHIPPED, resolve(SHIPPED, 'cpu', 'onnxruntime', 'int8'), SIZE,
                                    calibration=calibrated, min_depth=0.5, max_depth=80.0)
    np.testing.assert_allclose(depth, int8.infer(network_frame(frames[5])), rtol=1e-5, equal_nan=True)
    fp32 = DepthEstimator.provision(SHIPPED, resolve(SHIPPED, 'cpu', 'torch', 'fp32'), SIZE, min_depth=0.5,
                                    max_depth=80.0).infer(network_frame(frames[5]))
    valid = np.isfinite(depth) & np.isfinite(fp32)
    assert valid.mean() > 0.9 and np.median(np.abs(depth[valid] - fp32[valid]) / fp32[valid]) < 0.03


def test_int8_refused_serves_float(tmp_path, kitti):
    frames = kitti[1]
    proc, client = start(tmp_path, kitti, precision='int8', int8_tolerance=1e-6)
    try:
        depth = calibrate(client, frames)
        precision, state = served(client)
        assert precision == 'fp32' and state.startswith('refused, serving float: int8 changes depth by')
        assert 'int8 refused' in proc.log_tail(20000)
    finally:
        client.probe.close()
        proc.stop()
    expected = DepthEstimator.provision(SHIPPED, resolve(SHIPPED, 'cpu', 'onnxruntime', 'fp32'), SIZE, min_depth=0.5,
                                        max_depth=80.0).infer(network_frame(frames[5]))
    np.testing.assert_allclose(depth, expected, rtol=1e-5, equal_nan=True)



class FixedDepth:
    """An estimator that answers every frame with the same depth."""

    def __init__(self, depth):
        self.depth, self.calls = depth, 0

    def infer(self, rgb):
        self.calls += 1
        return self.depth


def test_int8_that_drifts_from_float_on_live_frames_falls_back_to_float():
    """Calibration frames can pass the int8 check on themselves and not represent the camera:
    int8 is checked against float on a live frame every int8_recheck_period seconds."""
    from packnet_ros.ros.nodes.depth_node import DepthServing

    client = ClientNode('int8_recheck_test')
    try:
        serving = DepthServing(client.node, client.node.create_publisher)
        p = serving.params  # the node's defaults: 3 % tolerance, a check every 30 s
        plan = resolve(SHIPPED, 'cpu', 'onnxruntime', 'int8')
        serving.int8 = Int8Calibrator(plan, p['calibration_frames'], p['calibration_period'], p['int8_tolerance'],
                                      p['int8_recheck_period'], serving._int8_refused)
        float_depth = np.full((4, 6), 10.0, np.float32)
        reference = FixedDepth(float_depth)
        serving.int8.reference, serving.int8.state = reference, Int8State.SERVING
        rgb = np.zeros((4, 6, 3), np.uint8)
        serving._recheck_int8(rgb, float_depth * 1.02, now=100.0)  # within 3 %: int8 stays
        assert serving.int8.state is Int8State.SERVING and serving.pending is None and reference.calls == 1
        serving._recheck_int8(rgb, float_depth * 1.5, now=110.0)  # not due: 30 s between checks
        assert serving.int8.state is Int8State.SERVING and reference.calls == 1
        serving._recheck_int8(rgb, float_depth * 1.12, now=131.0)
        assert (serving.int8.state is Int8State.REFUSED and serving.pending is reference
                and serving.int8.reference is None)
        assert 'int8 changed depth by 12.0% against float' in serving.int8.reason
        assert serving.health.errors
    finally:
        client.close()
