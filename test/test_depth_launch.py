"""launch_testing test of launch/depth.launch.py; runs only where ROS 2's launch tools exist."""
import os
import unittest

import pytest

pytest.importorskip('launch_testing', reason='launch_testing is not installable from PyPI; '
                    'test_depth_node.py starts the same executable as a process')
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    here = os.path.dirname(os.path.abspath(__file__))
    depth = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(here, '..', 'launch', 'depth.launch.py')),
        launch_arguments={'image': '/test/image', 'camera_info': '/test/camera_info'}.items())
    return launch.LaunchDescription([depth, launch_testing.actions.ReadyToTest()])


class TestDepthNodeStarts(unittest.TestCase):
    def test_node_reports_serving(self, proc_output):
        proc_output.assertWaitFor('serving', timeout=60, stream='stderr')
