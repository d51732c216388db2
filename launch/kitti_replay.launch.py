"""Replay a KITTI (or synthetic) drive through depth + online training + evaluation.

    ros2 run packnet_ros packnet-ros kitti-to-bag DRIVE_DIR drive_bag
    ros2 launch packnet_ros kitti_replay.launch.py bag:=drive_bag [rviz:=true]

An evaluation, not a live camera: the player waits until every node is up, then (pace:=true,
the default) waits after each image until depth_node has published its depth, so every
frame of the bag is evaluated however slow the CPU. At the end of the bag (unless loop:=true
or exit_at_end:=false) everything stops and the metrics are written to
<output_dir>/metrics.json; checkpoints go to <output_dir>/checkpoints, where a later replay
resumes training. output_dir defaults to $ROS_HOME/packnet_ros/kitti_replay (~/.ros/...).
Both nodes start from the shipped scale-free model (checkpoint:=none trains from scratch).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

from packnet_ros.ros.launch_support import default_output_dir, path_argument, rviz_if_installed, true, typed

NS = '/packnet'
CAMERA = {'image': '/kitti/camera/image_raw', 'camera_info': '/kitti/camera/camera_info'}
EVALUATED = 2.0  # seconds after the player's exit for the evaluator to take the last depth


def nodes(context):
    player = Node(package='packnet_ros', executable='bag_player', name='bag_player', output='screen', parameters=[{
        'bag': typed('bag', str), 'rate': typed('rate', float), 'loop': typed('loop', bool),
        'wait_for_nodes': [f'{NS}/depth_node', f'{NS}/training_node', f'{NS}/depth_evaluator'],
        'pace_topic': f'{NS}/depth' if true(context, 'pace') else '', 'pace_input': CAMERA['image']}])
    camera = [('image', CAMERA['image']), ('image/compressed', CAMERA['image'] + '/compressed'),
              ('camera_info', CAMERA['camera_info'])]
    config = os.path.join(get_package_share_directory('packnet_ros'), 'config')
    output = LaunchConfiguration('output_dir')
    checkpoint = path_argument(context, 'checkpoint')
    started = [
        player,
        Node(package='packnet_ros', executable='depth_node', name='depth_node', namespace=NS, output='screen',
             remappings=camera,
             parameters=[os.path.join(config, 'depth.yaml'), {'checkpoint': checkpoint}]),
        Node(package='packnet_ros', executable='training_node', name='training_node', namespace=NS,
             output='screen', remappings=camera + [('odom', '/kitti/odom')],
             parameters=[os.path.join(config, 'training.yaml'),
                         {'init_checkpoint': checkpoint,
                          'checkpoint_dir': PathJoinSubstitution([output, 'checkpoints'])}]),
        Node(package='packnet_ros', executable='depth_evaluator', name='depth_evaluator', namespace=NS,
             output='screen', remappings=[('depth_gt', '/kitti/depth_gt')],
             parameters=[{'output_json': PathJoinSubstitution([output, 'metrics.json'])}]),
    ]
    if true(context, 'exit_at_end') and not true(context, 'loop'):
        started.append(RegisterEventHandler(OnProcessExit(target_action=player, on_exit=[
            LogInfo(msg='end of the bag: stopping (exit_at_end:=false keeps the nodes running)'),
            TimerAction(period=EVALUATED, actions=[EmitEvent(event=Shutdown(reason='end of the bag'))])])))
    return started


def generate_launch_description():
    share = get_package_share_directory('packnet_ros')
    config = os.path.join(share, 'config')
    args = [
        DeclareLaunchArgument('bag', description='rosbag2 made by packnet-ros kitti-to-bag'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback speed factor'),
        DeclareLaunchArgument('loop', default_value='false', choices=['true', 'false'],
                              description='play the bag again and again'),
        DeclareLaunchArgument('pace', default_value='true', choices=['true', 'false'],
                              description='wait for depth of every frame (false: real time, the depth node '
                                          'drops frames it cannot keep up with, as with a live camera)'),
        DeclareLaunchArgument('exit_at_end', default_value='true', choices=['true', 'false'],
                              description='stop everything when the bag ends (ignored with loop)'),
        DeclareLaunchArgument('checkpoint', default_value=os.path.join(share, 'models', 'synthetic_scale_free.ckpt'),
                              description='both nodes start from this checkpoint; none = training from scratch'),
        DeclareLaunchArgument('output_dir', default_value=default_output_dir('kitti_replay'),
                              description='metrics.json and checkpoints/ go here'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='start rviz2 (when installed) on the replay'),
        DeclareLaunchArgument('fastdds_profile', default_value=os.path.join(config, 'fastdds.xml'),
                              description='Fast DDS profile with segments large enough for KITTI frames'),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile')),
    ]
    rviz = rviz_if_installed(os.path.join(config, 'kitti_replay.rviz'))
    return LaunchDescription(args + [OpaqueFunction(function=nodes), rviz])
