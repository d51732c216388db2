"""bag_player: republish a rosbag2's serialized messages untouched, with their original timing.

A stand-in for `ros2 bag play` where rosbag2 is not installed: reads the bag with `rosbags`
and publishes the stored CDR bytes as they are (no deserialisation), plus /clock.
"""
from __future__ import annotations

import importlib
import threading
import time

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from packnet_ros.data.bag import playback
from packnet_ros.nodes.parameters import declare_parameters
from packnet_ros.nodes.runner import run

PARAMETERS = {
    'bag': ('', 'rosbag2 directory to play'),
    'rate': (1.0, 'playback speed factor'),
    'loop': (False, 'start again at the end'),
    'start_offset': (0.0, 'seconds into the bag to start from'),
    'publish_clock': (True, 'publish bag time on /clock'),
    'exit_at_end': (True, 'shut the node down when the bag ends (ignored with loop)'),
    'wait_for_subscribers': (0, 'before playing, wait until this many subscriptions match our topics'),
    'drain_timeout': (10.0, 'seconds to wait at the end for subscribers to acknowledge the last messages'),
    'start_delay': (0.5, 'seconds to wait before playing (after wait_for_subscribers), so that '
                         'subscribers have matched our publishers from their side too'),
}


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


class BagPlayer(Node):
    def __init__(self):
        super().__init__('bag_player')
        p = self.params = declare_parameters(self, PARAMETERS)
        if not p['bag']:
            raise ValueError('parameter "bag" (a rosbag2 directory) is required')
        if p['rate'] <= 0:
            raise ValueError(f'rate must be positive, got {p["rate"]}')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        with Reader(p['bag']) as reader:
            self.publishers_by_topic = {c.topic: self.create_publisher(message_class(c.msgtype), c.topic, qos)
                                        for c in reader.connections}
        self.clock_pub = self.create_publisher(Clock, '/clock', 10) if p['publish_clock'] else None
        self.published = 0
        self.loops = 0
        self.finished = Future() if p['exit_at_end'] and not p['loop'] else None  # the runner spins until done
        self.thread = threading.Thread(target=self.play, name='bag_player', daemon=True)
        self.thread.start()

    def play(self) -> None:
        p = self.params
        publishers = list(self.publishers_by_topic.values()) + ([self.clock_pub] if self.clock_pub else [])
        while sum(pub.get_subscription_count() for pub in publishers) < p['wait_for_subscribers'] \
                and rclpy.ok(context=self.context):
            time.sleep(0.05)
        time.sleep(p['start_delay'])
        while rclpy.ok(context=self.context):
            wall_start = time.monotonic()
            for due, topic, stamp, raw in playback(p['bag'], p['rate'], p['start_offset']):
                delay = wall_start + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not rclpy.ok(context=self.context):
                    return
                if self.clock_pub is not None:
                    clock = Clock()
                    clock.clock.sec, clock.clock.nanosec = divmod(stamp, 1_000_000_000)
                    self.clock_pub.publish(clock)
                self.publishers_by_topic[topic].publish(raw)
                self.published += 1
            self.loops += 1
            self.get_logger().info(f'end of bag after {self.published} messages (loop {self.loops})')
            if not p['loop']:
                break
        if self.finished is not None:
            self._drain()
            self.finished.set_result(self.published)

    def _drain(self) -> None:
        """Before exiting, let subscribers acknowledge what was sent: a large reliable message still
        being repaired when its publisher is destroyed is lost (seen on a busy machine)."""
        deadline = Duration(seconds=self.params['drain_timeout'])
        for publisher in self.publishers_by_topic.values():
            if not publisher.wait_for_all_acked(deadline):
                self.get_logger().warn(f'{publisher.topic_name}: not every subscriber acknowledged the last '
                                       f'messages within {self.params["drain_timeout"]:g} s')

    def close(self) -> None:
        """The player thread notices shutdown (rclpy.ok) and stops by itself."""


def main(args=None):
    run(BagPlayer, args)


if __name__ == '__main__':
    main()
