"""Camera frames of real sizes reach depth_node and training_node at their default QoS.

An outside driver process publishes KITTI-size (1242x375) and 1080p rgb8 frames, reliable or
best effort, to both nodes at once. At 1 and 2 Hz every frame must be answered (depth_node)
and taken in (training_node); at 10 Hz, as many as the depth node has time for.
The best-effort driver runs with config/fastdds.xml exported, as the README tells users to
do for such a camera; the reliable one needs nothing.
"""
import shutil
import subprocess
import sys

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from packnet_ros.checkpoints import save_checkpoint
from packnet_ros.config import FASTDDS_PROFILE_VARIABLE
from packnet_ros.networks import PackNetSlim01
from packnet_ros.node_process import ClientNode, ros_environment, start_node

from helpers import DEADLINE, REPO

DRIVER = REPO / 'test' / 'camera_publisher.py'
SLOW = ((1.0, 3), (2.0, 4))  # (Hz, frames): every frame must be answered
FAST = ((10.0, 10),)


@pytest.fixture(scope='module')
def nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('delivery')
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / 'small.ckpt', PackNetSlim01(width=0.25), input_size=(96, 320))
    for name in ('depth.yaml', 'training.yaml'):
        shutil.copy(REPO / 'config' / name, tmp / name)
    depth = start_node('depth_node', tmp / 'depth.log', (tmp / 'depth.yaml',), {'checkpoint': str(ckpt)})
    training = start_node('training_node', tmp / 'training.log', (tmp / 'training.yaml',),
                          {'checkpoint_dir': str(tmp / 'ckpts')})
    client = ClientNode('delivery_test')
    answered, frames_taken = set(), []
    client.node.create_subscription(Image, '/depth', lambda m: answered.add((m.header.stamp.sec,
                                                                             m.header.stamp.nanosec)), 50)
    client.node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: frames_taken.extend(
        int(kv.value) for s in m.status if s.name.endswith(': training') for kv in s.values if kv.key == 'frames'), 10)
    try:
        client.wait_for(lambda: frames_taken, DEADLINE, 'training_node diagnostics')
        yield client, answered, frames_taken, tmp
    finally:
        client.close()
        for proc in (depth, training):
            proc.stop()
            print(proc.log_tail())


def drive_camera(tmp, width, height, reliability, schedule):
    env = ros_environment()
    if reliability == 'reliable':
        env.pop(FASTDDS_PROFILE_VARIABLE)  # a reliable camera needs no profile
    args = [sys.executable, str(DRIVER), '/image', str(width), str(height), reliability, '2',
            *[f'{rate}:{frames}' for rate, frames in schedule]]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=6 * DEADLINE, cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
@pytest.mark.parametrize('width,height', [(1242, 375), (1920, 1080)])
def test_every_frame_at_1_and_2_hz_and_what_fits_at_10_hz(nodes, width, height, reliability):
    client, answered, frames_taken, tmp = nodes
    before = frames_taken[-1]
    answered.clear()
    drive_camera(tmp, width, height, reliability, SLOW)
    sent = {(index + 1, i) for index, (_, frames) in enumerate(SLOW) for i in range(frames)}
    total = len(sent)
    client.wait_for(lambda: sent <= answered, DEADLINE, f'depth for all {total} frames ({len(answered)} so far)')
    client.wait_for(lambda: frames_taken[-1] - before >= total, DEADLINE,
                    f'training_node to take all {total} frames ({frames_taken[-1] - before} so far)')
    assert frames_taken[-1] - before == total

    answered.clear()
    drive_camera(tmp, width, height, reliability, FAST)
    fast = {(1, i) for i in range(FAST[0][1])}
    client.wait_for(lambda: (1, FAST[0][1] - 1) in answered, DEADLINE, 'depth for the last 10 Hz frame')
    assert answered <= fast  # latest frame wins: a subset, always including the newest

