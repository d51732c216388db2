"""Typed, described, checked parameter declaration: one helper for every node.

Each parameter says what it may hold (choices, an inclusive range) and whether it may change
at run time; everything else is read-only, so `ros2 param set` is refused by rclpy itself
with a reason, and `ros2 param describe` shows the ranges. A value outside what is allowed,
from a parameters file, a launch file or `-p`, stops the node at start-up with a message
that names the parameter, instead of surfacing later as a confusing failure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from packnet_ros.options import described

INT64_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class Param:
    """One node parameter: its default (which gives its type), what it is for, what it may hold.

    `low`/`high` bound numbers (inclusive; None = unbounded), `choices` strings. `dynamic`
    parameters may change while the node runs (the node handles the change); `array_of` gives
    the element type of a list parameter whose default is empty.
    """

    default: object
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    dynamic: bool = False
    array_of: type | None = None

    def type(self) -> int:
        value = self.default
        if isinstance(value, (list, tuple)):
            element = self.array_of or (type(value[0]) if value else str)
            return {bool: ParameterType.PARAMETER_BOOL_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
                    float: ParameterType.PARAMETER_DOUBLE_ARRAY}.get(element, ParameterType.PARAMETER_STRING_ARRAY)
        if isinstance(value, bool):
            return ParameterType.PARAMETER_BOOL
        if isinstance(value, int):
            return ParameterType.PARAMETER_INTEGER
        if isinstance(value, float):
            return ParameterType.PARAMETER_DOUBLE
        return ParameterType.PARAMETER_STRING

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, type=self.type(), read_only=not self.dynamic)
        if self.choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(self.choices)
        if self.low is not None or self.high is not None:
            if descriptor.type == ParameterType.PARAMETER_INTEGER:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(self.low) if self.low is not None else -INT64_MAX,
                    to_value=int(self.high) if self.high is not None else INT64_MAX, step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.low) if self.low is not None else -math.inf,
                    to_value=float(self.high) if self.high is not None else math.inf, step=0.0)]
        return descriptor

    def check(self, name: str, value) -> str:
        """Why `value` is not allowed, or ''. rclpy checks types and ranges; choices are ours."""
        if self.choices and value not in self.choices:
            return f'parameter {name!r} must be one of {", ".join(self.choices)}, got {value!r}'
        return ''


def params_of(cls: type) -> dict[str, Param]:
    """The options of a core dataclass (packnet_ros.options) as node parameters: the node and
    the core share one default, description and range per name."""
    return {name: Param(f.default, f.metadata['help'], choices=f.metadata['choices'], low=f.metadata['low'],
                        high=f.metadata['high'])
            for name, f in described(cls).items()}


def declare_parameters(node: Node, specs: dict[str, Param]) -> dict[str, object]:
    """Declare every parameter of `specs` on `node` and return their values.

    Raises ValueError naming the parameter when a given value has the wrong type or lies
    outside what it may hold. Changes to dynamic parameters are checked the same way.
    """
    values = {}
    for name, spec in specs.items():
        # An empty list has no element type of its own: declare the type, and read unset as empty.
        initial = Parameter.Type(spec.type()) if spec.default == [] else spec.default
        try:
            param = node.declare_parameter(name, initial, spec.descriptor())
        except InvalidParameterTypeException as exc:
            raise ValueError(f'parameter {name!r} must be of type {type(spec.default).__name__} '
                             f'(e.g. {spec.default!r}): {exc}') from exc
        except InvalidParameterValueException as exc:
            raise ValueError(f'parameter {name!r}: {exc}') from exc
        values[name] = [] if param.type_ == Parameter.Type.NOT_SET else param.value
        reason = spec.check(name, values[name])
        if reason:
            raise ValueError(reason)

    def on_set(params) -> SetParametersResult:
        for param in params:
            spec = specs.get(param.name)
            reason = spec.check(param.name, param.value) if spec is not None else ''
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values
