"""depth_node: camera image in, metric depth image and organised point cloud out.

Threads: the executor only stores incoming frames (latest wins, older unprocessed frames
are counted as dropped); one worker thread rectifies (when camera_info has distortion),
runs inference and publishes; checkpoints, announced on the topic or set as the parameter,
load on their own thread and the worker swaps models between frames. The camera input and
the diagnostics timer have a callback group of their own, so frames keep arriving while a
parameter change waits for its model to load (it succeeds only once loaded). With precision
int8 the node serves the float model until it has kept calibration frames from its own
camera, then quantizes on the loader thread and swaps (and quantizes every checkpoint
announced after that with the same frames: packnet_ros.serving.calibration).

The same data flow runs as a plain node (`depth_node`: configured and active from the
start) and as a managed one (`lifecycle_depth_node`: configure loads the model, activate
subscribes), through DepthServing's configure/activate/deactivate/cleanup.
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
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from packnet_ros.devices import resolve_device
from packnet_ros.geometry import depth_to_points, scale_intrinsics
from packnet_ros.geometry.distortion import Rectifier, RectifierCache
from packnet_ros.image import colorize_depth, resize_area
from packnet_ros.networks import DEPTH_NETWORKS, build_depth_net
from packnet_ros.ros.nodes.conversions import (
    INVALID_DEPTH,
    ConversionError,
    calibration_of,
    depth_to_image,
    limit_range,
    points_to_cloud,
    rectified_camera_info,
    rgb_to_image,
    to_rgb,
)
from packnet_ros.ros.nodes.diagnostics import Health, StatusPublisher
from packnet_ros.ros.nodes.inputs import INPUT_PARAMETERS, subscribe_image, subscribe_input
from packnet_ros.ros.nodes.parameters import Param, declare_parameters
from packnet_ros.ros.nodes.runner import join_until, run
from packnet_ros.serving.backends import BACKENDS
from packnet_ros.serving.calibration import RECHECK_PERIOD_S, Int8Calibrator, Int8State
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import network_size, resolve
from packnet_ros.serving.quantization import INT8_TOLERANCE_REL, MIN_FRAMES

WARN_PERIOD_S = 5.0
LOAD_POLL_S = 0.5  # how often a parameter change waiting for its model checks that the node still runs
SPIN_THREADS = 2  # the executor's: one for the default callback group, one for the camera input's

PARAMETERS = {
    'checkpoint': Param('', 'packnet-sfm .ckpt, packnet_ros checkpoint or exported .onnx; empty = untrained '
                            'network. May change at run time: the new model serves once loaded', dynamic=True),
    'backend': Param('auto', 'torch, onnxruntime, or auto: onnxruntime for fp32 and int8 on a CPU (faster there), '
                             'torch otherwise; an .onnx checkpoint always runs on onnxruntime',
                     choices=('auto', *BACKENDS)),
    'arch': Param('PackNetSlim01', 'architecture when no checkpoint is given', choices=tuple(DEPTH_NETWORKS)),
    'model_width': Param(1.0, 'channel width factor when no checkpoint is given', low=0.01, high=4.0),
    'width': Param(0, 'network input width (multiple of 32); 0 = the checkpoint\'s training size', low=0,
                   high=8192),
    'height': Param(0, 'network input height (multiple of 32); 0 = the checkpoint\'s training size', low=0,
                    high=8192),
    'device': Param('auto', 'auto, cpu, cuda or cuda:N'),
    'threads': Param(0, 'CPU threads for inference (torch or onnxruntime); 0 = all cores', low=0),
    'precision': Param('auto', 'fp32, fp16 or bf16 (autocast), int8 (onnxruntime on a CPU, calibrated on this '
                               'camera\'s frames; float is served until then), or auto: int8 for a checkpoint on '
                               'a CPU, the file\'s own for an .onnx, fp32 otherwise',
                       choices=('auto', 'fp32', 'fp16', 'bf16', 'int8')),
    'calibration_frames': Param(16, 'int8: camera frames kept for calibration', low=MIN_FRAMES),
    'calibration_period': Param(2.0, 'int8: seconds at least between two kept calibration frames', low=0.0),
    'int8_tolerance': Param(INT8_TOLERANCE_REL, 'int8: largest median relative change of depth against float on '
                                                'the calibration frames and on live frames; a model beyond it is '
                                                'served in float', low=0.0, high=1.0),
    'int8_recheck_period': Param(RECHECK_PERIOD_S, 'int8: seconds between checks of int8 against float on a live '
                                                   'frame (0: never)', low=0.0),
    'output_resolution': Param('network', 'publish depth at "network" or "input" image resolution',
                               choices=('network', 'input')),
    'min_depth': Param(0.5, 'metres; nearer predictions are published as -Inf (REP 117; NaN with '
                            'invalid_depth nan)', low=0.0),
    'max_depth': Param(80.0, 'metres; farther predictions are published as +Inf (REP 117; NaN with '
                             'invalid_depth nan)', low=0.0),
    'invalid_depth': Param('rep117', 'depth pixels outside [min_depth, max_depth]: "rep117" (-Inf too near, +Inf '
                                     'too far, NaN no estimate) or "nan" (NaN for all, for NaN-only consumers); '
                                     'the cloud always has NaN there', choices=INVALID_DEPTH),
    'input_rectified': Param(False, 'the image is rectified already (e.g. image_proc\'s image_rect): use '
                                    'camera_info\'s P and do not rectify, whatever its distortion'),
    'point_stride': Param(1, 'publish every Nth pixel (rows and columns) in the point cloud', low=1, high=64),
    'publish_points': Param(True, 'publish the organised point cloud on "points"'),
    'publish_colored': Param(False, 'publish a colour-mapped depth image on "depth/colored"'),
    'max_rate': Param(0.0, 'frames per second at most (0 = as fast as inference allows); on a CPU shared '
                           'with training_node this leaves cores to training', low=0.0),
    **INPUT_PARAMETERS,
    'qos_depth': Param(2, 'input queue depth (per topic: qos_overrides.<topic>.subscription.depth)', low=1,
                       high=1000),
}


@dataclass
class LoadRequest:
    """A checkpoint for the loader thread; a parameter change waits for its outcome."""

    path: str
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ''  # why it was not loaded

    def finish(self, error: str) -> None:
        self.error = error
        self.done.set()


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
    superseded_reloads: int = 0  # announced while another loaded, and a newer one came: never loaded


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
    """A validated camera_info: how its images are rectified, and the rectified intrinsics and
    camera_info at the resolutions depth is published at (computed once per size)."""

    def __init__(self, info: CameraInfo, rectifier: Rectifier, rectify: bool):
        self.info, self.rectifier, self.rectify = info, rectifier, rectify
        self._scaled: dict[tuple[int, int], tuple[np.ndarray, CameraInfo]] = {}

    @property
    def size(self) -> tuple[int, int]:
        return self.info.width, self.info.height

    def rectified(self, rgb: np.ndarray) -> np.ndarray:
        return self.rectifier.rectify(rgb) if self.rectify else rgb

    def at(self, width: int, height: int) -> tuple[np.ndarray, CameraInfo]:
        """Rectified intrinsics and camera_info at another resolution."""
        if (width, height) not in self._scaled:
            K = scale_intrinsics(self.rectifier.K, width / self.info.width, height / self.info.height)
            self._scaled[(width, height)] = K, rectified_camera_info(self.info, K, width, height)
        return self._scaled[(width, height)]


class DepthServing:
    """depth_node's data flow, for a plain or a lifecycle node: message in -> core call -> message out.

    configure(): read parameters, load the model, create publishers; activate(): subscribe and
    start the worker; deactivate() and cleanup() undo them.
    """

    def __init__(self, node: Node, publisher_factory):
        self.node = node
        self.create_publisher = publisher_factory  # Node.create_publisher or create_lifecycle_publisher
        self.params = declare_parameters(node, PARAMETERS)
        self.log = node.get_logger()
        self.counters = Counters()
        self.timings = Timings()
        self.health = Health()
        self.frames = LatestFrame()
        self.rectifiers = RectifierCache()
        self.camera: CameraModel | None = None
        self.estimator: DepthEstimator | None = None
        self.pending: DepthEstimator | None = None
        self.int8: Int8Calibrator | None = None  # which models serve, int8 or float (configure)
        self.pending_lock = threading.Lock()
        self.load_lock = threading.Lock()  # one load (and ONNX export) at a time
        self.wanted: LoadRequest | None = None  # the newest checkpoint asked for, not loading yet
        self.loading: str | None = None  # the checkpoint the loader is loading
        self.loader: threading.Thread | None = None
        # camera input and diagnostics: served while a parameter change waits for a load
        self.input_group = MutuallyExclusiveCallbackGroup()
        self.worker: threading.Thread | None = None
        self.image_sub = self.info_sub = None
        self.publishers = []
        self._warned = set()
        self._running = False
        node.add_on_set_parameters_callback(self.on_set_parameters)

    # ---------------------------------------------------------------- lifecycle

    def configure(self) -> None:
        p, node = self.params, self.node
        self.device = resolve_device(p['device'])
        self.plan = resolve(p['checkpoint'], self.device, p['backend'], p['precision'])
        if self.plan.note:
            self.log.warn(self.plan.note)
        self.threads = p['threads'] or torch.get_num_threads()
        # With onnxruntime, torch only converts and masks small tensors: one thread, so that its
        # idle OpenMP workers do not compete with onnxruntime's for the same cores.
        torch.set_num_threads(1 if self.plan.backend == 'onnxruntime' else self.threads)
        # A checkpoint in int8 waits for calibration frames; an int8 .onnx is served as it is.
        self.int8 = Int8Calibrator(self.plan, p['calibration_frames'], p['calibration_period'], p['int8_tolerance'],
                                   p['int8_recheck_period'], self._int8_refused)
        self.checkpoint = p['checkpoint']
        self.estimator = self._build_estimator(p['checkpoint'])
        if self.estimator.backend.name == 'torch':  # also when the export could be written nowhere
            torch.set_num_threads(self.threads)
        qos_out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = self.create_publisher(Image, 'depth', qos_out)
        self.pub_info = self.create_publisher(CameraInfo, 'depth/camera_info', qos_out)
        self.pub_points = self.create_publisher(PointCloud2, 'points', qos_out) if p['publish_points'] else None
        self.pub_colored = self.create_publisher(Image, 'depth/colored', qos_out) if p['publish_colored'] else None
        self.publishers = [pub for pub in (self.pub_depth, self.pub_info, self.pub_points, self.pub_colored) if pub]
        self.checkpoint_sub = node.create_subscription(String, 'checkpoint', self.on_checkpoint, 10)
        self.status = StatusPublisher(node, 'depth', str(self.device))
        self.diagnostics_timer = node.create_timer(1.0, self.publish_diagnostics, callback_group=self.input_group)
        e = self.estimator
        self.log.info(f'model ready: {e.identity} at {e.width}x{e.height} on {self.device} ({e.backend.name}, '
                      f'{e.precision}{", int8 once calibrated" if self.plan.calibrate else ""})')

    def activate(self) -> None:
        self.image_sub = subscribe_image(self.node, self.params, self.on_image, self.health.error, self.input_group)
        self.info_sub = subscribe_input(self.node, self.params, CameraInfo, 'camera_info', self.on_camera_info,
                                        callback_group=self.input_group)
        self._running = True
        self.worker = threading.Thread(target=self.run_worker, name='depth_inference', daemon=True)
        self.worker.start()
        self.log.info(f'serving depth for {self.image_sub.topic}')

    def deactivate(self, deadline: float) -> None:
        self._running = False
        if self.worker is not None:
            join_until(self.worker, deadline)
        for sub in (self.image_sub, self.info_sub):
            if sub is not None:
                sub.close()
        self.image_sub = self.info_sub = None

    def cleanup(self) -> None:
        for pub in self.publishers:
            self.node.destroy_publisher(pub)
        self.publishers = []
        self.node.destroy_subscription(self.checkpoint_sub)
        self.node.destroy_timer(self.diagnostics_timer)
        self.node.destroy_publisher(self.status.publisher)
        self.estimator = self.pending = self.int8 = None

    # ---------------------------------------------------------------- models

    def _build_estimator(self, checkpoint: str) -> DepthEstimator:
        """The model that serves `checkpoint` (int8 or float: self.int8 decides), probed and warmed
        up: a model with non-finite depth was refused. Range limits are applied when publishing
        (REP 117 tells too near from too far)."""
        p = self.params
        if checkpoint:
            return self.int8.serve(checkpoint, (p['height'], p['width']), threads=self.threads)
        self.log.warn('no checkpoint given: an untrained network serves meaningless depth')
        height, width = network_size(None, p['height'], p['width'])
        return DepthEstimator(build_depth_net(p['arch'], p['model_width']), height, width, self.device,
                              self.plan.precision, threads=self.threads,
                              identity=f'{p["arch"]}(width={p["model_width"]:g}) untrained')

    def _int8_refused(self, status: str, detail: str) -> None:
        self.health.error(status)
        self.log.warn(detail)

    def on_checkpoint(self, msg: String) -> None:
        if not msg.data.strip():
            self.log.warn('ignoring an empty path on "checkpoint": the served model stays')
            return
        self._load_in_background(msg.data)

    def _load_in_background(self, path: str) -> LoadRequest:
        """Queue `path` for the one loader thread, which loads the newest request only: a
        flood of announcements (50 in 10 s) loads the last, without a thread each. A request
        overtaken by a newer one finishes unloaded, saying so."""
        with self.pending_lock:
            return self._queue(path)

    def _queue(self, path: str) -> LoadRequest:
        """_load_in_background with pending_lock held."""
        request = LoadRequest(path)
        if self.wanted is not None:
            self.counters.superseded_reloads += 1
            self.wanted.finish(f'{self.wanted.path} was superseded by {path} before it loaded')
        self.wanted = request
        if self.loader is None or not self.loader.is_alive():
            self.loader = threading.Thread(target=self._run_loader, name='checkpoint_loader', daemon=True)
            self.loader.start()
        return request

    def _run_loader(self) -> None:
        while True:
            with self.pending_lock:
                request, self.wanted = self.wanted, None
                if request is None:
                    self.loader = self.loading = None
                    return
                self.loading = request.path
            request.finish(self._load(request.path))

    def _requantize(self) -> None:
        """Calibration is complete: the newest checkpoint loads again, quantized (one still
        queued is quantized when it loads)."""
        with self.pending_lock:
            if self.wanted is None:
                self._queue(self.loading or self.checkpoint)

    def on_set_parameters(self, params) -> SetParametersResult:
        """'checkpoint' (the only dynamic parameter) succeeds only once the new model is loaded,
        on the loader thread: the camera input (its own callback group) goes on meanwhile."""
        for param in params:
            if param.name == 'checkpoint':
                if not str(param.value).strip():
                    return SetParametersResult(successful=False, reason='an empty checkpoint path would unload '
                                                                        'the model; the served model stays')
                if self.estimator is None:
                    return SetParametersResult(successful=True)  # not configured yet: configure() loads it
                request = self._load_in_background(param.value)
                while not request.done.wait(LOAD_POLL_S):
                    if not self.node.context.ok():
                        return SetParametersResult(successful=False, reason='the node is shutting down')
                if request.error:
                    return SetParametersResult(successful=False, reason=request.error)
        return SetParametersResult(successful=True)

    def _load(self, path: str) -> str:
        """Load a checkpoint and queue it for the worker; returns why it failed, or ''. Whatever
        the load raises, the served model stays."""
        try:
            with self.load_lock:
                estimator = self._build_estimator(path)
        except Exception as exc:  # noqa: BLE001 - MemoryError and the like too: never a dead loader
            self.counters.failed_reloads += 1
            self.health.error(f'checkpoint {path} rejected')
            self.log.error(f'checkpoint reload failed, keeping {self.estimator.identity}: {exc}')
            return str(exc)
        with self.pending_lock:
            self.pending = estimator
            self.checkpoint = path
        self.counters.reloads += 1
        self.log.info(f'loaded {estimator.identity} (step {estimator.step}); swapping at next frame')
        return ''

    def _swap_if_pending(self) -> None:
        with self.pending_lock:
            if self.pending is not None:
                self.estimator, self.pending = self.pending, None
                self.int8.adopt(self.estimator)

    # ---------------------------------------------------------------- input

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            rectifier = self.rectifiers.get(calibration_of(msg))
        except ConversionError as exc:
            self.counters.camera_info_rejected += 1
            self.health.error(f'camera_info: {exc}')
            self.log.warn(f'dropping camera_info: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            return
        rectify = rectifier.calibration.needs_rectification and not self.params['input_rectified']
        if rectify:
            self._warn_once(f'rectifying: camera_info has {msg.distortion_model} distortion; depth and points are '
                            'published for the rectified camera (input_rectified:=true if the image is rectified '
                            'already)', info=True)
        if self.camera is None or self.camera.rectifier is not rectifier or self.camera.rectify != rectify:
            self.camera = CameraModel(msg, rectifier, rectify)

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
            if item is None or not self._running:
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
        self.log.warn(message, throttle_duration_sec=WARN_PERIOD_S)

    def _warn_once(self, message: str, info: bool = False) -> None:
        if message not in self._warned:
            self._warned.add(message)
            (self.log.info if info else self.log.warn)(message)

    def process(self, msg: Image | CompressedImage, received: float) -> None:
        """Image -> (rectified) -> depth at network (or input) resolution -> depth image, camera_info, cloud."""
        rgb = to_rgb(msg, self.params['max_image_pixels'])
        camera = self.camera
        if camera is not None and camera.size != (rgb.shape[1], rgb.shape[0]):
            self.health.error('camera_info size differs from the image')
            self.log.warn(f'camera_info is {camera.size[0]}x{camera.size[1]} but the image is {rgb.shape[1]}x'
                          f'{rgb.shape[0]}: depth without rectification or points', throttle_duration_sec=5.0)
            camera = None
        if camera is not None:
            rgb = camera.rectified(rgb)
        est = self.estimator
        net_rgb = resize_area(rgb, est.height, est.width)
        started = time.monotonic()
        depth = est.infer(net_rgb)
        inference_ms = 1000 * (time.monotonic() - started)
        self._recheck_int8(net_rgb, depth, started)
        nonfinite = float(np.mean(~np.isfinite(depth)))  # published as NaN (no measurement), and said
        self.health.fault('nonfinite', f'{est.identity} gives non-finite depth for {nonfinite:.0%} of the latest '
                                       'frame' if nonfinite else None)
        if self.int8.offer(net_rgb, started):
            self.log.info(f'kept {self.params["calibration_frames"]} calibration frames: quantizing to int8')
            self._requantize()
        colour = net_rgb
        if self.params['output_resolution'] == 'input':
            depth = cv2.resize(depth, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
            colour = rgb
        p = self.params
        self.pub_depth.publish(depth_to_image(limit_range(depth, p['min_depth'], p['max_depth'],
                                                          p['invalid_depth']), msg.header))
        valid = limit_range(depth, p['min_depth'], p['max_depth'], 'nan')
        if self.pub_colored is not None:
            self.pub_colored.publish(rgb_to_image(colorize_depth(valid), msg.header))
        if camera is not None:
            self.publish_geometry(camera, valid, colour, msg.header)
        elif self.camera is None:
            self._warn_once('no camera_info received yet: publishing depth without points')
        self.counters.processed += 1
        now = time.monotonic()
        self.timings.add(1000 * (now - received), inference_ms, now)

    def _recheck_int8(self, net_rgb: np.ndarray, depth: np.ndarray, now: float) -> None:
        """int8's depth against float's on a live frame when due: float serves from the next frame
        on where they differ too much."""
        fallback = self.int8.check(net_rgb, depth, now)
        if fallback is not None:
            with self.pending_lock:
                if self.pending is None:  # a newer model still loading replaces both
                    self.pending = fallback

    def publish_geometry(self, camera: CameraModel, depth: np.ndarray, colour: np.ndarray, header) -> None:
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
        sub = self.image_sub  # deactivate() (another callback group) may end it meanwhile
        if est is None:
            return
        values = {
            **self.timings.summary(),
            'received': str(c.received),
            'processed': str(c.processed),
            'dropped': str(self.frames.dropped),
            'lost_in_transport': str(sub.delivery.lost if sub else 0),
            'missed': str(sub.delivery.missed if sub else 0),
            'errors': str(c.errors),
            'camera_info_rejected': str(c.camera_info_rejected),
            'reloads': str(c.reloads),
            'failed_reloads': str(c.failed_reloads),
            'superseded_reloads': str(c.superseded_reloads),
            'model': est.identity,
            'training_step': str(est.step),
            'device': str(self.device),
            'backend': est.backend.name,
            'precision': est.precision,
            'int8': self.int8.status() if self.int8 else Int8State.NOT_USED.value,
            'input_size': f'{est.width}x{est.height}',
            'input_reliability': sub.reliability if sub else 'inactive',
            'rectifying': str(bool(self.camera and self.camera.rectify)).lower(),
        }
        if sub is None:
            message = 'inactive'
        else:
            message = f'{values["rate_hz"]} Hz' if c.processed else 'waiting for images'
        self.status.report(message, values, self.health)


class DepthNode(Node):
    """Configured and active from the start, as most ROS 2 drivers are."""

    spin_threads = SPIN_THREADS

    def __init__(self):
        super().__init__('depth_node')
        self.serving = DepthServing(self, self.create_publisher)
        self.serving.configure()
        self.serving.activate()

    def close(self, deadline: float) -> None:
        self.serving.deactivate(deadline)


def main(args=None):
    run(DepthNode, args)


if __name__ == '__main__':
    main()
