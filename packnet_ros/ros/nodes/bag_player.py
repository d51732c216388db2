"""bag_player: republish a rosbag2's serialized messages untouched, with their original timing.

A stand-in for `ros2 bag play` where rosbag2 is not installed: reads the bag with `rosbags`
and publishes the stored CDR bytes as they are (no deserialisation), plus /clock.

Two things an offline replay needs that a live camera cannot give:
- `wait_for_nodes`: start only once the named nodes are up and every subscription on our
  topics is matched (a node loading a network subscribes seconds after it starts), so the
  first frames are not played to nobody.
- `pace_topic`: evaluate every frame. After each message on `pace_input` (the camera) the
  player waits until a message with the same header stamp appears on `pace_topic` (the
  depth node's output) and holds bag time meanwhile, so a consumer slower than the bag
  still gets every frame, in order and with the bag's relative timing.
"""
from __future__ import annotations

import importlib
import threading
import time

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.task import Future
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from packnet_ros.data.bag import header_stamp, playback
from packnet_ros.ros.nodes.parameters import Param, declare_parameters
from packnet_ros.ros.nodes.runner import join_until, run

POLL_S = 0.05
SETTLE_S = 1.0  # every subscription matched for this long before playing

PARAMETERS = {
    'bag': Param('', 'rosbag2 directory to play'),
    'rate': Param(1.0, 'playback speed factor', low=1e-3, high=1e3),
    'loop': Param(False, 'start again at the end'),
    'start_offset': Param(0.0, 'seconds into the bag to start from', low=0.0),
    'publish_clock': Param(True, 'publish bag time on /clock'),
    'exit_at_end': Param(True, 'shut the node down when the bag ends (ignored with loop)'),
    'wait_for_subscribers': Param(0, 'before playing, wait until this many subscriptions match our topics', low=0),
    'wait_for_nodes': Param([], 'before playing, wait until these nodes (full names, e.g. /packnet/depth_node) '
                                'subscribe to our topics and every subscription on them is matched',
                            array_of=str),
    'wait_timeout': Param(300.0, 'seconds to wait for subscribers and nodes; then play anyway, with a warning',
                          low=0.0),
    'pace_topic': Param('', 'wait after each pace_input message until a message with the same stamp appears '
                            'here (e.g. /packnet/depth): every frame is processed; empty = play in real time'),
    'pace_input': Param('', 'the bag topic whose messages wait for pace_topic (e.g. the camera image)'),
    'pace_timeout': Param(60.0, 'seconds to wait for one pace_topic message before going on', low=0.0),
    'drain_timeout': Param(10.0, 'seconds to wait at the end for subscribers to acknowledge the last messages',
                           low=0.0),
    'start_delay': Param(0.5, 'seconds to wait before playing (after the waits above), so that subscribers have '
                              'matched our publishers from their side too', low=0.0),
}


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


class Pacer:
    """Stamps seen on the pace topic; wait() blocks until a given stamp has been seen.

    It subscribes once the topic's producer is up (its type is read from the graph).
    """

    def __init__(self, node: Node, topic: str, stopping: threading.Event):
        self.node, self.topic, self.stopping = node, topic, stopping
        self.cond = threading.Condition()
        self.seen: set[tuple[int, int]] = set()
        self.subscription = None

    def ready(self) -> bool:
        """Subscribed to the pace topic and matched with its producer."""
        if self.subscription is None:
            producers = self.node.get_publishers_info_by_topic(self.topic)
            if not producers:
                return False
            self.cls = message_class(producers[0].topic_type)
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            self.subscription = self.node.create_subscription(self.cls, self.topic, self._on_message, qos, raw=True)
        return self.subscription.get_publisher_count() > 0

    def _on_message(self, raw: bytes) -> None:
        stamp = deserialize_message(raw, self.cls).header.stamp
        with self.cond:
            self.seen.add((stamp.sec, stamp.nanosec))
            self.cond.notify_all()

    def wait(self, key: tuple[int, int], timeout: float) -> bool:
        """Until a message stamped `key` (sec, nanosec) has arrived; False after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while key not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return False
                self.cond.wait(min(left, 0.2))
            self.seen.discard(key)
            return True


class BagPlayer(Node):
    def __init__(self):
        super().__init__('bag_player')
        p = self.params = declare_parameters(self, PARAMETERS)
        if not p['bag']:
            raise ValueError('parameter "bag" (a rosbag2 directory) is required')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        with Reader(p['bag']) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
        self.publishers_by_topic = {topic: self.create_publisher(message_class(msgtype), topic, qos)
                                    for topic, msgtype in types.items()}
        self.clock_pub = self.create_publisher(Clock, '/clock', 10) if p['publish_clock'] else None
        self.stopping = threading.Event()
        self.pacer = None
        if p['pace_topic']:
            if p['pace_input'] not in types:
                raise ValueError(f'pace_input must be one of the bag\'s topics {sorted(types)}, '
                                 f'got {p["pace_input"]!r}')
            self.pacer = Pacer(self, p['pace_topic'], self.stopping)
        self.published = 0
        self.loops = 0
        self.unpaced = 0
        self.finished = Future() if p['exit_at_end'] and not p['loop'] else None  # the runner spins until done
        self.thread = threading.Thread(target=self.play, name='bag_player', daemon=True)
        self.thread.start()

    def playing(self) -> bool:
        return not self.stopping.is_set() and rclpy.ok(context=self.context)

    # ---------------------------------------------------------------- waiting for consumers

    def _consumers_ready(self) -> bool:
        p = self.params
        publishers = list(self.publishers_by_topic.values()) + ([self.clock_pub] if self.clock_pub else [])
        if sum(pub.get_subscription_count() for pub in publishers) < p['wait_for_subscribers']:
            return False
        subscribers = set()
        for pub in publishers:
            infos = self.get_subscriptions_info_by_topic(pub.topic_name)
            if pub.get_subscription_count() != len(infos):
                return False  # a subscription the graph knows has not matched us yet
            subscribers |= {f'{i.node_namespace.rstrip("/")}/{i.node_name}' for i in infos}
        if not set(p['wait_for_nodes']) <= subscribers:
            return False
        # The pace topic's producer must be up too, or the first frame waits in vain.
        return self.pacer is None or self.pacer.ready()

    def _wait_for_consumers(self) -> None:
        p = self.params
        deadline = time.monotonic() + p['wait_timeout']
        ready_since = None
        while self.playing() and time.monotonic() < deadline:
            if not self._consumers_ready():
                ready_since = None
            elif ready_since is None:
                ready_since = time.monotonic()
            elif time.monotonic() - ready_since >= SETTLE_S:
                return
            self.stopping.wait(POLL_S)
        if self.playing():
            self.get_logger().warn(f'playing after {p["wait_timeout"]:g} s without all consumers: waiting for '
                                   f'nodes {p["wait_for_nodes"]}, {p["wait_for_subscribers"]} subscriptions')

    # ---------------------------------------------------------------- playing

    def play(self) -> None:
        p = self.params
        if p['wait_for_subscribers'] or p['wait_for_nodes'] or self.pacer is not None:
            self._wait_for_consumers()
        self.stopping.wait(p['start_delay'])
        if self.pacer is not None:
            self.get_logger().info(f'playing, paced by {p["pace_topic"]}: every {p["pace_input"]} message waits '
                                   'for its result')
        while self.playing():
            self.wall_start = time.monotonic()
            awaiting = None  # (bag time, header stamp) of the paced message whose result is due
            for due, topic, stamp, raw in playback(p['bag'], p['rate'], p['start_offset']):
                if awaiting is not None and stamp > awaiting[0]:  # what shares its time goes out first
                    self._await(awaiting[1])
                    awaiting = None
                delay = self.wall_start + due - time.monotonic()
                if delay > 0:
                    self.stopping.wait(delay)
                if not self.playing():
                    return
                if self.clock_pub is not None:
                    clock = Clock()
                    clock.clock.sec, clock.clock.nanosec = divmod(stamp, 1_000_000_000)
                    self.clock_pub.publish(clock)
                self.publishers_by_topic[topic].publish(raw)
                self.published += 1
                if self.pacer is not None and topic == p['pace_input']:
                    awaiting = stamp, header_stamp(raw)
            if awaiting is not None:
                self._await(awaiting[1])
            self.loops += 1
            self.get_logger().info(f'end of bag after {self.published} messages (loop {self.loops})'
                                   + (f', {self.unpaced} without a paced result' if self.pacer else ''))
            if not p['loop']:
                break
        if self.finished is not None:
            self._drain()
            self.finished.set_result(self.published)

    def _await(self, key: tuple[int, int]) -> None:
        """Hold bag time until the paced result for header stamp `key` is out (or pace_timeout)."""
        p, held = self.params, time.monotonic()
        if not self.pacer.wait(key, p['pace_timeout']) and self.playing():
            self.unpaced += 1
            self.get_logger().warn(f'no {p["pace_topic"]} message stamped {key[0]}.{key[1]:09d} within '
                                   f'{p["pace_timeout"]:g} s: going on', throttle_duration_sec=10.0)
        self.wall_start += time.monotonic() - held

    def _drain(self) -> None:
        """Before exiting, let subscribers acknowledge what was sent: a large reliable message still
        being repaired when its publisher is destroyed is lost (seen on a busy machine)."""
        deadline = Duration(seconds=self.params['drain_timeout'])
        for publisher in self.publishers_by_topic.values():
            if not publisher.wait_for_all_acked(deadline):
                self.get_logger().warn(f'{publisher.topic_name}: not every subscriber acknowledged the last '
                                       f'messages within {self.params["drain_timeout"]:g} s')

    def close(self, deadline: float) -> None:
        self.stopping.set()
        join_until(self.thread, deadline)


def main(args=None):
    run(BagPlayer, args)


if __name__ == '__main__':
    main()
