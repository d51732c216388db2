"""Input subscriptions whose QoS follows the publishers, and the raw/compressed image choice.

A best-effort subscription matches every publisher, but large samples (1.4 MB images) from
a reliable publisher then arrive best effort and most are lost when a fragment is; a
reliable one gets nothing from a best-effort camera. 'auto' waits for the first publisher,
subscribes reliably when every discovered publisher is reliable and best effort otherwise,
and re-checks as publishers come and go, so either kind of camera delivers every frame it
can. (Subscribing only once a publisher is known avoids replacing a subscription, and
losing the frames in flight, in the usual case of one camera.)
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
        self.topic = node.resolve_topic_name(topic)  # namespace and remapping applied
        self.subscription = None
        if self.mode == 'auto':
            self._follow_publishers()
            node.create_timer(RECHECK_PERIOD_S, self._follow_publishers)
        else:
            self.subscription = self._subscribe(RELIABILITY[reliability])

    @property
    def reliability(self) -> str:
        """'reliable', 'best_effort', or 'none' while auto still waits for a publisher."""
        if self.subscription is None:
            return 'none'
        return self.subscription.qos_profile.reliability.name.lower()

    def _subscribe(self, reliability: ReliabilityPolicy):
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability)
        return self.node.create_subscription(self.msg_type, self.topic, self.callback, qos)

    def _follow_publishers(self) -> None:
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        if not publishers:
            return  # keep what we have: a camera that restarts comes back the same
        wanted = (ReliabilityPolicy.RELIABLE
                  if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
                  else ReliabilityPolicy.BEST_EFFORT)
        if self.subscription is None or wanted != self.subscription.qos_profile.reliability:
            if self.subscription is not None:
                self.node.destroy_subscription(self.subscription)
            self.subscription = self._subscribe(wanted)
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
