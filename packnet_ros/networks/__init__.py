"""Depth and pose networks of PackNet-SfM."""
from packnet_ros.networks.packnet import DEPTH_NETWORKS, PackNet, PackNet01, PackNetSlim01, build_depth_net
from packnet_ros.networks.posenet import PoseNet

__all__ = ['DEPTH_NETWORKS', 'PackNet', 'PackNet01', 'PackNetSlim01', 'PoseNet', 'build_depth_net']
