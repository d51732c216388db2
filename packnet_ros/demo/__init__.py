"""`packnet-ros demo`: orchestration of the real nodes over ROS 2, recording and the report."""
from packnet_ros.demo.run import run_demo

__all__ = ['run_demo']
