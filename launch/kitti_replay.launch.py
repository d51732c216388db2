"""Replay a KITTI (or synthetic) bag through depth + online training + evaluation.

    packnet-ros kitti-to-bag DRIVE_DIR drive_bag
    ros2 launch packnet_ros kitti_replay.launch.py bag:=drive_bag rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    config = os.path.join(share, 'config')
    args = [
        DeclareLaunchArgument('bag', description='rosbag2 made by packnet-ros kitti-to-bag'),
        DeclareLaunchArgument('rate', default_value='1.0'),
        DeclareLaunchArgument('loop', default_value='false'),
        DeclareLaunchArgument('checkpoint', default_value='', description='start from this checkpoint'),
        DeclareLaunchArgument('checkpoint_dir', default_value='checkpoints'),
        DeclareLaunchArgument('output_json', default_value='kitti_replay_metrics.json'),
        DeclareLaunchArgument('rviz', default_value='false'),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(config, 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for KITTI frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    camera = [('image', '/kitti/camera/image_raw'), ('camera_info', '/kitti/camera/camera_info')]
    nodes = [
        Node(package='packnet_ros', executable='bag_player', name='bag_player', output='screen',
             parameters=[{'bag': LaunchConfiguration('bag'), 'rate': LaunchConfiguration('rate'),
                          'loop': LaunchConfiguration('loop')}]),
        Node(package='packnet_ros', executable='depth_node', name='depth_node', namespace='packnet',
             output='screen', remappings=camera,
             parameters=[os.path.join(config, 'depth.yaml'), {'checkpoint': LaunchConfiguration('checkpoint')}]),
        Node(package='packnet_ros', executable='training_node', name='training_node', namespace='packnet',
             output='screen', remappings=camera + [('odom', '/kitti/odom')],
             parameters=[os.path.join(config, 'training.yaml'),
                         {'init_checkpoint': LaunchConfiguration('checkpoint'),
                          'checkpoint_dir': LaunchConfiguration('checkpoint_dir')}]),
        Node(package='packnet_ros', executable='depth_evaluator', name='depth_evaluator', namespace='packnet',
             output='screen', remappings=[('depth_gt', '/kitti/depth_gt')],
             parameters=[{'output_json': LaunchConfiguration('output_json')}]),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', os.path.join(config, 'kitti_replay.rviz')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ]
    return LaunchDescription(args + nodes)
