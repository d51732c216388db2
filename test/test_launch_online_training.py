"""online_training.launch.py under the real launch system: the training node learns from our
frames and speed, announces checkpoints that the depth node serves (the two are wired by the
`checkpoint` topic of their namespace), and Ctrl-C at the end stops both with exit 0, the
training node saving a checkpoint that loads."""
import tempfile
import time
import unittest
from pathlib import Path

import pytest
import yaml

from helpers import DEADLINE, REPO
from launch_tests import include, launch, launch_testing, private_domain

NS = '/online_test'
WORK = Path(tempfile.mkdtemp(prefix='online_training_launch_'))
W, H = 192, 64


@pytest.mark.launch_test
def generate_test_description():
    private_domain()
    params = yaml.safe_load((REPO / 'config' / 'training.yaml').read_text())
    params['/**']['ros__parameters'].update(width=W, height=H, batch_size=2, min_triplets=2, save_every_steps=2,
                                            validate_before_announce=False, device='cpu')
    (WORK / 'training.yaml').write_text(yaml.safe_dump(params))
    online = include('online_training.launch.py', image='/test/image', camera_info='/test/camera_info',
                     odom='/test/odom', namespace=NS.strip('/'), training_params=WORK / 'training.yaml',
                     checkpoint_dir=WORK / 'checkpoints')
    return launch.LaunchDescription([online, launch_testing.actions.ReadyToTest()])


class TestOnlineTraining(unittest.TestCase):
    def test_announced_checkpoints_are_served(self):
        from builtin_interfaces.msg import Time
        from nav_msgs.msg import Odometry
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Header, String

        from packnet_ros.data.synthetic import CameraRig, drive
        from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher
        from packnet_ros.ros.node_process import ClientNode

        client = ClientNode('online_launch_test')
        try:
            node, reliable = client.node, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {name: node.create_publisher(cls, f'/test/{name}', reliable)
                    for name, cls in (('image', Image), ('camera_info', CameraInfo), ('odom', Odometry))}
            announced = []
            node.create_subscription(String, f'{NS}/checkpoint', lambda m: announced.append(m.data),
                                     QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))

            watcher = DiagnosticsWatcher(node)
            # image twice (depth and training nodes), camera_info twice, odom once
            client.wait_for(lambda: [p.get_subscription_count() for p in pubs.values()] == [2, 2, 1], DEADLINE,
                            'both nodes to subscribe')
            time.sleep(1.0)  # let their reliable subscriptions match us from their side too
            rig = CameraRig(W, H)
            info = CameraInfo(header=Header(frame_id='cam'), width=W, height=H)
            info.k = rig.K.reshape(-1).tolist()
            frames = list(drive(30, seed=5, camera=rig, start_time=3.0))

            def play(offset):
                for f in frames:
                    stamp = Time(sec=int(f.stamp + offset), nanosec=int(((f.stamp + offset) % 1) * 1e9))
                    pubs['camera_info'].publish(info)
                    odom = Odometry(header=Header(stamp=stamp, frame_id='odom'))
                    odom.twist.twist.linear.x = f.speed
                    pubs['odom'].publish(odom)
                    pubs['image'].publish(Image(header=Header(stamp=stamp, frame_id='cam'), height=H, width=W,
                                                encoding='rgb8', step=W * 3, data=f.rgb.tobytes()))
                    time.sleep(0.05)
            play(0.0)
            client.wait_for(lambda: announced, 4 * DEADLINE, 'an announced checkpoint')
            offset = 100.0
            depth_node = f'{NS}/depth_node'
            while watcher.count('training_step', depth_node) == 0:  # frames keep coming, so the depth node swaps
                play(offset)
                offset += 100.0
                client.wait_for(lambda: watcher.latest(node=depth_node), DEADLINE, 'depth diagnostics')
            assert watcher.count('reloads', depth_node) >= 1 and watcher.count('failed_reloads', depth_node) == 0
            assert Path(announced[0]).parent == WORK / 'checkpoints'
        finally:
            client.close()


@launch_testing.post_shutdown_test()
class TestOnlineTrainingShutdown(unittest.TestCase):
    def test_ctrl_c_exits_cleanly_and_saves(self, proc_info):
        from packnet_ros.model.checkpoints import load_checkpoint
        launch_testing.asserts.assertExitCodes(proc_info)
        saved = sorted((WORK / 'checkpoints').glob('step_*.ckpt'))
        assert saved and load_checkpoint(saved[-1]).step >= 2
