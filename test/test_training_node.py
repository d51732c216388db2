"""training_node as a real process: frames + odometry in, loadable checkpoints out, survives kill -9."""
import os
import resource
import shutil
import signal
import time

import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TwistWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from packnet_ros.data.synthetic import CameraRig, drive
from packnet_ros.model.checkpoints import load_checkpoint, load_networks
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher, Level
from packnet_ros.ros.node_process import ClientNode, start_node

from helpers import DEADLINE, REPO, wait_for_reliable_subscribers

W, H = 192, 64


def to_time(t):
    return Time(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))


@pytest.fixture(scope='module')
def frames():
    return list(drive(24, seed=5, camera=CameraRig(W, H), start_time=3.0))


class Feeder:
    def __init__(self, probe):
        node = probe.node
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.probe = probe
        self.pub_image = node.create_publisher(Image, 'image', reliable)
        self.pub_info = node.create_publisher(CameraInfo, 'camera_info', reliable)
        self.pub_odom = node.create_publisher(Odometry, 'odom', reliable)
        self.checkpoints = []
        node.create_subscription(String, 'checkpoint', lambda m: self.checkpoints.append(m.data),
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.diagnostics = DiagnosticsWatcher(node)

    def wait_connected(self):
        publishers = (self.pub_image, self.pub_info, self.pub_odom)
        wait_for_reliable_subscribers(self.probe, [p.topic_name for p in publishers])

    def play(self, frames, time_offset=0.0):
        K = CameraRig(W, H).K
        info = CameraInfo(header=Header(frame_id='cam'), width=W, height=H)
        info.k = K.reshape(-1).tolist()
        self.pub_info.publish(info)
        time.sleep(0.2)
        for f in frames:
            t = f.stamp + time_offset
            for dt in (0.0, 0.05):  # odometry at 20 Hz
                odom = Odometry(header=Header(stamp=to_time(t + dt), frame_id='odom'))
                odom.twist.twist.linear.x = f.speed
                self.pub_odom.publish(odom)
            self.pub_image.publish(Image(header=Header(stamp=to_time(t), frame_id='cam'), height=H, width=W,
                                         encoding='rgb8', step=W * 3, data=f.rgb.tobytes()))
            time.sleep(0.02)

    def step(self):
        status = self.diagnostics.latest('training')
        return status.count('step') if status and 'step' in status.values else None


def test_trains_announces_and_resumes_after_kill_9(tmp_path, frames):
    params = tmp_path / 'training.yaml'
    shutil.copy(REPO / 'config' / 'training.yaml', params)
    ckpt_dir = tmp_path / 'ckpts'
    overrides = {'checkpoint_dir': str(ckpt_dir), 'width': W, 'height': H, 'device': 'cpu', 'batch_size': 2,
                 'min_triplets': 2, 'save_every_steps': 3, 'validate_before_announce': False, 'learning_rate': 1e-3}
    probe = ClientNode('training_test')
    feeder = Feeder(probe)
    proc = start_node('training_node', tmp_path / 'run1.log', (params,), overrides)
    try:
        feeder.wait_connected()
        feeder.play(frames)
        first = probe.wait_for(lambda: feeder.checkpoints, 2 * DEADLINE, 'a checkpoint announcement')[0]
        depth_net, pose_net = load_networks(first)
        assert pose_net is not None and depth_net.arch == 'PackNetSlim01'
        assert load_checkpoint(first).step >= 3
        time.sleep(1.5)  # still training: kill it mid-run, possibly mid-write
        os.kill(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
        saved = sorted(ckpt_dir.glob('*.ckpt'))
        assert saved, 'no checkpoint on disk'
        for path in saved:
            load_networks(path)  # every file under a final name is complete
        resumed_from = max(load_checkpoint(p).step for p in saved)

        feeder.diagnostics.clear()
        feeder.checkpoints.clear()
        proc = start_node('training_node', tmp_path / 'run2.log', (params,), overrides)
        feeder.wait_connected()
        probe.wait_for(lambda: feeder.step() is not None, DEADLINE, 'diagnostics')
        assert feeder.step() >= resumed_from
        assert not list(ckpt_dir.glob('.*.tmp'))
        feeder.play(frames, time_offset=100.0)
        later = probe.wait_for(lambda: feeder.checkpoints, 2 * DEADLINE, 'an announcement after restart')[0]
        assert load_checkpoint(later).step > resumed_from
        assert 'resumed from' in (tmp_path / 'run2.log').read_text()
    finally:
        proc.stop()
        probe.close()
        for log in ('run1.log', 'run2.log'):
            if (tmp_path / log).exists():
                print(log, (tmp_path / log).read_text()[-3000:])


def test_saves_that_fail_put_diagnostics_at_error_while_training_goes_on(tmp_path, frames):
    """A full disk, as `ulimit -f` makes one: every checkpoint write fails with 'File too
    large'. Training goes on and /diagnostics says ERROR with the reason for as long as it lasts."""
    params = tmp_path / 'training.yaml'
    shutil.copy(REPO / 'config' / 'training.yaml', params)
    overrides = {'checkpoint_dir': str(tmp_path / 'ckpts'), 'width': W, 'height': H, 'device': 'cpu',
                 'batch_size': 2, 'min_triplets': 2, 'save_every_steps': 2, 'learning_rate': 1e-3}

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 20, 2 ** 20))  # 1 MiB: logs fit, checkpoints do not
    probe = ClientNode('training_full_disk_test')
    feeder = Feeder(probe)
    proc = start_node('training_node', tmp_path / 'full.log', (params,), overrides, preexec_fn=small_files)

    def failing():
        for status in feeder.diagnostics.history('training'):
            if status.level == Level.ERROR and status.count('failed_saves') >= 2 and 'File too large' in status.message:
                return status.count('step')
        return None
    try:
        feeder.wait_connected()
        feeder.play(frames)
        at = probe.wait_for(failing, 2 * DEADLINE, 'ERROR on /diagnostics naming the failed saves')
        probe.wait_for(lambda: (feeder.step() or 0) > at, 2 * DEADLINE, f'training to go on after step {at}')
        assert not list((tmp_path / 'ckpts').glob('*.ckpt')) and not feeder.checkpoints
        assert 'File too large' in (tmp_path / 'full.log').read_text()
    finally:
        proc.stop()
        probe.close()
        print((tmp_path / 'full.log').read_text()[-3000:])


def test_twist_with_covariance_as_speed_source(tmp_path, frames):
    """GNSS/INS drivers publish TwistWithCovarianceStamped: selected by parameter, it feeds training."""
    params = tmp_path / 'training.yaml'
    shutil.copy(REPO / 'config' / 'training.yaml', params)
    overrides = {'checkpoint_dir': str(tmp_path / 'ckpts'), 'width': W, 'height': H, 'device': 'cpu',
                 'batch_size': 2, 'min_triplets': 2, 'save_every_steps': 2, 'validate_before_announce': False,
                 'velocity_source': 'twist',
                 'twist_type': 'TwistWithCovarianceStamped'}
    probe = ClientNode('twist_test')
    feeder = Feeder(probe)
    pub_twist = probe.node.create_publisher(TwistWithCovarianceStamped, 'twist',
                                            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    feeder.pub_odom = pub_twist  # wait_connected() checks the speed publisher too

    proc = start_node('training_node', tmp_path / 'twist.log', (params,), overrides)
    try:
        feeder.wait_connected()
        K = CameraRig(W, H).K
        info = CameraInfo(header=Header(frame_id='cam'), width=W, height=H)
        info.k = K.reshape(-1).tolist()
        feeder.pub_info.publish(info)
        time.sleep(0.2)
        for f in frames:
            for dt in (0.0, 0.05):
                msg = TwistWithCovarianceStamped(header=Header(stamp=to_time(f.stamp + dt), frame_id='base_link'))
                msg.twist.twist.linear.x = f.speed
                pub_twist.publish(msg)
            feeder.pub_image.publish(Image(header=Header(stamp=to_time(f.stamp), frame_id='cam'), height=H,
                                           width=W, encoding='rgb8', step=W * 3, data=f.rgb.tobytes()))
            time.sleep(0.02)
        path = probe.wait_for(lambda: feeder.checkpoints, 2 * DEADLINE, 'a checkpoint trained from twist speeds')[0]
        assert load_checkpoint(path).step >= 2
        probe.wait_for(lambda: feeder.step() is not None, DEADLINE, 'diagnostics')
        values = feeder.diagnostics.values(what='training')
        assert int(values['triplets']) >= 10 and 'skipped_no_speed' not in values
    finally:
        proc.stop()
        probe.close()


def test_offline_training_defaults_to_the_nodes_recipe():
    """`packnet-ros train` without --config trains as the node does: the recipe the curves chose."""
    from dataclasses import MISSING, fields

    from packnet_ros.ros.nodes.training_node import PARAMETERS
    from packnet_ros.training.session import SessionConfig

    shared = [f for f in fields(SessionConfig) if f.name in PARAMETERS and f.default is not MISSING]
    names = {f.name for f in shared}
    assert {'velocity_loss_weight', 'depth_scale_lr', 'translation_scale_lr', 'motion_prior'} <= names
    differ = {f.name: (f.default, PARAMETERS[f.name].default) for f in shared
              if f.name != 'device' and f.default != PARAMETERS[f.name].default}
    assert differ == {}


def test_distorted_frames_are_rectified_before_training(tmp_path):
    """Training sees the pinhole camera its loss assumes: frames of a distorted camera are
    rectified, and the intrinsics are the rectified ones."""
    import cv2
    import numpy as np
    from rclpy.parameter import Parameter

    from packnet_ros.geometry import Calibration, distort_image, scale_intrinsics
    from packnet_ros.ros.nodes.training_node import TrainingNode

    rig = CameraRig(384, 128, fov_x_deg=70.0)
    views = list(drive(4, seed=2, camera=rig, start_time=3.0))
    K = rig.K
    P = np.hstack([K * [[0.9], [0.9], [1]], np.zeros((3, 1))])  # the rectified camera zooms out a little
    calibration = Calibration(width=384, height=128, K=K, D=(-0.25, 0.08, 0.001, -0.001, 0.0), R=np.eye(3), P=P)
    overrides = [Parameter('checkpoint_dir', value=str(tmp_path)), Parameter('width', value=W),
                 Parameter('height', value=H), Parameter('device', value='cpu'), Parameter('min_distance', value=0.0),
                 Parameter('holdout_every', value=0), Parameter('stride', value=1)]
    probe = ClientNode('rectify_test', make_node=lambda context: TrainingNode(context=context,
                                                                              parameter_overrides=overrides))
    node = probe.node
    try:
        info = CameraInfo(header=Header(frame_id='cam'), width=384, height=128, distortion_model='plumb_bob')
        info.k, info.d = K.reshape(-1).tolist(), list(calibration.D)
        info.r, info.p = np.eye(3).reshape(-1).tolist(), P.reshape(-1).tolist()
        node.on_camera_info(info)
        for view in views:  # each frame rendered as the rectified (pinhole P) camera sees it, then distorted
            for dt in (0.0, 0.05):
                odom = Odometry(header=Header(stamp=to_time(view.stamp + dt)))
                odom.twist.twist.linear.x = view.speed
                node.on_velocity(odom)
            distorted = distort_image(view.rgb, K, Calibration(width=384, height=128, K=K, D=calibration.D,
                                                               R=np.eye(3), P=np.hstack([K, np.zeros((3, 1))])))
            node.on_image(Image(header=Header(stamp=to_time(view.stamp), frame_id='cam'), height=128, width=384,
                                encoding='rgb8', step=384 * 3, data=np.ascontiguousarray(distorted).tobytes()))
        triplets = list(node.session.buffer.items)
        assert triplets, dict(node.stream.skipped)
        np.testing.assert_allclose(node.session.trainer.K.numpy(), scale_intrinsics(P[:, :3], W / 384, H / 128),
                                   rtol=1e-6)
        # what the rectified camera sees: the view re-rendered through P, at training size
        expected = [cv2.resize(distort_image(v.rgb, K, Calibration(width=384, height=128, K=P[:, :3], D=(),
                                                                   R=np.eye(3), P=P)), (W, H),
                               interpolation=cv2.INTER_AREA) for v in views]
        target = triplets[0].images[1].astype(float)
        inner = (slice(4, -4), slice(8, -8))
        got = np.abs(target - expected[1])[inner].mean()
        unrectified = np.abs(target - cv2.resize(views[1].rgb, (W, H), interpolation=cv2.INTER_AREA))[inner].mean()
        assert got < 4 and unrectified > 2 * got, (got, unrectified)
    finally:
        probe.close()
