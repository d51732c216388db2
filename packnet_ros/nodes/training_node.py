"""training_node: fine-tune depth on the robot from frame triplets and measured speed.

Callbacks only convert and accumulate (image + speed -> triplet -> replay buffer); a
trainer thread samples batches, steps Adam, writes checkpoints atomically, validates them
on held-out triplets and announces good ones on `checkpoint` for the depth node.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import TwistStamped, TwistWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from packnet_ros.checkpoints import CheckpointError, load_checkpoint, networks_from_checkpoint, save_checkpoint
from packnet_ros.geometry import scale_intrinsics
from packnet_ros.inference import resolve_device
from packnet_ros.networks import DEPTH_NETWORKS, PoseNet
from packnet_ros.nodes.conversions import ConversionError, camera_matrix, to_rgb
from packnet_ros.nodes.diagnostics import StatusPublisher
from packnet_ros.nodes.parameters import declare_parameters, input_qos, subscribe_image
from packnet_ros.training import ReplayBuffer, Trainer, TripletAccumulator

WARN_PERIOD_S = 5.0
EMA = 0.05

PARAMETERS = {
    'checkpoint_dir': ('checkpoints', 'directory for checkpoints; training resumes from the newest valid one'),
    'init_checkpoint': ('', 'official .ckpt or packnet_ros checkpoint to start from; empty = from scratch'),
    'arch': ('PackNetSlim01', 'architecture when starting from scratch'),
    'model_width': (0.25, 'channel width factor when starting from scratch'),
    'width': (320, 'network input width (multiple of 32)'),
    'height': (96, 'network input height (multiple of 32)'),
    'device': ('auto', 'auto, cpu, cuda or cuda:N'),
    'threads': (0, 'CPU threads for torch in this process; 0 = torch default (all cores)'),
    'learning_rate': (2e-4, 'Adam learning rate'),
    'warmup_steps': (100, 'steps over which the learning rate ramps up from zero (0 = none)'),
    'velocity_warmup_steps': (0, 'steps over which the velocity loss weight ramps up from zero (0 = none)'),
    'seed': (0, 'seed for initialising networks trained from scratch (reproducible runs)'),
    'batch_size': (4, 'triplets per step'),
    'velocity_loss_weight': (0.1, 'weight of |‖t_pred‖ - distance|; 0 disables metric scale'),
    'velocity_source': ('odom', '"odom" (nav_msgs/Odometry) or "twist"'),
    'twist_type': ('TwistStamped', 'TwistStamped or TwistWithCovarianceStamped, for velocity_source=twist'),
    'stride': (1, 'frames between target and context frames'),
    'min_distance': (0.1, 'metres; closer context frames make a triplet static (skipped)'),
    'max_frame_gap': (0.5, 'seconds; a larger gap between frames breaks a triplet'),
    'max_speed_delay': (0.5, 'seconds to wait for odometry covering a triplet'),
    'buffer_triplets': (500, 'replay buffer size in triplets'),
    'buffer_mb': (256.0, 'replay buffer size in MiB'),
    'min_triplets': (8, 'triplets in the buffer before training starts'),
    'holdout_every': (10, 'every Nth triplet goes to the held-out set instead of the buffer'),
    'holdout_size': (8, 'held-out triplets kept (most recent)'),
    'save_every_steps': (200, 'checkpoint period in steps'),
    'save_every_seconds': (300.0, 'checkpoint period in seconds (whichever comes first)'),
    'keep_last': (3, 'checkpoints kept in checkpoint_dir'),
    'validate_before_announce': (True, 'announce only if held-out loss is no worse than the last announced'),
    'divergence_factor': (3.0, 'roll back when the running loss exceeds this multiple of the last saved one'),
    'max_steps': (0, 'stop training after this many steps (0 = never)'),
    'use_compressed': (False, 'subscribe "image/compressed" instead of raw "image"'),
    'qos_reliability': ('best_effort', 'input QoS: best_effort or reliable'),
    'qos_depth': (10, 'input queue depth'),
}


def stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class TrainingNode(Node):
    def __init__(self, **kwargs):
        super().__init__('training_node', **kwargs)
        p = self.params = declare_parameters(self, PARAMETERS)
        if p['velocity_source'] not in ('odom', 'twist'):
            raise ValueError(f'velocity_source must be "odom" or "twist", got {p["velocity_source"]!r}')
        if p['threads'] > 0:
            torch.set_num_threads(p['threads'])
        self.device = resolve_device(p['device'])
        self.ckpt_dir = Path(p['checkpoint_dir']).expanduser()
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

        self.lock = threading.Lock()
        self.accumulator = TripletAccumulator(p['height'], p['width'], p['stride'], p['min_distance'],
                                              p['max_frame_gap'], p['max_speed_delay'])
        self.buffer = ReplayBuffer(p['buffer_triplets'], int(p['buffer_mb'] * 2 ** 20))
        self.holdout: list = []
        self.triplet_count = 0
        self.K: np.ndarray | None = None
        self.image_size: tuple[int, int] | None = None
        self.stats = {'no_camera_info': 0, 'bad_image': 0, 'rollbacks': 0, 'last_checkpoint': '',
                      'announced': '', 'losses': {}, 'steps_per_s': 0.0, 'not_announced': 0}

        self.trainer = self._build_trainer()
        self.loss_ema = math.nan
        self.saved_ema = math.nan
        self.last_saved: Path | None = None
        self.announced_state: dict | None = None
        self.announced_path: Path | None = None

        qos_in = input_qos(p)
        subscribe_image(self, p, self.on_image, qos_in)
        self.create_subscription(CameraInfo, 'camera_info', self.on_camera_info, qos_in)
        if p['velocity_source'] == 'odom':
            self.create_subscription(Odometry, 'odom', self.on_velocity, qos_in)
        else:
            types = {'TwistStamped': TwistStamped, 'TwistWithCovarianceStamped': TwistWithCovarianceStamped}
            if p['twist_type'] not in types:
                raise ValueError(f'twist_type must be one of {sorted(types)}, got {p["twist_type"]!r}')
            self.create_subscription(types[p['twist_type']], 'twist', self.on_velocity, qos_in)
        self.pub_checkpoint = self.create_publisher(String, 'checkpoint', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.status = StatusPublisher(self, 'training', str(self.device))
        self.create_timer(1.0, self.publish_diagnostics)

        self._running = True
        self.worker = threading.Thread(target=self.run_training, name='trainer', daemon=True)
        self.worker.start()

    # ---------------------------------------------------------------- model state

    def _build_trainer(self) -> Trainer:
        """Resume from the newest valid checkpoint in checkpoint_dir, else init_checkpoint, else scratch."""
        p = self.params
        for stale in self.ckpt_dir.glob('.*.tmp'):
            stale.unlink()  # a write interrupted by a crash; never a checkpoint under its final name
        ckpt, source = None, None
        for path in sorted(self.ckpt_dir.glob('*.ckpt'), reverse=True):
            try:
                ckpt, source = load_checkpoint(path), path
                break
            except CheckpointError as exc:
                self.get_logger().warn(f'skipping unreadable checkpoint: {exc}')
        if ckpt is None and p['init_checkpoint']:
            ckpt, source = load_checkpoint(p['init_checkpoint']), Path(p['init_checkpoint'])
        if ckpt is not None:
            depth_net, pose_net = networks_from_checkpoint(ckpt, source)
            pose_net = pose_net or PoseNet()
            step = ckpt['metadata']['step'] if source.parent == self.ckpt_dir else 0
        else:
            if p['arch'] not in DEPTH_NETWORKS:
                raise ValueError(f'unknown arch {p["arch"]!r}; known: {sorted(DEPTH_NETWORKS)}')
            torch.manual_seed(p['seed'])
            depth_net, pose_net, step = DEPTH_NETWORKS[p['arch']](width=p['model_width']), PoseNet(), 0
        trainer = Trainer(depth_net, pose_net, np.eye(3), lr=p['learning_rate'],
                          velocity_weight=p['velocity_loss_weight'], device=self.device,
                          warmup_steps=p['warmup_steps'], velocity_warmup_steps=p['velocity_warmup_steps'])
        trainer.step_count = step
        if ckpt is not None and source.parent == self.ckpt_dir and ckpt.get('optimizer'):
            trainer.optimizer.load_state_dict(ckpt['optimizer'])
        self.get_logger().info(f'training {depth_net.arch}(width={depth_net.width:g}) at '
                               f'{p["width"]}x{p["height"]} on {self.device}, '
                               + (f'resumed from {source} at step {step}' if source and step
                                  else f'initialised from {source}' if source else 'from scratch'))
        return trainer

    # ---------------------------------------------------------------- input

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            K = camera_matrix(msg)
        except ConversionError as exc:
            self.get_logger().warn(f'dropping camera_info: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            return
        h, w = self.params['height'], self.params['width']
        self.K = scale_intrinsics(K, w / msg.width, h / msg.height)
        self.trainer.set_intrinsics(self.K)
        self.image_size = (msg.width, msg.height)

    def on_velocity(self, msg: Odometry | TwistStamped | TwistWithCovarianceStamped) -> None:
        twist = msg.twist.twist if isinstance(msg, (Odometry, TwistWithCovarianceStamped)) else msg.twist
        v = twist.linear
        with self.lock:
            self._store(self.accumulator.add_speed(stamp_seconds(msg.header), math.sqrt(v.x ** 2 + v.y ** 2 + v.z ** 2)))

    def on_image(self, msg: Image | CompressedImage) -> None:
        if self.K is None:
            self.stats['no_camera_info'] += 1
            self.get_logger().warn('no camera_info yet: frames are not used for training',
                                   throttle_duration_sec=WARN_PERIOD_S)
            return
        try:
            rgb = to_rgb(msg)
        except ConversionError as exc:
            self.stats['bad_image'] += 1
            self.get_logger().warn(f'dropping image: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            return
        if (rgb.shape[1], rgb.shape[0]) != self.image_size:
            self.stats['bad_image'] += 1
            self.get_logger().warn(f'image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info is '
                                   f'{self.image_size[0]}x{self.image_size[1]}: dropped',
                                   throttle_duration_sec=WARN_PERIOD_S)
            return
        with self.lock:
            self._store(self.accumulator.add_frame(stamp_seconds(msg.header), rgb))

    def _store(self, triplets) -> None:
        for triplet in triplets:
            self.triplet_count += 1
            if self.triplet_count % self.params['holdout_every'] == 0:
                self.holdout = (self.holdout + [triplet])[-self.params['holdout_size']:]
            else:
                self.buffer.add(triplet)

    # ---------------------------------------------------------------- training

    def run_training(self) -> None:
        p = self.params
        last_save_time, window_start, window_steps = time.monotonic(), time.monotonic(), 0
        while self._running:
            if p['max_steps'] and self.trainer.step_count >= p['max_steps']:
                time.sleep(0.2)
                continue
            with self.lock:
                ready = self.K is not None and len(self.buffer) >= p['min_triplets']
                batch = self.buffer.sample(p['batch_size']) if ready else None
            if not ready:
                time.sleep(0.1)
                continue
            try:
                out = self.trainer.step(batch)
            except Exception as exc:  # keep the node alive; the next batch may be fine
                self.get_logger().error(f'training step failed: {exc!r}', throttle_duration_sec=WARN_PERIOD_S)
                time.sleep(0.5)
                continue
            if out is None:
                self.get_logger().warn('non-finite loss: step skipped', throttle_duration_sec=WARN_PERIOD_S)
                continue
            self.stats['losses'] = out
            self.loss_ema = out['loss'] if math.isnan(self.loss_ema) else (1 - EMA) * self.loss_ema + EMA * out['loss']
            window_steps += 1
            now = time.monotonic()
            if now - window_start >= 2.0:
                self.stats['steps_per_s'] = window_steps / (now - window_start)
                window_start, window_steps = now, 0
            if self._diverged():
                self.roll_back()
                continue
            step = self.trainer.step_count
            if step % p['save_every_steps'] == 0 or now - last_save_time >= p['save_every_seconds'] \
                    or (p['max_steps'] and step >= p['max_steps']):
                self.save_and_announce()
                last_save_time = time.monotonic()

    def _diverged(self) -> bool:
        return (self.last_saved is not None and not math.isnan(self.saved_ema)
                and self.loss_ema > self.params['divergence_factor'] * self.saved_ema)

    def roll_back(self) -> None:
        ckpt = load_checkpoint(self.last_saved)
        depth_net, pose_net = networks_from_checkpoint(ckpt, self.last_saved)
        self.trainer.depth_net.load_state_dict(depth_net.state_dict())
        self.trainer.pose_net.load_state_dict(pose_net.state_dict())
        self.trainer.optimizer.load_state_dict(ckpt['optimizer'])
        self.trainer.step_count = ckpt['metadata']['step']
        self.loss_ema = self.saved_ema
        self.stats['rollbacks'] += 1
        self.get_logger().warn(f'running loss diverged: rolled back to {self.last_saved}')

    def save_and_announce(self) -> None:
        t = self.trainer
        path = self.ckpt_dir / f'step_{t.step_count:09d}.ckpt'
        save_checkpoint(path, t.depth_net, t.pose_net, step=t.step_count,
                        input_size=(self.params['height'], self.params['width']),
                        optimizer=t.optimizer.state_dict(), extra={'loss_ema': self.loss_ema})
        self.last_saved, self.saved_ema = path, self.loss_ema
        self.stats['last_checkpoint'] = str(path)
        self._prune()
        if self.params['validate_before_announce'] and not self._better_than_announced():
            self.stats['not_announced'] += 1
            return
        self.announced_state = {'depth': copy.deepcopy(t.depth_net.state_dict()),
                                'pose': copy.deepcopy(t.pose_net.state_dict())}
        self.announced_path = path
        self.stats['announced'] = str(path)
        self.pub_checkpoint.publish(String(data=str(path.resolve())))
        self.get_logger().info(f'announced {path} (step {t.step_count}, loss {self.loss_ema:.4f})')

    def _better_than_announced(self) -> bool:
        """Held-out loss of the new weights vs the last announced ones, on the same triplets."""
        with self.lock:
            holdout = list(self.holdout)
        if self.announced_state is None or not holdout:
            return True
        t = self.trainer
        current = t.evaluate(holdout)
        live = {'depth': copy.deepcopy(t.depth_net.state_dict()), 'pose': copy.deepcopy(t.pose_net.state_dict())}
        t.depth_net.load_state_dict(self.announced_state['depth'])
        t.pose_net.load_state_dict(self.announced_state['pose'])
        previous = t.evaluate(holdout)
        t.depth_net.load_state_dict(live['depth'])
        t.pose_net.load_state_dict(live['pose'])
        self.stats['holdout'] = (current, previous)
        return current <= previous

    def _prune(self) -> None:
        keep = {self.announced_path, self.last_saved}
        checkpoints = sorted(self.ckpt_dir.glob('step_*.ckpt'), reverse=True)
        for old in checkpoints[self.params['keep_last']:]:
            if old not in keep:
                old.unlink()

    # ---------------------------------------------------------------- health

    def publish_diagnostics(self) -> None:
        with self.lock:
            skipped = dict(self.accumulator.skipped)
            fill = (len(self.buffer), self.buffer.nbytes)
        losses = self.stats['losses']
        values = {
            'step': str(self.trainer.step_count),
            'steps_per_s': f'{self.stats["steps_per_s"]:.2f}',
            'loss_ema': f'{self.loss_ema:.5f}',
            **{f'loss_{k}': f'{v:.5f}' for k, v in losses.items() if k != 'scale'},
            'scale_pred_over_measured': f'{losses.get("scale", math.nan):.4f}',
            'buffer_triplets': f'{fill[0]}/{self.buffer.max_triplets}',
            'buffer_mb': f'{fill[1] / 2 ** 20:.1f}/{self.buffer.max_bytes / 2 ** 20:.0f}',
            'holdout_triplets': str(len(self.holdout)),
            'triplets': str(self.triplet_count),
            **{f'skipped_{k}': str(v) for k, v in skipped.items()},
            'skipped_no_camera_info': str(self.stats['no_camera_info']),
            'bad_images': str(self.stats['bad_image']),
            'nonfinite_steps': str(self.trainer.skipped_nonfinite),
            'rollbacks': str(self.stats['rollbacks']),
            'not_announced': str(self.stats['not_announced']),
            'last_checkpoint': self.stats['last_checkpoint'],
            'announced_checkpoint': self.stats['announced'],
        }
        self.status.publish(f'step {self.trainer.step_count}', values)

    def stop(self) -> None:
        self._running = False
        self.worker.join(timeout=10.0)


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = TrainingNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
