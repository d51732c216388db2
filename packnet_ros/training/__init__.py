"""Self-supervised training: replay buffer, trainer, session policy (triplets come from data.stream)."""
from packnet_ros.data.stream import NEIGHBOURS, SpeedTrack, Triplet, TripletAccumulator, TripletRules
from packnet_ros.training.buffer import ReplayBuffer
from packnet_ros.training.checkpoint_dir import CheckpointDirectory
from packnet_ros.training.session import SessionConfig, StepResult, TrainingSession, Validation
from packnet_ros.training.trainer import HeldOutScore, Trainer, TrainerConfig, TrainerState, Weights

__all__ = ['NEIGHBOURS', 'CheckpointDirectory', 'HeldOutScore', 'ReplayBuffer', 'SessionConfig', 'SpeedTrack',
           'StepResult', 'Trainer', 'TrainerConfig', 'TrainingSession', 'Triplet', 'TripletAccumulator', 'TripletRules',
           'TrainerState', 'Validation', 'Weights']
