"""Typed, described parameter declaration shared by the nodes."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node


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
