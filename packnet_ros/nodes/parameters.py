"""Typed, described parameter declaration shared by the nodes."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image


def parameter_type(default) -> int:
    if isinstance(default, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(default, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(default, float):
        return ParameterType.PARAMETER_DOUBLE
    return ParameterType.PARAMETER_STRING


def declare_parameters(node: Node, specs: dict[str, tuple[object, str]]) -> dict[str, object]:
    """Declare {name: (default, description)} with types taken from the defaults; return values."""
    for name, (default, description) in specs.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description,
                                                                  type=parameter_type(default)))
    return {name: node.get_parameter(name).value for name in specs}


def input_qos(params: dict) -> QoSProfile:
    """Subscription QoS from the 'qos_reliability' and 'qos_depth' parameters."""
    reliable = params['qos_reliability'] == 'reliable'
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=params['qos_depth'],
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def subscribe_image(node: Node, params: dict, callback, qos: QoSProfile) -> None:
    """Subscribe 'image/compressed' when the 'use_compressed' parameter is set, else raw 'image'."""
    if params['use_compressed']:
        node.create_subscription(CompressedImage, 'image/compressed', callback, qos)
    else:
        node.create_subscription(Image, 'image', callback, qos)
