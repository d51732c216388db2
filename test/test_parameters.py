"""One declaration helper for every node's parameters: types, ranges, choices, read-only."""
import pytest
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from packnet_ros.ros.nodes.parameters import Param, declare_parameters

SPECS = {
    'rate': Param(1.0, 'speed factor', low=0.001, high=1000.0),
    'stride': Param(1, 'frames between', low=1, high=100),
    'crop': Param('garg', 'evaluation crop', choices=('garg', 'none')),
    'checkpoint': Param('', 'model', dynamic=True),
    'nodes': Param([], 'names', array_of=str),
}


@pytest.fixture
def make_node():
    contexts, nodes = [], []

    def make(*overrides: str) -> Node:
        context = Context()
        rclpy.init(context=context, args=['--ros-args', *[a for o in overrides for a in ('-p', o)]])
        contexts.append(context)
        nodes.append(Node('parameters_test', context=context))
        return nodes[-1]
    yield make
    for node in nodes:
        node.destroy_node()
    for context in contexts:
        rclpy.shutdown(context=context)


def test_defaults_and_overrides_of_every_type(make_node):
    assert declare_parameters(make_node(), SPECS) == {'rate': 1.0, 'stride': 1, 'crop': 'garg', 'checkpoint': '',
                                                      'nodes': []}
    values = declare_parameters(make_node('rate:=2.5', 'crop:=none', 'nodes:=[/a, /b]'), SPECS)
    assert (values['rate'], values['crop'], values['nodes']) == (2.5, 'none', ['/a', '/b'])


@pytest.mark.parametrize('override,message', [
    ('rate:=0.0', "parameter 'rate'"), ('stride:=0', "parameter 'stride'"), ('stride:=101', "parameter 'stride'"),
    ('crop:=square', "parameter 'crop' must be one of garg, none, got 'square'"),
    ('rate:=fast', "parameter 'rate' must be of type float"), ('stride:=1.5', "parameter 'stride' must be of type int"),
])
def test_values_outside_what_a_parameter_may_hold_stop_the_start(make_node, override, message):
    with pytest.raises(ValueError, match=message):
        declare_parameters(make_node(override), SPECS)


def test_descriptors_carry_ranges_choices_and_read_only(make_node):
    node = make_node()
    declare_parameters(node, SPECS)
    rate, stride, crop, checkpoint, names = node.describe_parameters(list(SPECS))
    assert rate.floating_point_range[0].from_value == 0.001 and rate.floating_point_range[0].to_value == 1000.0
    assert stride.integer_range[0].from_value == 1 and stride.integer_range[0].to_value == 100
    assert crop.additional_constraints == 'one of: garg, none'
    assert rate.read_only and crop.read_only and not checkpoint.read_only
    assert names.type == ParameterType.PARAMETER_STRING_ARRAY


def test_run_time_changes_are_refused_unless_dynamic_and_allowed(make_node):
    node = make_node()
    declare_parameters(node, SPECS)
    read_only, dynamic = node.set_parameters([Parameter('stride', value=2), Parameter('checkpoint', value='m.ckpt')])
    assert not read_only.successful and 'read-only' in read_only.reason
    assert dynamic.successful and node.get_parameter('checkpoint').value == 'm.ckpt'
