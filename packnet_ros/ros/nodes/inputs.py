"""Input subscriptions whose QoS follows the publishers, and the raw/compressed image choice.

A best-effort subscription matches every publisher, but large samples (1.4 MB images) from
a reliable publisher then arrive best effort and most are lost when a fragment is; a
reliable one gets nothing from a best-effort camera. 'auto' waits for the first publisher,
subscribes reliably when every discovered publisher is reliable and best effort otherwise,
and re-checks as publishers come and go, so either kind of camera delivers every frame it
can. (Subscribing only once a publisher is known avoids replacing a subscription, and
losing the frames in flight, in the usual case of one camera.)

Frames lost on the way are counted by the middleware (the subscription's message-lost
event). Frames that never reached the node at all, whether lost in transport or replaced in
the subscription's queue of `qos_depth` while the node was busy (a reliable KEEP_LAST reader
overwrites what it has not taken, and nothing reports it), show as gaps in the publisher's
sequence numbers; those are counted as `missed` while the topic has one publisher (with
several, the numbers of different publishers interleave and say nothing).

A best-effort camera without a large shared-memory segment loses most large frames, and
nothing on the subscriber side recovers them (measured: README, "Large images over DDS"), so
the node says so, once in the log and on /diagnostics while it lasts, with the fix for the
camera's side.

QoS per topic, the ROS 2 way: `qos_overrides.<topic>.subscription.{reliability,depth,history}`
in a parameters file beats the node-wide `qos_reliability` / `qos_depth`; the reliability
override also takes `auto`.
"""
from __future__ import annotations

import threading
from typing import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind
from sensor_msgs.msg import CompressedImage, Image

from packnet_ros.data.decode import MAX_IMAGE_PIXELS
from packnet_ros.ros.nodes.parameters import Param, declare_parameters
from packnet_ros.ros.resources import config_dir

RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE, 'best_effort': ReliabilityPolicy.BEST_EFFORT}
RELIABILITY_CHOICES = ('auto', *RELIABILITY)
RECHECK_PERIOD_S = 1.0

# Every node that reads images has these; each adds its own 'qos_depth'.
INPUT_PARAMETERS = {
    'max_image_pixels': Param(MAX_IMAGE_PIXELS, 'larger images (raw or compressed, checked before decoding) are '
                                                'dropped', low=1),
    'use_compressed': Param(False, 'subscribe "image/compressed" (jpeg/png) instead of raw "image"'),
    'qos_reliability': Param('auto', 'input QoS: auto (follow the publishers), reliable or best_effort '
                                     '(per topic: qos_overrides.<topic>.subscription.reliability)',
                             choices=RELIABILITY_CHOICES),
}


LOSS_REPORT = 0.2  # report once this share of a best-effort topic's recent messages is lost
LOSS_WINDOW = 20  # messages (received + lost) the share is taken over


class DeliveryMonitor:
    """Messages published to us that never arrived, as the middleware counts them (Fast DDS's
    sample-lost status: a sample overtaken by a later one counts as lost, even when no sample
    ever arrives complete), beside those that did arrive."""

    def __init__(self):
        self.lost = 0  # reported lost by the middleware
        self.missed = 0  # never taken by the node, lost or replaced in the queue (sequence gaps)
        self.recent: list[bool] = []  # True = lost, the newest last
        self._source, self._sequence = None, 0  # publisher and sequence number of the last message

    def received(self, sequence: int | None = None, source: tuple | None = None) -> None:
        """A message taken, with its publication sequence number and its publisher (None when
        the middleware gives no number or several publishers share the topic: no gap can be told)."""
        if source is not None and self._source is not None and source != self._source:
            self.recent = []  # another camera: its losses are its own
        self.recent = (self.recent + [False])[-LOSS_WINDOW:]
        if sequence is not None and source is not None and source == self._source and sequence > self._sequence + 1:
            self.missed += sequence - self._sequence - 1
        # Another (or a restarted) publisher starts a new count: what it sent before its first
        # message here cannot be told from frames it sent before we subscribed.
        self._source, self._sequence = (source, sequence) if sequence is not None else (None, 0)

    def lost_in_transport(self, count: int) -> None:
        self.lost += count
        self.recent = (self.recent + [True] * min(count, LOSS_WINDOW))[-LOSS_WINDOW:]

    @property
    def recent_loss(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 0.0


def loss_advice(topic: str) -> str:
    profile = config_dir() / 'fastdds.xml'
    return (f'{topic}: most frames from its best-effort publisher never arrive: large messages over Fast DDS '
            'shared memory overflow the publisher\'s 512 KB segment, and no subscriber setting recovers them. '
            f'Fix on the camera side: start the camera driver with FASTRTPS_DEFAULT_PROFILES_FILE={profile} '
            '(or any profile with a larger segment), or make it publish reliable')


class InputSubscription:
    """A subscription with KEEP_LAST `depth` whose reliability is fixed or follows the publishers.
    Its callbacks (and the re-check's timer) run in `callback_group` (default: the node's)."""

    def __init__(self, node: Node, msg_type: type, topic: str, callback: Callable, reliability: str, depth: int,
                 on_loss: Callable[[str], None] | None = None, callback_group: CallbackGroup | None = None):
        self.node, self.msg_type, self.callback, self.depth = node, msg_type, callback, depth
        self.on_loss = on_loss  # called with the advice while a best-effort topic loses messages
        self.callback_group = callback_group
        # close() may run beside the re-check when they are in different callback groups
        self._lock = threading.Lock()
        self._closed = False
        self.delivery = DeliveryMonitor()
        self._advised = False
        self.topic = node.resolve_topic_name(topic)  # namespace and remapping applied
        self.mode = self._reliability_override(reliability)
        self.subscription = self.timer = None
        if self.mode == 'auto':
            self._follow_publishers()
            self.timer = node.create_timer(RECHECK_PERIOD_S, self._follow_publishers, callback_group=callback_group)
        else:
            self.subscription = self._subscribe(RELIABILITY[self.mode])

    def _reliability_override(self, default: str) -> str:
        """`qos_overrides.<topic>.subscription.reliability`, declared here (rclpy's own override
        would pin the first reliability and knows no 'auto'); `default` when not overridden."""
        name = f'qos_overrides.{self.topic}.subscription.reliability'
        if self.node.has_parameter(name):  # subscribed before (a lifecycle node activated again)
            return self.node.get_parameter(name).value
        spec = Param(default, f'reliability for subscription `{self.topic}`', choices=RELIABILITY_CHOICES)
        return declare_parameters(self.node, {name: spec})[name]

    def close(self) -> None:
        """Unsubscribe (a lifecycle node deactivating)."""
        with self._lock:
            self._closed = True
            if self.timer is not None:
                self.node.destroy_timer(self.timer)
            if self.subscription is not None:
                self.node.destroy_subscription(self.subscription)
            self.subscription = self.timer = None

    @property
    def reliability(self) -> str:
        """'reliable', 'best_effort', or 'none' while auto still waits for a publisher."""
        if self.subscription is None:
            return 'none'
        return self.subscription.qos_profile.reliability.name.lower()

    def _subscribe(self, reliability: ReliabilityPolicy):
        self.delivery.recent = []  # the loss share of this subscription's messages
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability)
        overrides = QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH))
        events = SubscriptionEventCallbacks(message_lost=self._on_lost)
        return self.node.create_subscription(self.msg_type, self.topic, self._on_message, qos,
                                             qos_overriding_options=overrides, event_callbacks=events,
                                             callback_group=self.callback_group)

    def _on_message(self, msg, info: dict) -> None:
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        source = bytes(publishers[0].endpoint_gid) if len(publishers) == 1 else None
        self.delivery.received(info.get('publication_sequence_number'), source)
        self.callback(msg)

    def _on_lost(self, event) -> None:
        self.delivery.lost_in_transport(event.total_count_change)
        if self.reliability != 'best_effort' or self.delivery.recent_loss < LOSS_REPORT:
            return
        advice = loss_advice(self.topic)
        if not self._advised:
            self._advised = True
            self.node.get_logger().warn(advice)
        if self.on_loss is not None:
            self.on_loss(advice)

    def _follow_publishers(self) -> None:
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        if not publishers:
            return  # keep what we have: a camera that restarts comes back the same
        wanted = (ReliabilityPolicy.RELIABLE
                  if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
                  else ReliabilityPolicy.BEST_EFFORT)
        with self._lock:
            if not self._closed:
                self._resubscribe(wanted, len(publishers))

    def _resubscribe(self, wanted: ReliabilityPolicy, publishers: int) -> None:
        if self.subscription is None or wanted != self.subscription.qos_profile.reliability:
            if self.subscription is not None:
                self.node.destroy_subscription(self.subscription)
            self.subscription = self._subscribe(wanted)
            self.node.get_logger().info(f'{self.topic}: subscribed {wanted.name.lower()} to match '
                                        f'{publishers} publisher(s)')


def subscribe_input(node: Node, params: dict, msg_type: type, topic: str, callback: Callable,
                    on_loss: Callable[[str], None] | None = None,
                    callback_group: CallbackGroup | None = None) -> InputSubscription:
    """Subscribe with the node's 'qos_reliability' and 'qos_depth' parameters."""
    return InputSubscription(node, msg_type, topic, callback, params['qos_reliability'], params['qos_depth'],
                             on_loss, callback_group)


def subscribe_image(node: Node, params: dict, callback: Callable, on_loss: Callable[[str], None] | None = None,
                    callback_group: CallbackGroup | None = None) -> InputSubscription:
    """'image/compressed' when the 'use_compressed' parameter is set, else raw 'image'."""
    if params['use_compressed']:
        return subscribe_input(node, params, CompressedImage, 'image/compressed', callback, on_loss, callback_group)
    return subscribe_input(node, params, Image, 'image', callback, on_loss, callback_group)
