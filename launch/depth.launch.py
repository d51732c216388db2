"""Depth node on a camera: `ros2 launch packnet_ros depth.launch.py image:=/cam/image_raw ...`."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw', description='input image topic'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info', description='input camera_info'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'depth.yaml')),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='official .ckpt, packnet_ros checkpoint or exported .onnx'),
        DeclareLaunchArgument('namespace', default_value='packnet'),
        DeclareLaunchArgument('rviz', default_value='false'),
        DeclareLaunchArgument('fixed_frame', default_value='camera_color_optical_frame',
                              description="rviz fixed frame: the camera's frame_id (clouds are stamped in it)"),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(share, 'config', 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for camera frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    depth = Node(
        package='packnet_ros', executable='depth_node', name='depth_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {'checkpoint': LaunchConfiguration('checkpoint')}],
        remappings=[('image', LaunchConfiguration('image')),
                    ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                    ('camera_info', LaunchConfiguration('camera_info'))],
    )
    rviz = Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                arguments=['-d', os.path.join(share, 'config', 'packnet.rviz'),
                           '-f', LaunchConfiguration('fixed_frame')],
                condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription(args + [depth, rviz])
