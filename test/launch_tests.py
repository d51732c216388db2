"""Shared by the launch tests (test_launch_*.py): they run the real launch files under
launch_testing, where ROS 2's launch packages and the built package (colcon) exist, and skip
elsewhere (CI has no launch system; test_launch_files.py checks the files statically and the
process tests start the same executables)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

launch_testing = pytest.importorskip('launch_testing', reason='launch_testing is not installable from PyPI: '
                                     'build ../shared/tools/ros2_launch to run the launch files for real')
launch = pytest.importorskip('launch')
pytest.importorskip('launch_testing.actions')
pytest.importorskip('launch_testing.asserts')


def launch_file(name: str) -> str:
    """The installed launch file (the launch files find their config through the ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    try:
        share = Path(get_package_share_directory('packnet_ros'))
    except PackageNotFoundError:
        pytest.skip('packnet_ros is not installed in a sourced workspace (colcon build; source install/setup.bash)')
    return str(share / 'launch' / name)


def include(name: str, **arguments: str):
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file(name)),
                                    launch_arguments={k: str(v) for k, v in arguments.items()}.items())


def private_domain() -> None:
    """This test's own ROS domain, for the launched nodes (they inherit the environment) and the
    ClientNode of the test alike."""
    from packnet_ros.ros.node_process import ros_environment
    ros_environment()
    os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)  # the launch files set the package's
