"""Launch and config files: what they reference exists and matches the nodes.

The launch files need `launch`/`launch_ros` (not on PyPI), so here they are checked
statically; test_launch_*.py run them where launch_testing is installed.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from packnet_ros.data.bag import TOPICS, deserialize, read_messages, write_kitti_bag
from packnet_ros.data.synthetic import CameraRig, write_kitti_drive
from packnet_ros.ros.nodes.depth_node import PARAMETERS as DEPTH_PARAMETERS
from packnet_ros.ros.nodes.training_node import PARAMETERS as TRAINING_PARAMETERS

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
        executables = set(re.findall(r"executable='(\w+)'", source)) - {'rviz2'}
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
def test_params_files_hold_exactly_the_node_parameters_and_defaults(config, declared):
    params = yaml.safe_load((REPO / 'config' / config).read_text())['/**']['ros__parameters']
    assert set(params) == set(declared)
    for name, value in params.items():
        default = declared[name].default
        assert type(value) is type(default), f'{name}: {value!r} is not a {type(default).__name__}'
    # The same values: the file shows users the defaults, it must not be a second set of them.
    assert {n: v for n, v in params.items() if v != declared[n].default} == {}


def test_demo_overrides_are_parameters_of_the_nodes_they_name():
    from packnet_ros.ros.nodes.bag_player import PARAMETERS as PLAYER_PARAMETERS
    from packnet_ros.ros.nodes.depth_evaluator import PARAMETERS as EVALUATOR_PARAMETERS
    nodes = {'depth_node': DEPTH_PARAMETERS, 'training_node': TRAINING_PARAMETERS,
             'depth_evaluator': EVALUATOR_PARAMETERS, 'bag_player': PLAYER_PARAMETERS}
    sections = yaml.safe_load((REPO / 'config' / 'demo.yaml').read_text())
    assert {key.removeprefix('/**/') for key in sections} == set(nodes)
    for key, section in sections.items():
        declared = nodes[key.removeprefix('/**/')]
        for name, value in section['ros__parameters'].items():
            assert name in declared, f'{key}: {name} is not a parameter of that node'
            assert type(value) is type(declared[name].default), f'{key}: {name}: {value!r}'


def rviz(name):
    manager = yaml.safe_load((REPO / 'config' / name).read_text())['Visualization Manager']
    return manager['Displays'], manager['Global Options']['Fixed Frame']


@pytest.mark.parametrize('name', ['packnet.rviz', 'kitti_replay.rviz'])
def test_rviz_config_shows_depth_and_cloud(name):
    classes = {d['Class'] for d in rviz(name)[0]}
    assert {'rviz_default_plugins/Image', 'rviz_default_plugins/PointCloud2'} <= classes


def launch_constants(path: Path) -> dict:
    """The module-level constants (literals) of a launch file."""
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, (ast.Constant, ast.Dict))}


def test_kitti_replay_rviz_matches_the_bag_and_the_nodes(tmp_path):
    """rviz draws only what is published, in a frame it can resolve: its topics must be the
    bag's or the namespaced nodes' outputs, its fixed frame the frame the bag stamps (no TF)."""
    drive = write_kitti_drive(tmp_path / 'drive', 3, seed=0, camera=CameraRig(96, 32), workers=1)
    bag = write_kitti_bag(drive, tmp_path / 'bag')
    frames = {deserialize(raw, msgtype).header.frame_id for _, msgtype, _, raw in
              read_messages(bag, [TOPICS['image'][0], TOPICS['depth_gt'][0]])}
    constants = launch_constants(REPO / 'launch' / 'kitti_replay.launch.py')
    remapped_image = constants['CAMERA']['image']
    assert remapped_image == TOPICS['image'][0]
    outputs = {f'{constants["NS"]}/{t}' for t in ('depth', 'points', 'depth/camera_info', 'depth/colored')}
    displays, fixed_frame = rviz('kitti_replay.rviz')
    assert frames == {fixed_frame}
    topics = [d['Topic']['Value'] for d in displays if 'Topic' in d]
    assert remapped_image in topics and {'/packnet/depth', '/packnet/points'} <= set(topics)
    for topic in topics:
        assert topic in outputs | {t for t, _ in TOPICS.values()}, f'rviz shows {topic}, which nothing publishes'


def test_depth_launch_gives_rviz_the_camera_frame():
    source = (REPO / 'launch' / 'depth.launch.py').read_text()
    assert "'-f', LaunchConfiguration('fixed_frame')" in source and "DeclareLaunchArgument('fixed_frame'" in source


# Each third-party module the package imports, and the rosdep key that installs it (None: no key
# exists; the README's pip line installs it).
ROSDEP_KEYS = {'PIL': 'python3-pil', 'cv2': 'python3-opencv', 'numpy': 'python3-numpy', 'yaml': 'python3-yaml',
               'torch': 'python3-torch', 'onnxruntime': 'python3-onnxruntime-pip', 'onnx': None,
               'rosbags': 'python3-rosbags-pip', 'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib'}


def imported_modules() -> set[str]:
    import sys
    modules = set()
    for path in [*(REPO / 'packnet_ros').rglob('*.py'), *(REPO / 'launch').glob('*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split('.')[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split('.')[0])
    return modules - set(sys.stdlib_module_names) - {'packnet_ros'}


def test_package_xml_declares_every_imported_dependency():
    """rosdep installs what the code imports: every ROS package by its name, every Python module by its key."""
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'packnet_ros'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    for module in sorted(imported_modules()):
        key = ROSDEP_KEYS.get(module, module)  # a ROS package's rosdep key is its name
        assert key is None or key in exec_deps, f'the code imports {module} but package.xml has no {key}'
    assert 'python3-tensorboard-pip' in exec_deps  # torch.utils.tensorboard's writer needs it
    assert 'rviz2' in exec_deps  # the launch files' rviz option
    assert {'launch_testing', 'launch_testing_ros'} <= {e.text for e in root.findall('test_depend')}
    assert root.find('export/build_type').text == 'ament_python'
    assert (REPO / 'resource' / 'packnet_ros').is_file()
