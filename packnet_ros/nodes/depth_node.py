"""depth_node: camera image in, metric depth image and organised point cloud out.

Threads: the executor only stores incoming frames (latest wins, older unprocessed frames
are counted as dropped); one worker thread runs inference and publishes; checkpoint
loading runs on its own thread and the worker swaps models between frames.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import cv2
import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from packnet_ros.checkpoints import CheckpointError
from packnet_ros.geometry import scale_intrinsics
from packnet_ros.image import colorize_depth
from packnet_ros.inference import DepthEstimator, resolve_device
from packnet_ros.networks import DEPTH_NETWORKS
from packnet_ros.nodes.conversions import (
    ConversionError, camera_matrix, depth_to_image, depth_to_points, points_to_cloud, rgb_to_image,
    scaled_camera_info, to_rgb)
from packnet_ros.nodes.diagnostics import StatusPublisher
from packnet_ros.nodes.parameters import declare_parameters, input_qos, subscribe_image

WARN_PERIOD_S = 5.0

PARAMETERS = {
    # name: (default, description)
    'checkpoint': ('', 'packnet-sfm .ckpt or packnet_ros checkpoint; empty = untrained network'),
    'arch': ('PackNetSlim01', 'architecture when no checkpoint is given: PackNet01 or PackNetSlim01'),
    'model_width': (1.0, 'channel width factor when no checkpoint is given'),
    'width': (0, 'network input width (multiple of 32); 0 = the checkpoint\'s training size'),
    'height': (0, 'network input height (multiple of 32); 0 = the checkpoint\'s training size'),
    'device': ('auto', 'auto, cpu, cuda or cuda:N'),
    'threads': (0, 'CPU threads for torch in this process; 0 = torch default (all cores)'),
    'precision': ('fp32', 'fp32, fp16 or bf16 (autocast)'),
    'output_resolution': ('network', 'publish depth at "network" or "input" image resolution'),
    'min_depth': (0.5, 'metres; nearer predictions are published as NaN'),
    'max_depth': (80.0, 'metres; farther predictions are published as NaN'),
    'point_stride': (1, 'publish every Nth pixel (rows and columns) in the point cloud'),
    'publish_points': (True, 'publish the organised point cloud on "points"'),
    'publish_colored': (False, 'publish a colour-mapped depth image on "depth/colored"'),
    'use_compressed': (False, 'subscribe "image/compressed" (jpeg/png) instead of raw "image"'),
    'qos_reliability': ('best_effort', 'input QoS: best_effort (sensor data) or reliable'),
    'qos_depth': (2, 'input queue depth'),
}


class LatestFrame:
    """One-slot mailbox: put() replaces an unconsumed frame and counts it as dropped."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class DepthNode(Node):
    def __init__(self):
        super().__init__('depth_node')
        p = self.params = declare_parameters(self, PARAMETERS)

        if p['threads'] > 0:
            torch.set_num_threads(p['threads'])
        self.device = resolve_device(p['device'])
        self.estimator = self._build_estimator(p['checkpoint'])
        self.pending: DepthEstimator | None = None
        self.pending_lock = threading.Lock()
        self.camera_info: CameraInfo | None = None
        self.frames = LatestFrame()
        self.stats = {'processed': 0, 'errors': 0, 'camera_info_rejected': 0, 'latency_ms': deque(maxlen=100), 'inference_ms': deque(maxlen=100),
                      'times': deque(maxlen=100)}
        self._warned_no_info = False
        self._running = True

        qos_in = input_qos(p)
        qos_out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        subscribe_image(self, p, self.on_image, qos_in)
        self.create_subscription(CameraInfo, 'camera_info', self.on_camera_info, qos_in)
        self.create_subscription(String, 'checkpoint', self.on_checkpoint, 10)
        self.pub_depth = self.create_publisher(Image, 'depth', qos_out)
        self.pub_info = self.create_publisher(CameraInfo, 'depth/camera_info', qos_out)
        self.pub_points = self.create_publisher(PointCloud2, 'points', qos_out) if p['publish_points'] else None
        self.pub_colored = self.create_publisher(Image, 'depth/colored', qos_out) if p['publish_colored'] else None
        self.status = StatusPublisher(self, 'depth', str(self.device))
        self.create_timer(1.0, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self.on_set_parameters)

        self.worker = threading.Thread(target=self.run_worker, name='depth_inference', daemon=True)
        self.worker.start()
        self.get_logger().info(f'serving {self.estimator.identity} at {self.estimator.width}x'
                               f'{self.estimator.height} on {self.device} ({p["precision"]})')

    # ---------------------------------------------------------------- models

    def _build_estimator(self, checkpoint: str) -> DepthEstimator:
        p = self.params
        # The estimator does not clip: out-of-range depth is published as NaN in process().
        options = dict(precision=p['precision'])
        if checkpoint:
            estimator = DepthEstimator.from_checkpoint(checkpoint, p['height'] or None, p['width'] or None,
                                                       str(self.device), **options)
        else:
            if p['arch'] not in DEPTH_NETWORKS:
                raise ValueError(f'unknown arch {p["arch"]!r}; known: {sorted(DEPTH_NETWORKS)}')
            self.get_logger().warn('no checkpoint given: serving an untrained network (depth is meaningless)')
            net = DEPTH_NETWORKS[p['arch']](width=p['model_width'])
            estimator = DepthEstimator(net, p['height'] or 192, p['width'] or 640, self.device,
                                       identity=f'{p["arch"]}(width={p["model_width"]:g}) untrained', **options)
        self._warm_up(estimator)
        return estimator

    @staticmethod
    def _warm_up(estimator: DepthEstimator) -> None:
        """First calls allocate and pick kernels; do it before serving, not on a live frame."""
        estimator.infer(np.zeros((estimator.height, estimator.width, 3), np.uint8))

    def on_checkpoint(self, msg: String) -> None:
        self.request_reload(msg.data)

    def on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'checkpoint' and param.value:
                self.request_reload(param.value)
            elif param.name != 'checkpoint' and param.name in PARAMETERS:
                return SetParametersResult(successful=False, reason=f'{param.name} is read at start-up only')
        return SetParametersResult(successful=True)

    def request_reload(self, path: str) -> None:
        threading.Thread(target=self._load_in_background, args=(path,), name='checkpoint_loader',
                         daemon=True).start()

    def _load_in_background(self, path: str) -> None:
        try:
            estimator = self._build_estimator(path)
        except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
            self.get_logger().error(f'checkpoint reload failed, keeping {self.estimator.identity}: {exc}')
            return
        with self.pending_lock:
            self.pending = estimator
        self.get_logger().info(f'loaded {estimator.identity} (step {estimator.step}); swapping at next frame')

    def _swap_if_pending(self) -> None:
        with self.pending_lock:
            if self.pending is not None:
                self.estimator, self.pending = self.pending, None

    # ---------------------------------------------------------------- input

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera_matrix(msg)
        except ConversionError as exc:
            self.stats['camera_info_rejected'] += 1
            self.get_logger().warn(f'dropping camera_info: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            return
        self.camera_info = msg

    def on_image(self, msg: Image | CompressedImage) -> None:
        self.frames.put((msg, time.monotonic()))

    # ---------------------------------------------------------------- work

    def run_worker(self) -> None:
        while self._running:
            item = self.frames.take(timeout=0.2)
            if item is None:
                continue
            self._swap_if_pending()
            try:
                self.process(*item)
            except ConversionError as exc:
                self.stats['errors'] += 1
                self.get_logger().warn(f'dropping image: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            except Exception as exc:  # a bad frame must never stop the worker
                self.stats['errors'] += 1
                self.get_logger().error(f'failed to process image: {exc!r}', throttle_duration_sec=WARN_PERIOD_S)

    def process(self, msg: Image | CompressedImage, received: float) -> None:
        rgb = to_rgb(msg)
        est = self.estimator
        net_rgb = cv2.resize(rgb, (est.width, est.height), interpolation=cv2.INTER_AREA)
        started = time.monotonic()
        depth = est.infer(net_rgb)
        self.stats['inference_ms'].append(1000 * (time.monotonic() - started))
        if self.params['output_resolution'] == 'input':
            depth = cv2.resize(depth, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
            colour = rgb
        else:
            colour = net_rgb
        depth[(depth < self.params['min_depth']) | (depth > self.params['max_depth'])] = np.nan
        header = msg.header
        self.pub_depth.publish(depth_to_image(depth, header))
        if self.pub_colored is not None:
            self.pub_colored.publish(rgb_to_image(colorize_depth(depth), header))
        self.publish_geometry(depth, colour, rgb.shape[1], rgb.shape[0], header)
        self.stats['processed'] += 1
        now = time.monotonic()
        self.stats['latency_ms'].append(1000 * (now - received))
        self.stats['times'].append(now)

    def publish_geometry(self, depth: np.ndarray, colour: np.ndarray, image_w: int, image_h: int, header) -> None:
        info = self.camera_info
        if info is None:
            if not self._warned_no_info:
                self.get_logger().warn('no camera_info received yet: publishing depth without points')
                self._warned_no_info = True
            return
        if (info.width, info.height) != (image_w, image_h):
            self.get_logger().warn(f'camera_info is {info.width}x{info.height} but the image is '
                                   f'{image_w}x{image_h}: no points for this frame',
                                   throttle_duration_sec=WARN_PERIOD_S)
            return
        h, w = depth.shape
        K = scale_intrinsics(camera_matrix(info), w / image_w, h / image_h)
        depth_info = scaled_camera_info(info, K, w, h)
        depth_info.header = header
        self.pub_info.publish(depth_info)
        if self.pub_points is not None:
            points = depth_to_points(depth, colour, K, self.params['point_stride'])
            self.pub_points.publish(points_to_cloud(points, header))

    # ---------------------------------------------------------------- health

    def publish_diagnostics(self) -> None:
        times, latency, inference = (list(self.stats[k]) for k in ('times', 'latency_ms', 'inference_ms'))
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        est = self.estimator
        values = {
            'rate_hz': f'{rate:.2f}',
            'latency_ms_mean': f'{np.mean(latency):.1f}' if latency else 'nan',
            'latency_ms_p95': f'{np.percentile(latency, 95):.1f}' if latency else 'nan',
            'inference_ms_p50': f'{np.median(inference):.1f}' if inference else 'nan',
            # per frame: receipt -> published, minus that frame's inference (both deques hold
            # the same frames in the same order)
            'overhead_ms_p50': (f'{np.median(np.subtract(latency, inference)):.1f}'
                                if latency and len(latency) == len(inference) else 'nan'),
            'processed': str(self.stats['processed']),
            'dropped': str(self.frames.dropped),
            'errors': str(self.stats['errors']),
            'camera_info_rejected': str(self.stats['camera_info_rejected']),
            'model': est.identity,
            'training_step': str(est.step),
            'device': str(self.device),
            'input_size': f'{est.width}x{est.height}',
        }
        self.status.publish(f'{rate:.1f} Hz' if self.stats['processed'] else 'waiting for images', values)

    def stop(self) -> None:
        self._running = False
        self.worker.join(timeout=2.0)


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = DepthNode()
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
