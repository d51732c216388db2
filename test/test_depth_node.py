"""depth_node as a real process over Fast DDS, fed KITTI_tiny frames."""
import itertools
import os
import shutil

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from packnet_ros.geometry import scale_intrinsics
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher
from packnet_ros.ros.node_process import ClientNode, start_node
from packnet_ros.ros.nodes.conversions import cloud_to_points, image_to_depth
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve

from helpers import DEADLINE, REPO

FRAME_ID = 'camera_color_left'
SIZE = (64, 192)


def make_checkpoints(make_small_checkpoint, folder):
    """a.ckpt and b.ckpt: two small models at SIZE, of other weights."""
    return tuple(make_small_checkpoint(folder / f'{name}.ckpt', seed, SIZE, step=seed)
                 for name, seed in (('a', 1), ('b', 2)))


def rep117(depth, near=0.5, far=80.0):
    """REP 117: nearer than the range -Inf, farther +Inf."""
    return np.where(depth < near, -np.inf, np.where(depth > far, np.inf, depth)).astype(np.float32)


def expected_depth(checkpoint, rgb, backend='onnxruntime'):
    """What the core library gives for this frame with the node's defaults: range 0.5-80 m (REP 117)
    and, on a CPU, the onnxruntime backend (its depth is held to torch's in test_export.py and below)."""
    net_rgb = cv2.resize(rgb, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)
    return rep117(DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', backend, 'fp32')).infer(net_rgb))


def to_msg(rgb, stamp, encoding='rgb8'):
    data = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'mono8': cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    data = np.ascontiguousarray(data)
    channels = 1 if data.ndim == 2 else 3
    return Image(header=Header(stamp=Time(sec=stamp), frame_id=FRAME_ID), height=data.shape[0],
                 width=data.shape[1], encoding=encoding, step=data.shape[1] * channels, data=data.tobytes())


class DepthClient:
    def __init__(self, probe):
        self.probe = probe
        node = probe.node
        self.depth, self.points, self.infos = {}, {}, {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = node.create_publisher(Image, 'image', reliable)
        self.pub_info = node.create_publisher(CameraInfo, 'camera_info', reliable)
        self.pub_ckpt = node.create_publisher(String, 'checkpoint', 10)
        node.create_subscription(Image, 'depth', lambda m: self.depth.__setitem__(m.header.stamp.sec, m), reliable)
        node.create_subscription(PointCloud2, 'points', lambda m: self.points.__setitem__(m.header.stamp.sec, m),
                                 reliable)
        node.create_subscription(CameraInfo, 'depth/camera_info',
                                 lambda m: self.infos.__setitem__(m.header.stamp.sec, m), reliable)
        self.diagnostics = DiagnosticsWatcher(node)

    def send(self, rgb, stamp, encoding='rgb8', timeout=DEADLINE):
        self.pub_image.publish(to_msg(rgb, stamp, encoding))
        return self.probe.wait_for(lambda: self.depth.get(stamp), timeout, f'depth for stamp {stamp}')


@pytest.fixture(scope='module')
def session(tmp_path_factory, kitti, make_small_checkpoint):
    tmp = tmp_path_factory.mktemp('depth_node')
    ckpt_a, ckpt_b = make_checkpoints(make_small_checkpoint, tmp)
    params = tmp / 'depth.yaml'
    shutil.copy(REPO / 'config' / 'depth.yaml', params)
    # Default parameters (QoS included): the node must adapt to this client's reliable publishers.
    # fp32: the depth is compared with the float model's (int8, the CPU default, has its own tests).
    proc = start_node('depth_node', tmp / 'node.log', (params,), {'checkpoint': str(ckpt_a), 'device': 'cpu',
                                                                   'precision': 'fp32'})
    probe = ClientNode('depth_node_test')
    client = DepthClient(probe)
    try:
        probe.wait_for(lambda: client.pub_image.get_subscription_count() > 0
                       and client.pub_ckpt.get_subscription_count() > 0, DEADLINE, 'depth_node to come up')
        probe.wait_for(lambda: diagnostic_value(client, 'input_reliability') == 'reliable', DEADLINE,
                       'depth_node to follow our reliable publisher')
        drive, _ = kitti
        K = drive.intrinsics()
        info = CameraInfo(header=Header(frame_id=FRAME_ID), width=1242, height=375)
        info.k = K.reshape(-1).tolist()
        info.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
        client.info_msg = info
        client.pub_info.publish(info)
        probe.wait_for(lambda: client.pub_info.get_subscription_count() > 0, DEADLINE, 'camera_info subscription')
        yield client, proc, ckpt_a, ckpt_b, tmp
    finally:
        probe.close()
        proc.stop()
        print(proc.log_tail(20000))


def test_depth_and_points_for_every_frame(session, kitti):
    client, proc, ckpt_a, _, _ = session
    drive, frames = kitti
    K = scale_intrinsics(drive.intrinsics(), SIZE[1] / 1242, SIZE[0] / 375)
    for stamp, rgb in enumerate(frames, start=1):
        client.pub_info.publish(client.info_msg)
        depth_msg = client.send(rgb, stamp)
        cloud = client.probe.wait_for(lambda: client.points.get(stamp), DEADLINE, 'points')
        for msg in (depth_msg, cloud, client.infos[stamp]):
            assert (msg.header.stamp.sec, msg.header.frame_id) == (stamp, FRAME_ID)
        assert depth_msg.encoding == '32FC1' and (depth_msg.height, depth_msg.width) == SIZE
        depth = image_to_depth(depth_msg)
        np.testing.assert_allclose(depth, expected_depth(ckpt_a, rgb), rtol=1e-5, equal_nan=True)
        net_rgb = cv2.resize(rgb, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)

        points = cloud_to_points(cloud)
        assert (cloud.height, cloud.width) == SIZE and [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
        v, u = np.mgrid[0:SIZE[0], 0:SIZE[1]]
        depth = np.where(np.isfinite(depth), depth, np.nan)  # the cloud has NaN where depth is out of range
        np.testing.assert_allclose(points[..., 2], depth, equal_nan=True)
        np.testing.assert_allclose(points[..., 0], (u - K[0, 2]) / K[0, 0] * depth, rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        np.testing.assert_allclose(points[..., 1], (v - K[1, 2]) / K[1, 1] * depth, rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        packed = points[..., 3].view(np.uint32)
        np.testing.assert_array_equal((packed >> 16) & 255, net_rgb[..., 0])
        np.testing.assert_array_equal(packed & 255, net_rgb[..., 2])
        np.testing.assert_allclose(np.array(client.infos[stamp].k).reshape(3, 3), K, rtol=1e-9)
    assert proc.alive()


def test_other_encodings_give_the_same_depth(session, kitti):
    client = session[0]
    rgb = kitti[1][2]
    reference = image_to_depth(client.send(rgb, 100))
    np.testing.assert_array_equal(image_to_depth(client.send(rgb, 101, 'bgr8')), reference)
    mono = image_to_depth(client.send(rgb, 102, 'mono8'))
    assert mono.shape == reference.shape and not np.array_equal(mono, reference)


def diagnostic_value(client, key):
    return client.diagnostics.values().get(key)


def diagnostic(client, key):
    value = diagnostic_value(client, key)
    return int(value) if value is not None else None


def wait_for_count(client, key, above):
    client.probe.wait_for(lambda: (diagnostic(client, key) or 0) > above, DEADLINE, f'{key} > {above}')


def test_malformed_messages_are_survived(session, kitti):
    client, proc, *_ = session
    rgb = kitti[1][0]
    bad = [
        to_msg(rgb, 200),
        Image(header=Header(stamp=Time(sec=201)), height=0, width=0, encoding='rgb8', step=0),
        to_msg(rgb, 202),
    ]
    bad[0].encoding = 'yuv422_weird'
    bad[2].data = bad[2].data[:1000]
    wait_for_count(client, 'processed', 0)
    for msg in bad:  # one at a time, so latest-wins does not merge them
        errors = diagnostic(client, 'errors')
        client.pub_image.publish(msg)
        wait_for_count(client, 'errors', errors)
    rejected = diagnostic(client, 'camera_info_rejected')
    client.pub_info.publish(CameraInfo(header=Header(frame_id=FRAME_ID), width=1242, height=375))
    wait_for_count(client, 'camera_info_rejected', rejected)  # zero focal length: previous info kept
    client.send(rgb, 203)
    client.probe.wait_for(lambda: client.points.get(203), DEADLINE, 'points after malformed input')
    assert not {200, 201, 202} & set(client.depth)
    assert proc.alive()


def test_new_checkpoint_changes_output(session, kitti):
    client, _, ckpt_a, ckpt_b, _ = session
    rgb = kitti[1][1]
    before = image_to_depth(client.send(rgb, 300)).copy()
    client.pub_ckpt.publish(String(data=str(ckpt_b)))
    expected = expected_depth(ckpt_b, rgb)
    for stamp in range(301, 360):
        after = image_to_depth(client.send(rgb, stamp))
        if not np.allclose(after, before, equal_nan=True):
            break
    np.testing.assert_allclose(after, expected, rtol=1e-5, equal_nan=True)
    client.pub_ckpt.publish(String(data=str(ckpt_b.parent / 'does_not_exist.ckpt')))
    stamp_after_bad = 400
    for stamp in range(stamp_after_bad, stamp_after_bad + 5):  # bad path: old weights keep serving
        np.testing.assert_allclose(image_to_depth(client.send(rgb, stamp)), expected, rtol=1e-5, equal_nan=True)


def test_an_exported_onnx_model_is_served_like_a_checkpoint(session, kitti):
    from packnet_ros.serving.export import export_checkpoint

    client, _, _, ckpt_b, tmp = session
    rgb = kitti[1][4]
    onnx = export_checkpoint(ckpt_b, tmp / 'b.onnx').depth
    client.pub_ckpt.publish(String(data=str(onnx)))
    expected = expected_depth(onnx, rgb)
    stamps = itertools.count(600)

    def serving_onnx():  # each frame lets the worker swap in a loaded model; diagnostics come at 1 Hz
        client.send(rgb, next(stamps))
        return 'b.onnx' in (diagnostic_value(client, 'model') or '')
    client.probe.wait_for(serving_onnx, DEADLINE, 'depth_node to serve b.onnx')
    got = image_to_depth(client.send(rgb, next(stamps)))
    assert 'b.onnx' in diagnostic_value(client, 'model') and diagnostic_value(client, 'backend') == 'onnxruntime'
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
    # and it is torch's depth for the same weights, within the export's tolerance
    np.testing.assert_allclose(got, expected_depth(ckpt_b, rgb, backend='torch'), rtol=1e-4, equal_nan=True)


def test_setting_the_checkpoint_parameter_reloads(session, kitti):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client, _, ckpt_a, _, _ = session
    rgb = kitti[1][3]
    service = client.probe.node.create_client(SetParameters, '/depth_node/set_parameters')
    assert service.wait_for_service(timeout_sec=DEADLINE)
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(ckpt_a))
    future = service.call_async(SetParameters.Request(parameters=[Parameter(name='checkpoint', value=value)]))
    result = client.probe.wait_for(lambda: future.result(), DEADLINE, 'set_parameters reply')
    assert result.results[0].successful
    expected = expected_depth(ckpt_a, rgb)
    for stamp in range(500, 560):
        got = image_to_depth(client.send(rgb, stamp))
        if np.allclose(got, expected, rtol=1e-5, equal_nan=True):
            break
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
    rejected = service.call_async(SetParameters.Request(parameters=[
        Parameter(name='precision', value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='fp16'))]))
    assert not client.probe.wait_for(lambda: rejected.result(), DEADLINE, 'reply').results[0].successful


def with_path(folder):
    """PYTHONPATH with `folder` first: its sitecustomize.py runs in the node, which still imports
    the packnet_ros these tests import."""
    return os.pathsep.join(filter(None, (str(folder), os.environ.get('PYTHONPATH'))))


# In the node: a checkpoint X.ckpt waits to load while X.gate exists (the test removes it).
GATED_LOADS = """
import time
from pathlib import Path

from packnet_ros.serving.inference import DepthEstimator

provision = DepthEstimator.provision.__func__


def gated(cls, checkpoint, *args, **kwargs):
    while Path(checkpoint).with_suffix('.gate').exists():
        time.sleep(0.05)
    return provision(cls, checkpoint, *args, **kwargs)


DepthEstimator.provision = classmethod(gated)
"""


def test_frames_are_served_while_a_parameter_change_loads_its_model(tmp_path, kitti, make_small_checkpoint):
    """`ros2 param set /depth_node checkpoint X` loads X on the loader thread: the node keeps
    serving the camera until X is loaded, and the parameter call then says whether it loaded."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from packnet_ros.ros.node_process import ros_environment

    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(GATED_LOADS)
    ckpt_a, ckpt_b = make_checkpoints(make_small_checkpoint, tmp_path)
    broken = tmp_path / 'broken.ckpt'
    broken.write_bytes(b'not a checkpoint')
    env = {**ros_environment(), 'PYTHONPATH': with_path(site)}
    proc = start_node('depth_node', tmp_path / 'node.log', (REPO / 'config' / 'depth.yaml',),
                      {'checkpoint': str(ckpt_a), 'device': 'cpu', 'precision': 'fp32'}, namespace='/gated', env=env)
    probe = ClientNode(make_node=lambda context: Node('gated_test', namespace='/gated', context=context))
    client = DepthClient(probe)
    service = probe.node.create_client(SetParameters, '/gated/depth_node/set_parameters')
    stamps = itertools.count(1)
    rgb = kitti[1][0]

    def set_checkpoint(path):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path))
        return service.call_async(SetParameters.Request(parameters=[Parameter(name='checkpoint', value=value)]))

    def served_while_loading(path):
        """Set the checkpoint parameter to `path`, held at its gate while frames are answered;
        then let it load and return the parameter call's result."""
        gate = path.with_suffix('.gate')
        gate.touch()
        future = set_checkpoint(path)
        for _ in range(3):
            client.send(rgb, next(stamps))
        assert not future.done()  # its load still waits at the gate: these frames were served meanwhile
        gate.unlink()
        return probe.wait_for(lambda: future.result(), DEADLINE, 'set_parameters reply').results[0]

    try:
        probe.wait_for(lambda: client.pub_image.get_subscription_count() > 0 and service.service_is_ready(),
                       DEADLINE, 'depth_node to come up')
        np.testing.assert_allclose(image_to_depth(client.send(rgb, next(stamps))), expected_depth(ckpt_a, rgb),
                                   rtol=1e-5, equal_nan=True)
        result = served_while_loading(ckpt_b)
        assert result.successful, result.reason
        expected = expected_depth(ckpt_b, rgb)
        client.probe.wait_for(lambda: np.allclose(image_to_depth(client.send(rgb, next(stamps))), expected,
                                                  rtol=1e-5, equal_nan=True), DEADLINE, 'b.ckpt to serve')
        result = served_while_loading(broken)
        assert not result.successful and 'broken.ckpt' in result.reason
        np.testing.assert_allclose(image_to_depth(client.send(rgb, next(stamps))), expected, rtol=1e-5,
                                   equal_nan=True)  # the served model stays
        assert proc.alive()
    finally:
        probe.close()
        proc.stop()
    assert proc.popen.returncode == 0, proc.log_tail()


def test_the_lifecycle_node_serves_once_configured_and_active(tmp_path, kitti, make_small_checkpoint):
    """lifecycle_depth_node: configure loads the model, activate serves it; a parameter change
    loads on the loader thread as in depth_node; deactivate and activate again."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    ckpt_a, ckpt_b = make_checkpoints(make_small_checkpoint, tmp_path)
    proc = start_node('lifecycle_depth_node', tmp_path / 'node.log', (REPO / 'config' / 'depth.yaml',),
                      {'checkpoint': str(ckpt_a), 'device': 'cpu', 'precision': 'fp32'}, namespace='/managed')
    probe = ClientNode(make_node=lambda context: Node('managed_test', namespace='/managed', context=context))
    client = DepthClient(probe)
    change_state = probe.node.create_client(ChangeState, '/managed/depth_node/change_state')
    set_parameters = probe.node.create_client(SetParameters, '/managed/depth_node/set_parameters')
    stamps = itertools.count(1)
    rgb = kitti[1][0]

    def transition(transition_id):
        future = change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert probe.wait_for(lambda: future.result(), DEADLINE, f'transition {transition_id}').success

    try:
        probe.wait_for(lambda: change_state.service_is_ready() and set_parameters.service_is_ready(), DEADLINE,
                       'lifecycle_depth_node to come up')
        transition(Transition.TRANSITION_CONFIGURE)
        transition(Transition.TRANSITION_ACTIVATE)
        probe.wait_for(lambda: client.pub_image.get_subscription_count() > 0, DEADLINE, 'the camera subscription')
        np.testing.assert_allclose(image_to_depth(client.send(rgb, next(stamps))), expected_depth(ckpt_a, rgb),
                                   rtol=1e-5, equal_nan=True)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(ckpt_b))
        future = set_parameters.call_async(SetParameters.Request(parameters=[Parameter(name='checkpoint',
                                                                                       value=value)]))
        assert probe.wait_for(lambda: future.result(), DEADLINE, 'set_parameters reply').results[0].successful
        expected = expected_depth(ckpt_b, rgb)
        probe.wait_for(lambda: np.allclose(image_to_depth(client.send(rgb, next(stamps))), expected, rtol=1e-5,
                                           equal_nan=True), DEADLINE, 'b.ckpt to serve')
        transition(Transition.TRANSITION_DEACTIVATE)
        probe.wait_for(lambda: client.pub_image.get_subscription_count() == 0, DEADLINE, 'unsubscribing')
        transition(Transition.TRANSITION_ACTIVATE)
        probe.wait_for(lambda: client.pub_image.get_subscription_count() > 0, DEADLINE, 'subscribing again')
        np.testing.assert_allclose(image_to_depth(client.send(rgb, next(stamps))), expected, rtol=1e-5,
                                   equal_nan=True)
        assert proc.alive()
    finally:
        probe.close()
        proc.stop()
    assert proc.popen.returncode == 0, proc.log_tail()


def test_diagnostics_report_model_and_counts(session):
    client = session[0]
    values = client.probe.wait_for(lambda: [s for s in client.diagnostics.history() if s.count('processed') > 0],
                                   DEADLINE, 'diagnostics')[-1].values
    assert 'PackNetSlim01' in values['model'] and values['device'] == 'cpu'
    assert values['backend'] == 'onnxruntime'  # backend auto, fp32 on a CPU
    # Every test here sends a frame only once the previous one was answered: nothing to drop.
    assert int(values['dropped']) == 0 and float(values['latency_ms_p95']) > 0


def test_a_distorted_camera_is_rectified(session):
    """A camera with lens distortion (plumb_bob): depth and cloud are those of the undistorted
    rendering of the same view, and depth/camera_info describes the rectified camera."""
    from packnet_ros.data.synthetic import CameraRig, drive
    from packnet_ros.geometry import Calibration, distort_image
    from packnet_ros.ros.resources import shipped_model

    client = session[0]
    stamps = itertools.count(700)

    def serving_shipped():  # a trained network: its depth follows the image's structure
        client.send(frame.rgb, next(stamps))
        return 'synthetic_scale_free' in (diagnostic_value(client, 'model') or '')
    rig = CameraRig(384, 128, fov_x_deg=70.0)
    frame = next(iter(drive(1, seed=2, camera=rig)))
    client.pub_ckpt.publish(String(data=str(shipped_model())))
    client.probe.wait_for(serving_shipped, DEADLINE, 'depth_node to serve the shipped model')
    K = rig.K
    calibration = Calibration(width=384, height=128, K=K, D=(-0.25, 0.08, 0.001, -0.001, 0.0), R=np.eye(3),
                              P=np.hstack([K, np.zeros((3, 1))]), model='plumb_bob')
    distorted = distort_image(frame.rgb, K, calibration)

    def camera_info(d):
        info = CameraInfo(header=Header(frame_id=FRAME_ID), width=384, height=128, distortion_model='plumb_bob')
        info.k, info.d = K.reshape(-1).tolist(), list(d)
        info.r, info.p = np.eye(3).reshape(-1).tolist(), calibration.P.reshape(-1).tolist()
        return info

    def depth_and_points(rgb, d):
        client.pub_info.publish(camera_info(d))
        stamp = next(stamps)
        client.probe.wait_for(lambda: [client.send(rgb, stamp)], DEADLINE, 'depth')  # camera_info arrives first
        stamp = next(stamps)
        depth = image_to_depth(client.send(rgb, stamp)).copy()
        points = cloud_to_points(client.probe.wait_for(lambda: client.points.get(stamp), DEADLINE, 'points'))
        return depth, points, client.probe.wait_for(lambda: client.infos.get(stamp), DEADLINE, 'camera_info')

    rectified, rectified_points, info = depth_and_points(distorted, calibration.D)
    pinhole, pinhole_points, _ = depth_and_points(frame.rgb, [0.0] * 5)
    raw, _, _ = depth_and_points(distorted, [0.0] * 5)  # the same distorted frame, taken for pinhole

    inner = (slice(8, -8), slice(16, -16))  # rectification leaves the corners without image

    def error(depth):
        return float(np.nanmedian(np.abs(depth[inner] / pinhole[inner] - 1)))
    assert error(rectified) < 0.02 and error(raw) > 3 * error(rectified), (error(rectified), error(raw))
    z, z_pinhole = rectified_points[..., 2][inner], pinhole_points[..., 2][inner]
    assert float(np.nanmedian(np.abs(z / z_pinhole - 1))) < 0.02
    assert list(info.d) == [0.0] * 5 and list(info.r) == np.eye(3).reshape(-1).tolist()
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), scale_intrinsics(K, 0.5, 0.5), rtol=1e-9)
    print(f'median relative depth difference to the pinhole rendering: rectified {error(rectified):.4f}, '
          f'unrectified {error(raw):.4f}')


def test_without_onnxruntime_the_node_serves_with_torch(tmp_path, kitti, make_small_checkpoint):
    """A workspace that installed only torch: the CPU default (onnxruntime, int8) falls back to
    torch in fp32 with a warning, instead of dying on the first export."""
    blocker = tmp_path / 'site'
    blocker.mkdir()
    (blocker / 'sitecustomize.py').write_text(
        'import sys\n'
        'class Block:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name.split(".")[0] in ("onnx", "onnxruntime"):\n'
        '            raise ModuleNotFoundError(f"No module named {name!r}")\n'
        'sys.meta_path.insert(0, Block())\n')
    ckpt, _ = make_checkpoints(make_small_checkpoint, tmp_path)
    from packnet_ros.ros.node_process import ros_environment
    env = {**ros_environment(), 'PYTHONPATH': with_path(blocker)}
    # its own namespace: the session's depth_node runs beside it
    proc = start_node('depth_node', tmp_path / 'node.log', (REPO / 'config' / 'depth.yaml',),
                      {'checkpoint': str(ckpt), 'device': 'cpu'}, namespace='/no_onnx', env=env)
    probe = ClientNode(make_node=lambda context: Node('no_onnx_test', namespace='/no_onnx', context=context))
    client = DepthClient(probe)

    def value(key):
        return client.diagnostics.values('/no_onnx/depth_node').get(key)
    try:
        probe.wait_for(lambda: value('input_reliability') == 'reliable', DEADLINE, 'depth_node')
        depth = image_to_depth(client.send(kitti[1][0], 1))
        np.testing.assert_allclose(depth, expected_depth(ckpt, kitti[1][0], backend='torch'), rtol=1e-5)
        assert (value('backend'), value('precision')) == ('torch', 'fp32')
    finally:
        probe.close()
        proc.stop()
    log = proc.log.read_text()
    assert 'onnx and onnxruntime not installed: serving with torch in fp32' in log and proc.popen.returncode == 0
