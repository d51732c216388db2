"""depth.launch.py under the real launch system: remapped topics carry depth and points for our
frames, the node runs with its YAML's parameters, and Ctrl-C at the end stops it with exit 0."""
import unittest

import numpy as np
import pytest
import yaml

from helpers import DEADLINE, REPO, parameters
from launch_tests import include, launch, launch_testing, private_domain

NS = '/launch_test'


@pytest.mark.launch_test
def generate_test_description():
    private_domain()
    depth = include('depth.launch.py', image='/test/camera/image', camera_info='/test/camera/info',
                    namespace=NS.strip('/'))
    return launch.LaunchDescription([depth, launch_testing.actions.ReadyToTest()])


class TestDepthLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from packnet_ros.data.synthetic import CameraRig, drive
        from packnet_ros.ros.node_process import ClientNode
        cls.client = ClientNode('depth_launch_test')
        cls.rig = CameraRig(320, 96)
        cls.frames = list(drive(3, seed=3, camera=cls.rig))

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_depth_and_points_on_the_remapped_topics(self):
        from builtin_interfaces.msg import Time
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from packnet_ros.ros.nodes.conversions import cloud_to_points, image_to_depth

        node, reliable = self.client.node, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub_image = node.create_publisher(Image, '/test/camera/image', reliable)
        pub_info = node.create_publisher(CameraInfo, '/test/camera/info', reliable)
        got = {'depth': {}, 'points': {}}
        node.create_subscription(Image, f'{NS}/depth', lambda m: got['depth'].setdefault(m.header.stamp.sec, m),
                                 reliable)
        node.create_subscription(PointCloud2, f'{NS}/points',
                                 lambda m: got['points'].setdefault(m.header.stamp.sec, m), reliable)
        self.client.wait_for(lambda: pub_image.get_subscription_count() and pub_info.get_subscription_count(),
                             DEADLINE, 'depth_node to subscribe (it loads its network first)')
        info = CameraInfo(header=Header(frame_id='test_camera'), width=self.rig.width, height=self.rig.height)
        info.k = self.rig.K.reshape(-1).tolist()
        for stamp, frame in enumerate(self.frames, start=1):
            header = Header(stamp=Time(sec=stamp), frame_id='test_camera')
            info.header = header
            pub_info.publish(info)
            pub_image.publish(Image(header=header, height=self.rig.height, width=self.rig.width, encoding='rgb8',
                                    step=self.rig.width * 3, data=frame.rgb.tobytes()))
            # one frame at a time: the node serves the latest frame, and points need camera_info first
            self.client.wait_for(lambda: stamp in got['points'], DEADLINE, f'points of frame {stamp}')
        for stamp in range(1, len(self.frames) + 1):
            depth = image_to_depth(got['depth'][stamp])
            points = cloud_to_points(got['points'][stamp])
            assert got['depth'][stamp].header.frame_id == 'test_camera'
            assert depth.shape == points.shape[:2] and np.isfinite(depth).mean() > 0.5
            finite = np.isfinite(depth)
            np.testing.assert_allclose(points[..., 2][finite], depth[finite], rtol=1e-6)

    def test_parameters_are_the_yaml_files(self):
        expected = yaml.safe_load((REPO / 'config' / 'depth.yaml').read_text())['/**']['ros__parameters']
        expected.pop('qos_overrides', None)
        got = parameters(self.client, f'{NS}/depth_node', sorted(expected), DEADLINE)
        assert got == expected


@launch_testing.post_shutdown_test()
class TestDepthLaunchShutdown(unittest.TestCase):
    def test_ctrl_c_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
