"""kitti_replay.launch.py under the real launch system, as the README tells a user to run it:
every frame of KITTI_tiny is evaluated (the player waits for the nodes, then for each depth),
the launch ends by itself at the end of the bag with every node's exit code 0, and the
metrics land in output_dir."""
import json
import os
import tempfile
import unittest
from pathlib import Path

import pytest

from helpers import KITTI_DRIVE, require
from launch_tests import include, launch, launch_testing, private_domain

OUTPUT = Path(tempfile.mkdtemp(prefix='kitti_replay_launch_'))


@pytest.mark.launch_test
def generate_test_description():
    from packnet_ros.data.bag import write_kitti_bag
    private_domain()
    bag = write_kitti_bag(require(KITTI_DRIVE), OUTPUT / 'bag')
    # rate 2: the replay paces itself to the depth node whatever the rate
    replay = include('kitti_replay.launch.py', bag=bag, output_dir=OUTPUT / 'out', rate='2')
    return launch.LaunchDescription([replay, launch_testing.actions.ReadyToTest()])


class TestKittiReplay(unittest.TestCase):
    def test_the_replay_ends_by_itself(self, proc_info):
        timeout = float(os.environ.get('PACKNET_LAUNCH_TIMEOUT', 600))
        for process in ('bag_player', 'depth_node', 'training_node', 'depth_evaluator'):
            proc_info.assertWaitForShutdown(process=process, timeout=timeout)


@launch_testing.post_shutdown_test()
class TestKittiReplayResults(unittest.TestCase):
    def test_every_frame_is_evaluated(self):
        result = json.loads((OUTPUT / 'out' / 'metrics.json').read_text())
        frames = sorted(KITTI_DRIVE.glob('image_02/data/*.png'))
        assert result['summary']['frames'] == len(frames) == 7
        stamps = [f['stamp'] for f in result['frames']]
        assert len(set(stamps)) == 7 and stamps == sorted(stamps)
        assert 0 < result['summary']['all']['metric']['abs_rel'] < 2  # depth of the shipped model, evaluated

    def test_every_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
