"""What the launch files share (imported only by them: it needs ROS 2's launch packages).

- Launch arguments are strings; a node's parameters are typed. typed() hands a launch
  argument to a node as the parameter's own type ('2' becomes 2.0 for a double), so
  `rate:=2` works instead of crashing the node.
- rviz2 starts only where it is installed; elsewhere the launch says so and goes on.
- Outputs default to $ROS_HOME/packnet_ros, not the directory launch was started from.
"""
from __future__ import annotations

import shutil

from launch.actions import LogInfo, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from packnet_ros.ros.resources import output_dir


def typed(name: str, value_type: type) -> ParameterValue:
    """Launch argument `name` as a parameter value of `value_type` (str, bool, int, float)."""
    return ParameterValue(LaunchConfiguration(name), value_type=value_type)


def true(context: LaunchContext, name: str) -> bool:
    """A boolean launch argument's value."""
    return LaunchConfiguration(name).perform(context).strip().lower() in ('true', '1', 'yes', 'on')


def path_argument(context: LaunchContext, name: str) -> str:
    """A path launch argument; 'none' (or quotes) means no path, since launch refuses `name:=`."""
    value = LaunchConfiguration(name).perform(context).strip()
    return '' if value.lower() in ('none', "''", '""') else value


def default_output_dir(*parts: str) -> str:
    return str(output_dir().joinpath(*parts))


def rviz2_installed() -> bool:
    """rviz2 is found on PATH or in the ament index (a sourced ROS install)."""
    if shutil.which('rviz2'):
        return True
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return True


def rviz_if_installed(config: str, extra_arguments: list | None = None) -> OpaqueFunction:
    """rviz2 with `config` when the `rviz` launch argument is true and rviz2 is installed; a
    clear message and nothing started otherwise (launch would fail and orphan the nodes)."""
    def start(context: LaunchContext):
        if not true(context, 'rviz'):
            return []
        if not rviz2_installed():
            return [LogInfo(msg='rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2): '
                                'going on without it')]
        return [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                     arguments=['-d', config] + (extra_arguments or []))]
    return OpaqueFunction(function=start)
