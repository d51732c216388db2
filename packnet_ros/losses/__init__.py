"""Training losses of PackNet-SfM."""
from packnet_ros.losses.photometric import SelfSupervisedLoss, ssim
from packnet_ros.losses.smoothness import smoothness_loss
from packnet_ros.losses.velocity import travelled_distance, velocity_loss

__all__ = ['SelfSupervisedLoss', 'smoothness_loss', 'ssim', 'travelled_distance', 'velocity_loss']
