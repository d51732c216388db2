"""Launch and config files: what they reference exists and matches the nodes.

The launch files need `launch`/`launch_ros` (not on PyPI), so here they are checked
statically; test_depth_launch.py runs them where launch_testing is installed.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from packnet_ros.nodes.depth_node import PARAMETERS as DEPTH_PARAMETERS
from packnet_ros.nodes.training_node import PARAMETERS as TRAINING_PARAMETERS

REPO = Path(__file__).resolve().parents[1]


def console_scripts():
    tree = ast.parse((REPO / 'setup.py').read_text())
    scripts = next(node for node in ast.walk(tree) if isinstance(node, ast.Dict)
                   and any(getattr(k, 'value', None) == 'console_scripts' for k in node.keys))
    entries = ast.literal_eval(scripts.values[0])
    return {e.split('=')[0].strip(): e.split('=')[1].strip() for e in entries}


def test_launch_executables_are_console_scripts():
    scripts = console_scripts()
    launch_files = sorted((REPO / 'launch').glob('*.launch.py'))
    assert len(launch_files) == 3
    for launch_file in launch_files:
        source = launch_file.read_text()
        ast.parse(source)
        executables = re.findall(r"package='packnet_ros', executable='(\w+)'", source)
        assert executables, f'{launch_file.name} starts no packnet_ros node (or the pattern no longer matches)'
        for executable in executables:
            assert executable in scripts, f'{launch_file.name} starts unknown executable {executable}'
        configs = re.findall(r"(?:'config'|config), '([\w.]+\.(?:yaml|rviz))'", source)
        assert configs, f'{launch_file.name} references no config file (or the pattern no longer matches)'
        for config in configs:
            assert (REPO / 'config' / config).is_file(), f'{launch_file.name} references missing config/{config}'


def test_entry_points_resolve():
    import importlib
    for name, target in console_scripts().items():
        module, func = target.split(':')
        assert callable(getattr(importlib.import_module(module), func)), name


@pytest.mark.parametrize('config,declared', [('depth.yaml', DEPTH_PARAMETERS),
                                             ('training.yaml', TRAINING_PARAMETERS)])
def test_params_files_declare_exactly_the_node_parameters(config, declared):
    params = yaml.safe_load((REPO / 'config' / config).read_text())['/**']['ros__parameters']
    assert set(params) == set(declared)
    for name, value in params.items():
        default = declared[name][0]
        assert type(value) is type(default), f'{name}: {value!r} is not a {type(default).__name__}'


def test_demo_overrides_are_parameters_of_the_nodes_they_name():
    from packnet_ros.nodes.bag_player import PARAMETERS as PLAYER_PARAMETERS
    from packnet_ros.nodes.depth_evaluator import PARAMETERS as EVALUATOR_PARAMETERS
    nodes = {'depth_node': DEPTH_PARAMETERS, 'training_node': TRAINING_PARAMETERS,
             'depth_evaluator': EVALUATOR_PARAMETERS, 'bag_player': PLAYER_PARAMETERS}
    sections = yaml.safe_load((REPO / 'config' / 'demo.yaml').read_text())
    assert {key.removeprefix('/**/') for key in sections} == set(nodes)
    for key, section in sections.items():
        declared = nodes[key.removeprefix('/**/')]
        for name, value in section['ros__parameters'].items():
            assert name in declared, f'{key}: {name} is not a parameter of that node'
            assert type(value) is type(declared[name][0]), f'{key}: {name}: {value!r}'


def test_rviz_config_shows_depth_and_cloud():
    displays = yaml.safe_load((REPO / 'config' / 'packnet.rviz').read_text())['Visualization Manager']['Displays']
    classes = {d['Class'] for d in displays}
    assert {'rviz_default_plugins/Image', 'rviz_default_plugins/PointCloud2'} <= classes


def test_package_xml_declares_runtime_and_test_dependencies():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'packnet_ros'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'nav_msgs', 'geometry_msgs', 'std_msgs', 'diagnostic_msgs'} <= exec_deps
    assert {'launch_testing', 'launch_testing_ros'} <= {e.text for e in root.findall('test_depend')}
    assert root.find('export/build_type').text == 'ament_python'
    assert (REPO / 'resource' / 'packnet_ros').is_file()
