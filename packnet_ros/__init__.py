"""packnet_ros: metric monocular depth (PackNet-SfM) for ROS 2, ROS-free core."""
import os

# Idle OpenMP threads sleep instead of spinning. On a robot the trainer and the depth node share
# the cores with drivers and planners, where spinning threads fight the very work they wait
# for: a training step beside two CPU-bound processes took 3.3x its idle time with spinning and
# 1.75x with sleeping, at 6 % idle cost (DEVELOPERS.md). It must be set before torch loads its
# OpenMP runtime, which every entry point does after this package's import; an explicit
# setting is kept.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

__version__ = '0.1.0'
