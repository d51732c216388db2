"""Online self-supervised training: triplets from a stream, replay buffer, trainer."""
from packnet_ros.training.accumulator import SKIP_REASONS, SpeedTrack, Triplet, TripletAccumulator
from packnet_ros.training.buffer import ReplayBuffer
from packnet_ros.training.trainer import Trainer

__all__ = ['SKIP_REASONS', 'ReplayBuffer', 'SpeedTrack', 'Trainer', 'Triplet', 'TripletAccumulator']
