"""`packnet-ros demo`: orchestration of the real nodes over ROS 2, recording and the report."""
from packnet_ros.ros.demo.run import DemoOptions, run_demo

__all__ = ['DemoOptions', 'run_demo']
