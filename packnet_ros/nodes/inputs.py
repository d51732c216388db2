"""Input subscriptions whose QoS follows the publishers, and the raw/compressed image choice.

A best-effort subscription matches every publisher, but large samples (1.4 MB images) from
a reliable publisher then arrive best effort and most are lost when a fragment is; a
reliable one gets nothing from a best-effort camera. 'auto' subscribes reliably when every
discovered publisher is reliable and best effort otherwise, and re-checks as publishers
come and go, so either kind of camera delivers every frame it can.
"""
from __future__ import annotations

from typing import Callable

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE, 'best_effort': ReliabilityPolicy.BEST_EFFORT}
RELIABILITY_CHOICES = ('auto', *RELIABILITY)
RECHECK_PERIOD_S = 1.0


def check_reliability(value: str) -> str:
    if value not in RELIABILITY_CHOICES:
        raise ValueError(f'qos_reliability must be one of {", ".join(RELIABILITY_CHOICES)}, got {value!r}')
    return value


class InputSubscription:
    """A subscription with KEEP_LAST `depth` whose reliability is fixed or follows the publishers."""

    def __init__(self, node: Node, msg_type: type, topic: str, callback: Callable, reliability: str, depth: int):
        self.node, self.msg_type, self.callback, self.depth = node, msg_type, callback, depth
        self.mode = check_reliability(reliability)
        initial = RELIABILITY.get(reliability, ReliabilityPolicy.BEST_EFFORT)
        self.subscription = self._subscribe(topic, initial)
        self.topic = self.subscription.topic_name  # resolved: namespace and remapping applied
        if self.mode == 'auto':
            self._follow_publishers()
            node.create_timer(RECHECK_PERIOD_S, self._follow_publishers)

    @property
    def reliability(self) -> ReliabilityPolicy:
        return self.subscription.qos_profile.reliability

    def _subscribe(self, topic: str, reliability: ReliabilityPolicy):
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability)
        return self.node.create_subscription(self.msg_type, topic, self.callback, qos)

    def _follow_publishers(self) -> None:
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        if not publishers:
            return  # keep what we have: a camera that restarts comes back the same
        wanted = (ReliabilityPolicy.RELIABLE
                  if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
                  else ReliabilityPolicy.BEST_EFFORT)
        if wanted != self.reliability:
            self.node.destroy_subscription(self.subscription)
            self.subscription = self._subscribe(self.topic, wanted)
            self.node.get_logger().info(f'{self.topic}: subscribed {wanted.name.lower()} to match '
                                        f'{len(publishers)} publisher(s)')


def subscribe_input(node: Node, params: dict, msg_type: type, topic: str, callback: Callable) -> InputSubscription:
    """Subscribe with the node's 'qos_reliability' and 'qos_depth' parameters."""
    return InputSubscription(node, msg_type, topic, callback, params['qos_reliability'], params['qos_depth'])


def subscribe_image(node: Node, params: dict, callback: Callable) -> InputSubscription:
    """'image/compressed' when the 'use_compressed' parameter is set, else raw 'image'."""
    if params['use_compressed']:
        return subscribe_input(node, params, CompressedImage, 'image/compressed', callback)
    return subscribe_input(node, params, Image, 'image', callback)
