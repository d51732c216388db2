"""packnet_ros: metric monocular depth (PackNet-SfM) for ROS 2, ROS-free core."""
__version__ = '0.1.0'
