"""Stopping, as `ros2 launch` and a terminal do it (packnet_ros.ros.nodes.runner): SIGINT (often twice:
the terminal's and launch's) or SIGTERM while a node is mid-inference or mid-step. Every node
must exit with status 0 (launch escalates after 5 s: the budget is measured with the real
launch system, DEVELOPERS.md), never abort, and the training node must save the step it
reached, which a restart resumes."""
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from packnet_ros.model.checkpoints import load_checkpoint
from packnet_ros.ros.node_process import ClientNode, start_node

from helpers import DEADLINE, REPO, wait_for_reliable_subscribers
from test_training_node import Feeder, H, W


@pytest.fixture(scope='module')
def frames():
    from packnet_ros.data.synthetic import CameraRig, drive
    return list(drive(40, seed=5, camera=CameraRig(W, H), start_time=3.0))


def no_abort(log: str) -> None:
    assert 'terminate called' not in log and 'Traceback' not in log, log[-3000:]


@pytest.mark.parametrize('signals', [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)])
def test_depth_node_stops_cleanly_mid_inference(tmp_path, signals):
    """An untrained PackNet01 at 640x192 takes seconds per frame on a CPU: the signal lands inside it."""
    proc = start_node('depth_node', tmp_path / 'depth.log', (REPO / 'config' / 'depth.yaml',),
                      {'arch': 'PackNet01', 'device': 'cpu'})
    client = ClientNode('stop_depth_test')
    pub = client.node.create_publisher(Image, 'image', QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    answered = []
    client.node.create_subscription(Image, 'depth', answered.append,
                                    QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    rgb = np.random.default_rng(0).integers(0, 256, (192, 640, 3), dtype=np.uint8)

    def send(sec):
        pub.publish(Image(header=Header(stamp=Time(sec=sec), frame_id='cam'), height=192, width=640,
                          encoding='rgb8', step=640 * 3, data=rgb.tobytes()))
    try:
        wait_for_reliable_subscribers(client, ['/image'])
        send(1)
        client.wait_for(lambda: answered, DEADLINE, 'the first depth')
        send(2)
        time.sleep(0.5)  # the worker took frame 2 at once and is inside the network (seconds) now
        for sig in signals:
            proc.popen.send_signal(sig)
            time.sleep(0.05)
        assert proc.popen.wait(timeout=DEADLINE) == 0
    finally:
        proc.stop()
        client.close()
    no_abort(proc.log.read_text())


def test_training_node_saves_the_step_reached_and_resumes_there(tmp_path, frames):
    params = tmp_path / 'training.yaml'
    shutil.copy(REPO / 'config' / 'training.yaml', params)
    ckpt_dir = tmp_path / 'ckpts'
    overrides = {'checkpoint_dir': str(ckpt_dir), 'width': W, 'height': H, 'device': 'cpu', 'batch_size': 2,
                 'min_triplets': 2, 'save_every_steps': 100000, 'save_every_seconds': 100000.0}
    probe = ClientNode('stop_training_test')
    feeder = Feeder(probe)
    proc = start_node('training_node', tmp_path / 'run1.log', (params,), overrides)
    try:
        feeder.wait_connected()
        feeding = threading.Thread(target=feeder.play, args=(frames,), daemon=True)
        feeding.start()
        probe.wait_for(lambda: (feeder.step() or 0) >= 3, 4 * DEADLINE, 'training steps')
        assert not list(ckpt_dir.glob('step_*.ckpt'))  # nothing saved yet: the periods are far away
        proc.popen.send_signal(signal.SIGINT)  # mid-step: the node steps back to back
        proc.popen.send_signal(signal.SIGINT)  # the terminal's and launch's
        assert proc.popen.wait(timeout=DEADLINE) == 0
        feeding.join()
        log = proc.log.read_text()
        no_abort(log)
        saved = re.search(r'stopping: saved (\S+) \(step (\d+)\)', log)
        assert saved, log[-3000:]
        checkpoint = load_checkpoint(saved.group(1))
        assert checkpoint.step == int(saved.group(2)) >= 3
        checkpoint.networks()

        proc = start_node('training_node', tmp_path / 'run2.log', (params,), overrides)
        feeder.diagnostics.clear()
        probe.wait_for(lambda: feeder.step() is not None, DEADLINE, 'the restarted node')
        assert feeder.step() == checkpoint.step
        assert f'resumed from {saved.group(1)} at step {checkpoint.step}' in proc.log.read_text()
    finally:
        proc.stop()
        probe.close()
