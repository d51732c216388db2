"""`packnet-ros demo`: replay a drive through the real nodes and report what was learned.

    source (synthetic drive | KITTI drive folder | bag)
      -> bag_player -> depth_node ---------> depth_evaluator
                   \\-> training_node --checkpoint--^ (hot reload)
    and this process records outputs (MCAP), diagnostics and latency, then writes demo_out/.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from packnet_ros import report as rep
from packnet_ros.data.bag import TOPICS, TYPESTORE, write_kitti_bag
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.image import colorize_depth
from packnet_ros.nodes.conversions import cloud_to_points, image_to_depth, image_to_rgb

REPO_CONFIG = Path(__file__).resolve().parents[2] / 'config'
NS = '/packnet'
RECORD_PERIOD_S = 1.0  # outputs recorded at most this often, so the MCAP stays small
# Half speed: 5 frames/s still gives the trainer plenty of triplets, and leaves the depth
# node idle half the time so that training gets most of the 2 cores.
PLAYBACK_RATE = 0.5


def config_dir() -> Path:
    """config/ of the source tree, else the installed share/packnet_ros/config."""
    if (REPO_CONFIG / 'depth.yaml').is_file():
        return REPO_CONFIG
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('packnet_ros')) / 'config'


class Recorder(Node):
    """Watches the run: latency, diagnostics, checkpoints; records outputs to an MCAP bag."""

    def __init__(self, context: Context, out_bag: Path):
        super().__init__('demo_recorder', context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.image_arrival: dict[tuple[int, int], float] = {}
        self.latencies: list[float] = []
        self.depth_count = 0
        self.first_depth = self.last_depth = None
        self.last_points = None
        self.images: dict[tuple[int, int], Image] = {}
        self.training: list[tuple[float, dict]] = []
        self.evaluator: list[tuple[float, dict]] = []
        self.checkpoints: list[str] = []
        self.last_record = {}
        self.writer = Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections = {}
        self.create_subscription(Image, TOPICS['image'][0], self.on_image, qos)
        self.create_subscription(Image, f'{NS}/depth', self.on_depth, qos)
        self.create_subscription(PointCloud2, f'{NS}/points', self.on_points, qos)
        self.create_subscription(CameraInfo, f'{NS}/depth/camera_info',
                                 lambda m: self.record(f'{NS}/depth/camera_info', m), qos)
        self.create_subscription(String, f'{NS}/checkpoint', lambda m: self.checkpoints.append(m.data),
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, 50)

    @staticmethod
    def key(msg) -> tuple[int, int]:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def record(self, topic: str, msg) -> None:
        """Write a message to the outputs bag, at most once per RECORD_PERIOD_S per topic."""
        now = time.monotonic()
        if now - self.last_record.get(topic, -1e9) < RECORD_PERIOD_S:
            return
        self.last_record[topic] = now
        msgtype = type(msg).__module__.split('.')[0] + '/msg/' + type(msg).__name__
        with self.lock:
            if topic not in self.connections:
                self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            stamp = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
            self.writer.write(self.connections[topic], stamp, serialize_message(msg))

    def on_image(self, msg: Image) -> None:
        self.image_arrival[self.key(msg)] = time.monotonic()
        self.images[self.key(msg)] = msg
        while len(self.images) > 50:
            self.images.pop(next(iter(self.images)))

    def on_depth(self, msg: Image) -> None:
        arrived = self.image_arrival.pop(self.key(msg), None)
        if arrived is not None:
            self.latencies.append(1000 * (time.monotonic() - arrived))
        self.depth_count += 1
        pair = (msg, self.images.get(self.key(msg)))
        if self.first_depth is None:
            self.first_depth = pair
        self.last_depth = pair
        self.record(f'{NS}/depth', msg)

    def on_points(self, msg: PointCloud2) -> None:
        self.last_points = msg
        self.record(f'{NS}/points', msg)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(': training'):
                self.training.append((time.monotonic(), values))
            elif status.name.endswith(': depth metrics'):
                self.evaluator.append((time.monotonic(), values))

    def close(self) -> None:
        with self.lock:
            self.writer.close()


def prepare_bag(source: str | None, work: Path, frames: int, seed: int) -> tuple[Path, str]:
    """The bag to play and a description of where it came from."""
    if source and (Path(source) / 'metadata.yaml').is_file():
        return Path(source), f'bag {source}'
    if source:
        drive = Path(source)
        kind = 'KITTI drive'
    else:
        from packnet_ros.data.synthetic import write_kitti_drive
        print(f'rendering a synthetic drive ({frames} frames, seed {seed}) ...', flush=True)
        drive = write_kitti_drive(work / 'synthetic', frames, seed, width=384, height=128)
        kind = f'synthetic drive (seed {seed})'
    bag = work / 'drive_bag'
    shutil.rmtree(bag, ignore_errors=True)
    print(f'converting {drive} to a rosbag2 ...', flush=True)
    write_kitti_bag(drive, bag)
    return bag, f'{kind} {drive}'


def launch(executable: str, params: Path, overrides: dict, remaps: dict, log: Path, env: dict) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    args = [str(bin_dir / executable), '--ros-args', '-r', f'__ns:={NS}', '--params-file', str(params)]
    for k, v in overrides.items():
        args += ['-p', f'{k}:={json.dumps(v)}']  # a YAML scalar: '' and paths survive rcl's parser
    for k, v in remaps.items():
        args += ['-r', f'{k}:={v}']
    return subprocess.Popen(args, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)


def write_params(path: Path, values: dict) -> Path:
    lines = ['/**:', '  ros__parameters:'] + [f'    {k}: {json.dumps(v)}' for k, v in values.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


def summary_metrics(block: dict) -> dict:
    return {'abs_rel': block['metric']['abs_rel'], 'abs_rel_median_scaled': block['median_scaled']['abs_rel'],
            'a1': block['metric']['a1'], 'scale_ratio': block['scale_ratio']}


def run_demo(out: Path, seconds: float, source: str | None = None, checkpoint: str | None = None,
             frames: int = 300, seed: int = 0, width: int = 192, height: int = 64) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = out / 'work'
    work.mkdir(exist_ok=True)
    bag, source_text = prepare_bag(source, work, frames, seed)
    real_kitti = source is not None and KittiDrive.is_drive(source)
    env = dict(os.environ, ROS_DOMAIN_ID=str(os.environ.get('ROS_DOMAIN_ID', 100 + os.getpid() % 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    cfg = config_dir()
    camera = {'image': TOPICS['image'][0], 'camera_info': TOPICS['camera_info'][0]}
    ckpt_dir = work / 'checkpoints'
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    common = {'width': width, 'height': height, 'device': 'cpu', 'threads': 1, 'qos_reliability': 'reliable'}
    init = {'checkpoint': checkpoint} if checkpoint else {'arch': 'PackNetSlim01', 'model_width': 0.25}
    # Settings chosen from measured curves (DEVELOPERS.md): a 0.25-width PackNetSlim01 at 192x64,
    # lr 1e-3 and velocity weight 1.0 reach visible metric scale within minutes on 2 cores.
    training = {'checkpoint_dir': str(ckpt_dir), 'init_checkpoint': checkpoint or '', 'learning_rate': 1e-3,
                'velocity_loss_weight': 1.0, 'velocity_warmup_steps': 100, 'batch_size': 4, 'min_triplets': 8, 'save_every_steps': 20,
                'save_every_seconds': 30.0, 'validate_before_announce': True,
                'arch': 'PackNetSlim01', 'model_width': 0.25}
    evaluator = {'output_json': str(out / 'evaluation.json'), 'crop': 'garg' if real_kitti else 'none',
                 'window': 100}  # ~20 s at 5 fps: the first window is all before the first checkpoint
    logs = out / 'logs'
    logs.mkdir(exist_ok=True)

    context = Context()
    rclpy.init(context=context)
    outputs = out / 'outputs'
    shutil.rmtree(outputs, ignore_errors=True)
    recorder = Recorder(context, outputs)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    spinner = threading.Thread(target=lambda: executor.spin(), daemon=True)
    spinner.start()
    procs = {}
    try:
        procs['depth_node'] = launch('depth_node', cfg / 'depth.yaml', {**common, **init, 'point_stride': 1},
                                     camera, logs / 'depth_node.log', env)
        procs['training_node'] = launch('training_node', cfg / 'training.yaml', {**common, **training, 'threads': 2},
                                        {**camera, 'odom': TOPICS['odom'][0]}, logs / 'training_node.log', env)
        procs['depth_evaluator'] = launch('depth_evaluator', write_params(work / 'evaluator.yaml', evaluator), {},
                                          {'depth_gt': TOPICS['depth_gt'][0]}, logs / 'depth_evaluator.log', env)
        time.sleep(3.0)  # let the nodes load their networks and match before the first frame
        procs['bag_player'] = launch('bag_player', write_params(work / 'player.yaml', {
            'bag': str(bag), 'loop': True, 'rate': PLAYBACK_RATE, 'wait_for_subscribers': 4, 'start_delay': 1.0}),
            {}, {}, logs / 'bag_player.log', env)
        print(f'running for {seconds:.0f} s (DEMO_SECONDS) ...', flush=True)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(5.0)
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f'{", ".join(dead)} exited early; see {logs}')
            train = recorder.training[-1][1] if recorder.training else {}
            ev = recorder.evaluator[-1][1] if recorder.evaluator else {}
            print(f'  t={time.monotonic() - start:4.0f}s  step {train.get("step", 0):>5}  '
                  f'loss {train.get("loss_ema", "nan")}  depth frames {recorder.depth_count}  '
                  f'abs_rel(last) {ev.get("last_abs_rel", "-")}  scale(last) {ev.get("last_scale_ratio", "-")}',
                  flush=True)
        duration = time.monotonic() - start
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        executor.shutdown()
        recorder.destroy_node()
        rclpy.shutdown(context=context)
        recorder.close()
    return write_report(out, recorder, duration, source_text, checkpoint, width, height)


def write_report(out: Path, recorder: Recorder, duration: float, source_text: str, checkpoint: str | None,
                 width: int, height: int) -> dict:
    evaluation = json.loads((out / 'evaluation.json').read_text())
    summary = evaluation['summary']
    if not summary.get('frames'):
        raise RuntimeError('no frame was evaluated; see the logs')
    steps = int(recorder.training[-1][1]['step']) if recorder.training else 0
    latencies = recorder.latencies or [float('nan')]
    report = {
        'source': source_text,
        'init': f'checkpoint {checkpoint}' if checkpoint else 'scratch (random weights)',
        'model': 'PackNetSlim01 width 0.25' if not checkpoint else 'from checkpoint',
        'input_size': f'{width}x{height}',
        'frames': summary['frames'],
        'duration_s': duration,
        'train_steps': steps,
        'checkpoints_announced': len(recorder.checkpoints),
        'metrics_first': summary_metrics(summary['first']),
        'metrics_last': summary_metrics(summary['last']),
        'metrics_all': summary_metrics(summary['all']),
        'depth_fps': recorder.depth_count / duration,
        'latency_ms_p50': float(np.median(latencies)),
        'latency_ms_p95': float(np.percentile(latencies, 95)),
    }
    (out / 'report.json').write_text(json.dumps(report, indent=2))
    rep.plot_curves(out / 'curves.png', evaluation['frames'], recorder.training,
                    f'packnet_ros online training: {report["source"][:60]}')
    for name, pair in (('depth_first', recorder.first_depth), ('depth_last', recorder.last_depth)):
        if pair is None:
            continue
        depth_msg, image_msg = pair
        depth = image_to_depth(depth_msg)
        panels = [colorize_depth(depth)]
        if image_msg is not None:
            panels.insert(0, image_to_rgb(image_msg))
        cv2.imwrite(str(out / f'{name}.png'), cv2.cvtColor(rep.side_by_side(*panels), cv2.COLOR_RGB2BGR))
    if recorder.last_points is not None:
        xyz, rgb = rep.valid_points(cloud_to_points(recorder.last_points))
        rep.write_ply(out / 'cloud.ply', xyz, rgb)
        cv2.imwrite(str(out / 'cloud.png'), cv2.cvtColor(rep.render_cloud(xyz, rgb), cv2.COLOR_RGB2BGR))
    (out / 'report.md').write_text(rep.markdown(report))
    return report
