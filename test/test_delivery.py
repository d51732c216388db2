"""Camera frames of real sizes reach depth_node and training_node at their default QoS.

An outside driver process publishes KITTI-size (1242x375) and 1080p rgb8 frames, reliable or
best effort, to both nodes at once, at 1, 2 and 10 Hz. Every frame must reach training_node
(its queue of 10 holds a second of them). depth_node answers the newest frame it has (latest
wins): on an idle machine that is every frame at 1-2 Hz; a busy one supersedes some, in its
own mailbox (counted as dropped) or already in its queue of 2 (counted as missed, from the
publisher's sequence numbers), and every frame is one of answered, dropped or missed.
The best-effort driver runs with config/fastdds.xml exported, as the README tells users to
do for such a camera; the reliable one needs nothing.
"""
import shutil
import subprocess
import sys

import pytest
import torch
from sensor_msgs.msg import Image

from packnet_ros.model.checkpoints import save_checkpoint
from packnet_ros.networks import PackNetSlim01
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher
from packnet_ros.ros.node_process import ClientNode, ros_environment, start_node
from packnet_ros.ros.nodes.inputs import LOSS_REPORT
from packnet_ros.ros.resources import FASTDDS_PROFILE_VARIABLE

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
    # fp32: this test counts deliveries; no int8 calibration pass competes for the cores midway.
    depth = start_node('depth_node', tmp / 'depth.log', (tmp / 'depth.yaml',),
                       {'checkpoint': str(ckpt), 'precision': 'fp32'})
    training = start_node('training_node', tmp / 'training.log', (tmp / 'training.yaml',),
                          {'checkpoint_dir': str(tmp / 'ckpts')})
    client = ClientNode('delivery_test')
    answered = set()
    client.node.create_subscription(Image, '/depth', lambda m: answered.add((m.header.stamp.sec,
                                                                             m.header.stamp.nanosec)), 50)
    watcher = DiagnosticsWatcher(client.node)
    try:
        client.wait_for(lambda: {'/training_node', '/depth_node'} <= watcher.nodes(), DEADLINE,
                        'diagnostics of both nodes')
        yield client, answered, watcher, tmp
    finally:
        client.close()
        for proc in (depth, training):
            proc.stop()
            print(proc.log_tail())


def counters(watcher: DiagnosticsWatcher) -> dict[str, int]:
    """'<node>/<counter>' -> the newest value each node published."""
    return {f'{node}/{key}': watcher.count(key, node) for node in ('/depth_node', '/training_node')
            for key in ('frames', 'received', 'dropped', 'processed', 'missed', 'frames_missed', 'lost_in_transport',
                        'frames_lost_in_transport')}


def drive_camera(tmp, width, height, reliability, schedule, profile=True):
    env = ros_environment()
    if reliability == 'reliable' or not profile:
        env.pop(FASTDDS_PROFILE_VARIABLE)  # a reliable camera needs no profile
    args = [sys.executable, str(DRIVER), '/image', str(width), str(height), reliability, '2',
            *[f'{rate}:{frames}' for rate, frames in schedule]]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=6 * DEADLINE, cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
@pytest.mark.parametrize('width,height', [(1242, 375), (1920, 1080)])
def test_every_frame_reaches_both_nodes_at_1_2_and_10_hz(nodes, width, height, reliability):
    client, answered, watcher, tmp = nodes
    for schedule in (SLOW, FAST):
        before = counters(watcher)
        answered.clear()
        drive_camera(tmp, width, height, reliability, schedule)
        sent = {(index + 1, i) for index, (_, frames) in enumerate(schedule) for i in range(frames)}
        newest = max(sent)

        def delta(key):
            return counters(watcher)[key] - before[key]
        client.wait_for(lambda: newest in answered, DEADLINE, f'depth for the newest frame {newest}')
        client.wait_for(lambda: delta('/training_node/frames') >= len(sent), DEADLINE,
                        f'training_node: all {len(sent)} frames ({delta("/training_node/frames")} so far)')
        assert delta('/training_node/frames') == len(sent)  # every frame delivered, none twice
        assert delta('/training_node/frames_missed') == 0

        def reached_depth():
            return delta('/depth_node/received') + delta('/depth_node/missed')
        client.wait_for(lambda: reached_depth() >= len(sent), DEADLINE,
                        f'depth_node: all {len(sent)} frames received or counted missed ({reached_depth()} so far)')
        assert reached_depth() == len(sent)  # none twice, none unaccounted for
        client.wait_for(lambda: delta('/depth_node/processed') + delta('/depth_node/dropped')
                        == delta('/depth_node/received'), DEADLINE,
                        'every delivered frame answered or superseded by a newer one')
        assert answered <= sent and len(answered) == delta('/depth_node/processed')
        print(f'{width}x{height} {reliability} {schedule}: {len(answered)} of {len(sent)} answered, '
              f'{delta("/depth_node/dropped")} superseded, {delta("/depth_node/missed")} missed in the queue')



def test_frames_lost_by_a_best_effort_camera_without_the_profile_are_reported(nodes):
    """The case the README warns about, left unfixed: a best-effort driver at Fast DDS defaults
    loses most 1242x375 frames in its own 512 KB shared-memory segment. Nothing on our side can
    recover them, so both nodes count them and say how to fix the camera."""
    client, answered, watcher, tmp = nodes
    before = counters(watcher)
    published = {node: len(watcher.history(node=node)) for node in ('/depth_node', '/training_node')}
    drive_camera(tmp, 1242, 375, 'best_effort', ((2.0, 12),), profile=False)
    for node, key in (('/depth_node', 'lost_in_transport'), ('/training_node', 'frames_lost_in_transport')):
        arrived = f'{node}/{"received" if node == "/depth_node" else "frames"}'

        def delta(name):
            return counters(watcher)[name] - before[name]
        client.wait_for(lambda: delta(f'{node}/{key}') > 0, DEADLINE, f'{node} {key}')
        try:  # the camera has stopped: wait for the counts to cover its frames (best effort may not)
            client.wait_for(lambda: delta(f'{node}/{key}') + delta(arrived) >= 12, 10.0, 'every frame counted')
        except TimeoutError:
            pass
        received, lost = delta(arrived), delta(f'{node}/{key}')
        print(f'{node}: {lost} lost, {received} received of 12')
        assert lost + received <= 12
        if lost < LOSS_REPORT * 12:  # measured 7-8 of 12 lost, idle or beside two busy processes
            pytest.skip(f'{node} lost only {lost} of 12 frames this time: below the share that is reported')
        # The advice stays in the status only while frames are being lost (the health window), so
        # look through every status published since the camera started, not only the latest.
        client.wait_for(lambda: any('FASTRTPS_DEFAULT_PROFILES_FILE=' in status.message
                                    for status in watcher.history(node=node)[published[node]:]),
                        DEADLINE, f'{node} to name the fix on /diagnostics')
    log = (tmp / 'depth.log').read_text()
    assert log.count('Fix on the camera side: start the camera driver with FASTRTPS_DEFAULT_PROFILES_FILE=') == 1
