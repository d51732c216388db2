"""Depth node + online training node, wired by the `checkpoint` topic.

    ros2 launch packnet_ros online_training.launch.py image:=/cam/image_raw \
        camera_info:=/cam/camera_info odom:=/odom
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info'),
        DeclareLaunchArgument('odom', default_value='/odom', description='nav_msgs/Odometry speed source'),
        DeclareLaunchArgument('twist', default_value='/twist', description='Twist(WithCovariance)Stamped source'),
        DeclareLaunchArgument('depth_params', default_value=os.path.join(share, 'config', 'depth.yaml')),
        DeclareLaunchArgument('training_params', default_value=os.path.join(share, 'config', 'training.yaml')),
        DeclareLaunchArgument('checkpoint_dir', default_value='checkpoints'),
        DeclareLaunchArgument('init_checkpoint', default_value=''),
        DeclareLaunchArgument('namespace', default_value='packnet'),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(share, 'config', 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for camera frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    camera = [('image', LaunchConfiguration('image')),
              ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
              ('camera_info', LaunchConfiguration('camera_info'))]
    depth = Node(package='packnet_ros', executable='depth_node', name='depth_node',
                 namespace=LaunchConfiguration('namespace'), output='screen',
                 parameters=[LaunchConfiguration('depth_params'),
                             {'checkpoint': LaunchConfiguration('init_checkpoint')}],
                 remappings=camera)
    training = Node(package='packnet_ros', executable='training_node', name='training_node',
                    namespace=LaunchConfiguration('namespace'), output='screen',
                    parameters=[LaunchConfiguration('training_params'),
                                {'checkpoint_dir': LaunchConfiguration('checkpoint_dir'),
                                 'init_checkpoint': LaunchConfiguration('init_checkpoint')}],
                    remappings=camera + [('odom', LaunchConfiguration('odom')),
                                         ('twist', LaunchConfiguration('twist'))])
    # Both nodes live in the same namespace, so training's `checkpoint` is depth's `checkpoint`.
    return LaunchDescription(args + [depth, training])
