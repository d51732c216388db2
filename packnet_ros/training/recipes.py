"""Named training recipes: network and trainer settings compared by benchmarks/bench_learning.py."""
from __future__ import annotations

from dataclasses import dataclass, field

from packnet_ros.training.trainer import TrainerConfig


@dataclass(frozen=True)
class Recipe:
    arch: str = 'PackNetSlim01'
    model_width: float = 0.25
    initial_depth: float = 0.0  # > 0: heads' bias set so a fresh network predicts this (from scratch only)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


RECIPES: dict[str, Recipe] = {
    # The paper's settings, as the original trains (no warm-ups).
    'paper': Recipe(trainer=TrainerConfig(learning_rate=2e-4, warmup_steps=0, velocity_loss_weight=0.1)),
    # What the online demo used before these measurements.
    'online': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=100, velocity_loss_weight=1.0,
                                           velocity_warmup_steps=100)),
    'loss_fast': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=0, velocity_loss_weight=1.0)),
    'direct': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=0, scale_from_speed='direct')),
    'direct_init10': Recipe(initial_depth=10.0, trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=0,
                                                                      scale_from_speed='direct')),
    'direct_scale': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=0, scale_from_speed='direct',
                                                 depth_scale_lr=0.05)),
    'loss_scale': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=0, velocity_loss_weight=1.0,
                                               depth_scale_lr=0.05)),
    'direct_2e4': Recipe(trainer=TrainerConfig(learning_rate=2e-4, warmup_steps=0, scale_from_speed='direct')),
    'direct_scale_2e4': Recipe(trainer=TrainerConfig(learning_rate=2e-4, warmup_steps=0, scale_from_speed='direct',
                                                     depth_scale_lr=0.05)),
}
