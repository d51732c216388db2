"""Depth node on a camera: `ros2 launch packnet_ros depth.launch.py image:=/cam/image_raw ...`.

`lifecycle:=true` starts it as a managed node (configure loads the model, activate
subscribes); with `autostart:=true` (the default) launch takes it to active.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from packnet_ros.ros.launch_support import path_argument, rviz_if_installed, true


def depth_node(context):
    options = dict(
        package='packnet_ros', name='depth_node', namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {'checkpoint': path_argument(context, 'checkpoint')}],
        remappings=[('image', LaunchConfiguration('image')),
                    ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                    ('camera_info', LaunchConfiguration('camera_info'))])
    if not true(context, 'lifecycle'):
        return [Node(executable='depth_node', **options)]
    node = LifecycleNode(executable='lifecycle_depth_node', **options)
    if not true(context, 'autostart'):
        return [node]

    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))
    activate = RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, goal_state='inactive',
                                                      entities=[transition(Transition.TRANSITION_ACTIVATE)]))
    return [activate, node, transition(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw', description='input image topic'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info', description='input camera_info'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'depth.yaml'),
                              description='depth_node parameters'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='official .ckpt, packnet_ros checkpoint or exported .onnx'),
        DeclareLaunchArgument('namespace', default_value='packnet', description='namespace of the node and topics'),
        DeclareLaunchArgument('lifecycle', default_value='false', choices=['true', 'false'],
                              description='start the managed (lifecycle) depth node'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='with lifecycle:=true, configure and activate it'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='start rviz2 (when installed) showing depth and the cloud'),
        DeclareLaunchArgument('fixed_frame', default_value='camera_color_optical_frame',
                              description="rviz fixed frame: the camera's frame_id (clouds are stamped in it)"),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(share, 'config', 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for camera frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    rviz = rviz_if_installed(os.path.join(share, 'config', 'packnet.rviz'), ['-f', LaunchConfiguration('fixed_frame')])
    return LaunchDescription(args + [OpaqueFunction(function=depth_node), rviz])
