"""The demo's observer: latency, diagnostics and checkpoints, and an MCAP bag of the outputs."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from packnet_ros.data.bag import TYPESTORE
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher, NodeStatus
from packnet_ros.ros.nodes.conversions import ConversionError, cloud_to_points, image_to_depth, image_to_rgb

RECORD_PERIOD_S = 1.0  # outputs recorded at most this often, so the MCAP stays small
IMAGES_KEPT = 50  # camera frames kept to pair with the depth computed from them


@dataclass
class RunRecord:
    """What the demo saw, as plain arrays: the report is written from this."""

    depth_frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    training: list[NodeStatus] = field(default_factory=list)  # training_node's, oldest first
    evaluator: list[NodeStatus] = field(default_factory=list)  # depth_evaluator's running metrics
    checkpoints: list[str] = field(default_factory=list)
    first_depth: tuple[np.ndarray, np.ndarray | None] | None = None  # (depth, camera image)
    last_depth: tuple[np.ndarray, np.ndarray | None] | None = None
    last_points: np.ndarray | None = None  # organised [h,w,4] x, y, z, rgb

    def steps(self) -> int:
        """Training steps done, as training_node last said."""
        return self.training[-1].count('step') if self.training else 0

    def evaluated_frames(self) -> int:
        return self.evaluator[-1].count('frames') if self.evaluator else 0


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class Recorder(Node):
    """Subscribes to the camera, the depth node's outputs, checkpoints and /diagnostics."""

    def __init__(self, context: Context, out_bag: Path, namespace: str, image_topic: str):
        super().__init__('demo_recorder', context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.namespace = namespace
        self.lock = threading.Lock()
        self.record = RunRecord()
        self.image_arrival: dict[tuple[int, int], float] = {}
        self.images: dict[tuple[int, int], Image] = {}
        self.last_written: dict[str, float] = {}
        self.writer = Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections = {}
        self.create_subscription(Image, image_topic, self.on_image, qos)
        self.create_subscription(Image, f'{namespace}/depth', self.on_depth, qos)
        self.create_subscription(PointCloud2, f'{namespace}/points', self.on_points, qos)
        self.create_subscription(CameraInfo, f'{namespace}/depth/camera_info',
                                 lambda m: self.write(f'{namespace}/depth/camera_info', m), qos)
        self.create_subscription(String, f'{namespace}/checkpoint', lambda m: self.record.checkpoints.append(m.data),
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.diagnostics = DiagnosticsWatcher(self, self.on_status)

    def write(self, topic: str, msg) -> None:
        """Write a message to the outputs bag, at most once per RECORD_PERIOD_S per topic."""
        now = time.monotonic()
        if now - self.last_written.get(topic, -1e9) < RECORD_PERIOD_S:
            return
        self.last_written[topic] = now
        msgtype = type(msg).__module__.split('.')[0] + '/msg/' + type(msg).__name__
        with self.lock:
            if topic not in self.connections:
                self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            stamp = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
            self.writer.write(self.connections[topic], stamp, serialize_message(msg))

    def on_image(self, msg: Image) -> None:
        self.image_arrival[_stamp(msg)] = time.monotonic()
        self.images[_stamp(msg)] = msg
        while len(self.images) > IMAGES_KEPT:
            self.images.pop(next(iter(self.images)))

    def on_depth(self, msg: Image) -> None:
        arrived = self.image_arrival.pop(_stamp(msg), None)
        if arrived is not None:
            self.record.latencies_ms.append(1000 * (time.monotonic() - arrived))
        self.record.depth_frames += 1
        camera = self.images.get(_stamp(msg))
        try:
            pair = (image_to_depth(msg).copy(), image_to_rgb(camera).copy() if camera is not None else None)
        except ConversionError as exc:  # recorded as it came, but no picture can be drawn from it
            self.get_logger().warn(f'depth frame not shown: {exc}', throttle_duration_sec=5.0)
            self.write(f'{self.namespace}/depth', msg)
            return
        if self.record.first_depth is None:
            self.record.first_depth = pair
        self.record.last_depth = pair
        self.write(f'{self.namespace}/depth', msg)

    def on_points(self, msg: PointCloud2) -> None:
        self.record.last_points = cloud_to_points(msg).copy()
        self.write(f'{self.namespace}/points', msg)

    def on_status(self, status: NodeStatus) -> None:
        if status.what == 'training':
            self.record.training.append(status)
        elif status.what == 'depth metrics':
            self.record.evaluator.append(status)

    def close(self) -> None:
        with self.lock:
            self.writer.close()
