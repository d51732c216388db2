"""depth_node: camera image in, metric depth image and organised point cloud out.

Threads: the executor only stores incoming frames (latest wins, older unprocessed frames
are counted as dropped); one worker thread runs inference and publishes; checkpoints
announced on the topic load on their own thread and the worker swaps models between frames.
With precision int8 the node serves the float model until it has kept calibration frames
from its own camera, then quantizes on the loader thread and swaps (and quantizes every
checkpoint announced after that with the same frames).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from packnet_ros.backends import BACKENDS
from packnet_ros.checkpoints import CheckpointError
from packnet_ros.export import ExportError
from packnet_ros.geometry import scale_intrinsics
from packnet_ros.image import colorize_depth
from packnet_ros.inference import DepthEstimator, resolve_device
from packnet_ros.networks import build_depth_net
from packnet_ros.nodes.conversions import (
    ConversionError,
    camera_matrix,
    depth_to_image,
    depth_to_points,
    points_to_cloud,
    rgb_to_image,
    scaled_camera_info,
    to_rgb,
)
from packnet_ros.nodes.diagnostics import Health, StatusPublisher
from packnet_ros.nodes.inputs import subscribe_image, subscribe_input
from packnet_ros.nodes.parameters import declare_parameters
from packnet_ros.nodes.runner import run
from packnet_ros.quantization import CalibrationFrames

WARN_PERIOD_S = 5.0

PARAMETERS = {
    # name: (default, description)
    'checkpoint': ('', 'packnet-sfm .ckpt, packnet_ros checkpoint or exported .onnx; empty = untrained network'),
    'backend': ('auto', 'torch, onnxruntime, or auto: onnxruntime for fp32 and int8 on a CPU (faster there), '
                        'torch otherwise; an .onnx checkpoint always runs on onnxruntime'),
    'arch': ('PackNetSlim01', 'architecture when no checkpoint is given: PackNet01 or PackNetSlim01'),
    'model_width': (1.0, 'channel width factor when no checkpoint is given'),
    'width': (0, 'network input width (multiple of 32); 0 = the checkpoint\'s training size'),
    'height': (0, 'network input height (multiple of 32); 0 = the checkpoint\'s training size'),
    'device': ('auto', 'auto, cpu, cuda or cuda:N'),
    'threads': (0, 'CPU threads for inference (torch or onnxruntime); 0 = all cores'),
    'precision': ('auto', 'fp32, fp16 or bf16 (autocast), int8 (onnxruntime on a CPU, calibrated on this '
                          'camera\'s frames; float is served until then), or auto: int8 for a checkpoint on '
                          'a CPU, the file\'s own for an .onnx, fp32 otherwise'),
    'calibration_frames': (16, 'int8: camera frames kept for calibration'),
    'calibration_period': (2.0, 'int8: seconds at least between two kept calibration frames'),
    'int8_tolerance': (0.03, 'int8: largest median relative change of depth against float on the calibration '
                             'frames; a model beyond it is served in float'),
    'output_resolution': ('network', 'publish depth at "network" or "input" image resolution'),
    'min_depth': (0.5, 'metres; nearer predictions are published as NaN'),
    'max_depth': (80.0, 'metres; farther predictions are published as NaN'),
    'point_stride': (1, 'publish every Nth pixel (rows and columns) in the point cloud'),
    'publish_points': (True, 'publish the organised point cloud on "points"'),
    'publish_colored': (False, 'publish a colour-mapped depth image on "depth/colored"'),
    'max_rate': (0.0, 'frames per second at most (0 = as fast as inference allows); on a CPU shared '
                      'with training_node this leaves cores to training'),
    'max_image_pixels': (50_000_000, 'larger images (raw or compressed, checked before decoding) are dropped'),
    'use_compressed': (False, 'subscribe "image/compressed" (jpeg/png) instead of raw "image"'),
    'qos_reliability': ('auto', 'input QoS: auto (follow the publishers), reliable or best_effort'),
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


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    errors: int = 0
    camera_info_rejected: int = 0
    reloads: int = 0
    failed_reloads: int = 0


@dataclass
class Timings:
    """The last frames' latency (receipt -> published) and inference time, and when they were published."""

    latency_ms: deque = field(default_factory=lambda: deque(maxlen=100))
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=100))
    published: deque = field(default_factory=lambda: deque(maxlen=100))

    def add(self, latency_ms: float, inference_ms: float, published: float) -> None:
        self.latency_ms.append(latency_ms)
        self.inference_ms.append(inference_ms)
        self.published.append(published)

    def summary(self) -> dict[str, str]:
        times, latency, inference = list(self.published), list(self.latency_ms), list(self.inference_ms)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        same = latency and len(latency) == len(inference)  # both hold the same frames in the same order
        return {
            'rate_hz': f'{rate:.2f}',
            'latency_ms_mean': f'{np.mean(latency):.1f}' if latency else 'nan',
            'latency_ms_p95': f'{np.percentile(latency, 95):.1f}' if latency else 'nan',
            'inference_ms_p50': f'{np.median(inference):.1f}' if inference else 'nan',
            'overhead_ms_p50': f'{np.median(np.subtract(latency, inference)):.1f}' if same else 'nan',
        }


class CameraModel:
    """A validated camera_info and its intrinsics; the depth-resolution variants are computed once."""

    def __init__(self, info: CameraInfo, K: np.ndarray):
        self.info, self.K = info, K
        self._scaled: dict[tuple[int, int], tuple[np.ndarray, CameraInfo]] = {}

    def at(self, width: int, height: int) -> tuple[np.ndarray, CameraInfo]:
        """Intrinsics and camera_info at another resolution."""
        if (width, height) not in self._scaled:
            K = scale_intrinsics(self.K, width / self.info.width, height / self.info.height)
            self._scaled[(width, height)] = K, scaled_camera_info(self.info, K, width, height)
        return self._scaled[(width, height)]


def choose_precision(name: str, backend: str, device: torch.device, checkpoint: str) -> str:
    """'auto' -> int8 where it is measured to keep depth (CPU, onnxruntime, a checkpoint to
    quantize: README), fp32 otherwise; an .onnx model runs in its own precision whatever."""
    if name != 'auto':
        return name
    cpu_onnxruntime = device.type == 'cpu' and backend in ('auto', 'onnxruntime')
    return 'int8' if cpu_onnxruntime and checkpoint and not checkpoint.endswith('.onnx') else 'fp32'


def choose_backend(name: str, device: torch.device, precision: str) -> str:
    """'auto' -> onnxruntime for fp32 and int8 on a CPU (faster there: README), torch otherwise
    (GPUs, fp16/bf16)."""
    if name == 'auto':
        return 'onnxruntime' if device.type == 'cpu' and precision in ('fp32', 'int8') else 'torch'
    if name not in BACKENDS:
        raise ValueError(f'backend must be auto or one of {BACKENDS}, got {name!r}')
    return name


class DepthNode(Node):
    def __init__(self):
        super().__init__('depth_node')
        p = self.params = declare_parameters(self, PARAMETERS)
        if p['output_resolution'] not in ('network', 'input'):
            raise ValueError(f'output_resolution must be "network" or "input", got {p["output_resolution"]!r}')
        self.device = resolve_device(p['device'])
        # An untrained network (no checkpoint) is served by torch, whatever the backend.
        self.precision = choose_precision(p['precision'], p['backend'], self.device, p['checkpoint'])
        self.backend = choose_backend(p['backend'], self.device, self.precision) if p['checkpoint'] else 'torch'
        if self.precision == 'int8' and self.backend != 'onnxruntime':
            raise ValueError('precision int8 needs a checkpoint served by onnxruntime on a CPU')
        self.threads = p['threads'] or torch.get_num_threads()
        # With onnxruntime, torch only converts and masks small tensors: one thread, so that its
        # idle OpenMP workers do not compete with onnxruntime's for the same cores.
        torch.set_num_threads(1 if self.backend == 'onnxruntime' else self.threads)
        # A checkpoint in int8 waits for calibration frames; an int8 .onnx is served as it is.
        self.calibration = (CalibrationFrames(p['calibration_frames'], p['calibration_period'])
                            if self.precision == 'int8' and not p['checkpoint'].endswith('.onnx') else None)
        self.int8_state = 'calibrating' if self.calibration is not None else 'not used'
        self.checkpoint = p['checkpoint']
        self.estimator = self._build_estimator(p['checkpoint'])
        self.pending: DepthEstimator | None = None
        self.pending_lock = threading.Lock()
        self.camera: CameraModel | None = None
        self.frames = LatestFrame()
        self.counters = Counters()
        self.timings = Timings()
        self.health = Health()
        self._warned_no_info = False
        self._running = True

        qos_out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_sub = subscribe_image(self, p, self.on_image)
        self.info_sub = subscribe_input(self, p, CameraInfo, 'camera_info', self.on_camera_info)
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
                               f'{self.estimator.height} on {self.device} ({self.estimator.backend}, '
                               f'{self.estimator.precision}{", int8 once calibrated" if self.calibration else ""})')

    # ---------------------------------------------------------------- models

    def _build_estimator(self, checkpoint: str) -> DepthEstimator:
        p = self.params
        options = dict(precision=self.precision, min_depth=p['min_depth'], max_depth=p['max_depth'],
                       threads=self.threads)
        if checkpoint:
            estimator = self._quantized(checkpoint, options)
            if estimator is None:
                if self.calibration is not None:
                    options['precision'] = 'fp32'
                estimator = DepthEstimator.from_checkpoint(checkpoint, p['height'] or None, p['width'] or None,
                                                           str(self.device), backend=self.backend, **options)
        else:
            self.get_logger().warn('no checkpoint given: serving an untrained network (depth is meaningless)')
            estimator = DepthEstimator(build_depth_net(p['arch'], p['model_width']), p['height'] or 192,
                                       p['width'] or 640, self.device,
                                       identity=f'{p["arch"]}(width={p["model_width"]:g}) untrained', **options)
        # First calls allocate and pick kernels: do it before serving, not on a live frame.
        estimator.infer(np.zeros((estimator.height, estimator.width, 3), np.uint8))
        return estimator

    def _quantized(self, checkpoint: str, options: dict) -> DepthEstimator | None:
        """The int8 model of `checkpoint` once calibration frames are kept; None until then, or
        when int8 would change depth too much (the float model is served instead). An .onnx
        file is served in its own precision."""
        if self.calibration is None or not self.calibration.complete or checkpoint.endswith('.onnx'):
            return None
        p = self.params
        try:
            estimator = DepthEstimator.from_checkpoint(checkpoint, p['height'] or None, p['width'] or None,
                                                       str(self.device), backend=self.backend,
                                                       calibration=self.calibration.frames,
                                                       int8_tolerance=p['int8_tolerance'], **options)
        except ExportError as exc:
            self.int8_state = f'refused, serving float: {exc}'
            self.health.error('int8 refused for this model: serving float')
            self.get_logger().warn(f'int8 refused for {checkpoint}, serving it in float: {exc}')
            return None
        self.int8_state = 'serving int8'
        return estimator

    def on_checkpoint(self, msg: String) -> None:
        if not msg.data.strip():
            self.get_logger().warn('ignoring an empty path on "checkpoint": the served model stays')
            return
        self._load_in_background(msg.data)

    def _load_in_background(self, path: str) -> None:
        threading.Thread(target=self._load, args=(path,), name='checkpoint_loader', daemon=True).start()

    def on_set_parameters(self, params) -> SetParametersResult:
        """Only 'checkpoint' can change at run time; it succeeds only once the new model is loaded."""
        for param in params:
            if param.name != 'checkpoint' and param.name in PARAMETERS:
                return SetParametersResult(successful=False, reason=f'{param.name} is read at start-up only')
        for param in params:
            if param.name == 'checkpoint':
                if not str(param.value).strip():
                    return SetParametersResult(successful=False, reason='an empty checkpoint path would unload '
                                                                        'the model; the served model stays')
                error = self._load(param.value)
                if error:
                    return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    def _load(self, path: str) -> str:
        """Load a checkpoint and queue it for the worker; returns why it failed, or ''."""
        try:
            estimator = self._build_estimator(path)
        except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
            self.counters.failed_reloads += 1
            self.health.error(f'checkpoint {path} rejected')
            self.get_logger().error(f'checkpoint reload failed, keeping {self.estimator.identity}: {exc}')
            return str(exc)
        with self.pending_lock:
            self.pending = estimator
            self.checkpoint = path
        self.counters.reloads += 1
        self.get_logger().info(f'loaded {estimator.identity} (step {estimator.step}); swapping at next frame')
        return ''

    def _swap_if_pending(self) -> None:
        with self.pending_lock:
            if self.pending is not None:
                self.estimator, self.pending = self.pending, None

    # ---------------------------------------------------------------- input

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = CameraModel(msg, camera_matrix(msg))
        except ConversionError as exc:
            self.counters.camera_info_rejected += 1
            self.health.error(f'camera_info: {exc}')
            self.get_logger().warn(f'dropping camera_info: {exc}', throttle_duration_sec=WARN_PERIOD_S)

    def on_image(self, msg: Image | CompressedImage) -> None:
        self.counters.received += 1
        self.frames.put((msg, time.monotonic()))

    # ---------------------------------------------------------------- work

    def run_worker(self) -> None:
        min_period = 1.0 / self.params['max_rate'] if self.params['max_rate'] > 0 else 0.0
        started = 0.0
        while self._running:
            wait = started + min_period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            item = self.frames.take(timeout=0.2)
            if item is None:
                continue
            started = time.monotonic()
            self._swap_if_pending()
            try:
                self.process(*item)
                self.health.success()
            except ConversionError as exc:
                self._failed(f'dropping image: {exc}')
            except Exception as exc:  # a bad frame must never stop the worker
                self._failed(f'failed to process image: {exc!r}')

    def _failed(self, message: str) -> None:
        self.counters.errors += 1
        self.health.error(message)
        self.get_logger().warn(message, throttle_duration_sec=WARN_PERIOD_S)

    def process(self, msg: Image | CompressedImage, received: float) -> None:
        """Image -> depth at network (or input) resolution -> depth image, camera_info and cloud."""
        rgb = to_rgb(msg, self.params['max_image_pixels'])
        est = self.estimator
        net_rgb = cv2.resize(rgb, (est.width, est.height), interpolation=cv2.INTER_AREA)
        started = time.monotonic()
        depth = est.infer(net_rgb)
        inference_ms = 1000 * (time.monotonic() - started)
        if self.calibration is not None and self.calibration.offer(net_rgb, started):
            self.get_logger().info(f'kept {self.calibration.count} calibration frames: quantizing to int8')
            self._load_in_background(self.checkpoint)
        colour = net_rgb
        if self.params['output_resolution'] == 'input':
            depth = cv2.resize(depth, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
            colour = rgb
        self.pub_depth.publish(depth_to_image(depth, msg.header))
        if self.pub_colored is not None:
            self.pub_colored.publish(rgb_to_image(colorize_depth(depth), msg.header))
        self.publish_geometry(depth, colour, rgb.shape[1], rgb.shape[0], msg.header)
        self.counters.processed += 1
        now = time.monotonic()
        self.timings.add(1000 * (now - received), inference_ms, now)

    def publish_geometry(self, depth: np.ndarray, colour: np.ndarray, image_w: int, image_h: int, header) -> None:
        camera = self.camera
        if camera is None:
            if not self._warned_no_info:
                self.get_logger().warn('no camera_info received yet: publishing depth without points')
                self._warned_no_info = True
            return
        if (camera.info.width, camera.info.height) != (image_w, image_h):
            self.health.error('camera_info size differs from the image')
            self.get_logger().warn(f'camera_info is {camera.info.width}x{camera.info.height} but the image is '
                                   f'{image_w}x{image_h}: no points for this frame',
                                   throttle_duration_sec=WARN_PERIOD_S)
            return
        h, w = depth.shape
        K, depth_info = camera.at(w, h)
        depth_info.header = header
        self.pub_info.publish(depth_info)
        if self.pub_points is not None:
            points = depth_to_points(depth, colour, K, self.params['point_stride'])
            self.pub_points.publish(points_to_cloud(points, header))

    # ---------------------------------------------------------------- health

    def publish_diagnostics(self) -> None:
        est, c = self.estimator, self.counters
        values = {
            **self.timings.summary(),
            'received': str(c.received),
            'processed': str(c.processed),
            'dropped': str(self.frames.dropped),
            'errors': str(c.errors),
            'camera_info_rejected': str(c.camera_info_rejected),
            'reloads': str(c.reloads),
            'failed_reloads': str(c.failed_reloads),
            'model': est.identity,
            'training_step': str(est.step),
            'device': str(self.device),
            'backend': est.backend,
            'precision': est.precision,
            'int8': (self.int8_state if self.int8_state != 'calibrating'
                     else f'calibrating: {len(self.calibration.frames)}/{self.calibration.count} frames'),
            'input_size': f'{est.width}x{est.height}',
            'input_reliability': self.image_sub.reliability,
        }
        message = f'{values["rate_hz"]} Hz' if c.processed else 'waiting for images'
        self.status.report(message, values, self.health)

    def close(self) -> None:
        self._running = False
        self.worker.join(timeout=2.0)


def main(args=None):
    run(DepthNode, args)


if __name__ == '__main__':
    main()
