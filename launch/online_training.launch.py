"""Depth node + online training node, wired by the `checkpoint` topic.

    ros2 launch packnet_ros online_training.launch.py image:=/cam/image_raw \
        camera_info:=/cam/camera_info odom:=/odom

Checkpoints go to $ROS_HOME/packnet_ros/checkpoints (ROS_HOME defaults to ~/.ros) unless
checkpoint_dir says otherwise; training resumes from the newest one there.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from packnet_ros.ros.launch_support import default_output_dir, path_argument, typed


def nodes(context):
    init = path_argument(context, 'init_checkpoint')
    camera = [('image', LaunchConfiguration('image')),
              ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
              ('camera_info', LaunchConfiguration('camera_info'))]
    depth = Node(package='packnet_ros', executable='depth_node', name='depth_node',
                 namespace=LaunchConfiguration('namespace'), output='screen',
                 parameters=[LaunchConfiguration('depth_params'), {'checkpoint': init}],
                 remappings=camera)
    training = Node(package='packnet_ros', executable='training_node', name='training_node',
                    namespace=LaunchConfiguration('namespace'), output='screen',
                    parameters=[LaunchConfiguration('training_params'),
                                {'checkpoint_dir': typed('checkpoint_dir', str),
                                 'init_checkpoint': init}],
                    remappings=camera + [('odom', LaunchConfiguration('odom')),
                                         ('twist', LaunchConfiguration('twist'))])
    # Both nodes live in the same namespace, so training's `checkpoint` is depth's `checkpoint`.
    return [depth, training]


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw', description='input image topic'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info', description='input camera_info'),
        DeclareLaunchArgument('odom', default_value='/odom', description='nav_msgs/Odometry speed source'),
        DeclareLaunchArgument('twist', default_value='/twist', description='Twist(WithCovariance)Stamped source '
                                                                           '(training parameter velocity_source)'),
        DeclareLaunchArgument('depth_params', default_value=os.path.join(share, 'config', 'depth.yaml'),
                              description='depth_node parameters'),
        DeclareLaunchArgument('training_params', default_value=os.path.join(share, 'config', 'training.yaml'),
                              description='training_node parameters'),
        DeclareLaunchArgument('checkpoint_dir', default_value=default_output_dir('checkpoints'),
                              description='where training writes checkpoints and resumes from'),
        DeclareLaunchArgument('init_checkpoint', default_value='',
                              description='checkpoint both nodes start from; empty = training from scratch'),
        DeclareLaunchArgument('namespace', default_value='packnet', description='namespace of the nodes and topics'),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(share, 'config', 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for camera frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=nodes)])
