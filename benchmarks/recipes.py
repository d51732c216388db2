"""Named training recipes: network and trainer settings compared by benchmarks/bench_learning.py."""
from __future__ import annotations

from dataclasses import dataclass, field

from packnet_ros.training.trainer import TrainerConfig


@dataclass(frozen=True)
class Recipe:
    arch: str = 'PackNetSlim01'
    model_width: float = 0.25
    initial_depth: float = 0.0  # > 0: heads' bias set so a fresh network predicts this (from scratch only)
    motion_prior: float = 0.0  # > 0: a fresh PoseNet predicts this many metres forward per frame
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _fast(**options) -> TrainerConfig:
    return TrainerConfig(**{'learning_rate': 1e-3, 'warmup_steps': 0, 'velocity_loss_weight': 1.0, **options})


RECIPES: dict[str, Recipe] = {
    # The paper's settings, as the original trains (no warm-ups).
    'paper': Recipe(trainer=TrainerConfig(learning_rate=2e-4, warmup_steps=0, velocity_loss_weight=0.1)),
    # What the online demo used before these measurements.
    'online': Recipe(trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=100, velocity_loss_weight=1.0,
                                           velocity_warmup_steps=100)),
    'loss_fast': Recipe(trainer=_fast()),
    'loss_dscale': Recipe(trainer=_fast(depth_scale_lr=0.05)),
    'loss_tscale': Recipe(trainer=_fast(translation_scale_lr=0.05)),
    'loss_both': Recipe(trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_lr2e4': Recipe(trainer=_fast(learning_rate=2e-4, depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_vw01': Recipe(trainer=_fast(velocity_loss_weight=0.1, depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_init10': Recipe(initial_depth=10.0, trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_fwd': Recipe(motion_prior=0.5, trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_clip': Recipe(trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05, grad_clip=1.0)),
    'loss_both_fast': Recipe(trainer=_fast(depth_scale_lr=0.2, translation_scale_lr=0.2)),
    'loss_fast_fwd': Recipe(motion_prior=0.5, trainer=_fast()),
    'paper_fwd': Recipe(motion_prior=0.5, trainer=TrainerConfig(learning_rate=2e-4, warmup_steps=0,
                                                                velocity_loss_weight=0.1)),
    'loss_both_fwd_vw01': Recipe(motion_prior=0.5, trainer=_fast(velocity_loss_weight=0.1, depth_scale_lr=0.05,
                                                                 translation_scale_lr=0.05)),
    'loss_both_fwd_lr2e4': Recipe(motion_prior=0.5, trainer=_fast(learning_rate=2e-4, depth_scale_lr=0.05,
                                                                  translation_scale_lr=0.05)),
    'loss_both_fwd_init10': Recipe(motion_prior=0.5, initial_depth=10.0,
                                   trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'loss_both_fwd1': Recipe(motion_prior=1.0, trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    # Adaptation from a trained model (bench_learning --init): the same settings, a lower LR, no scales.
    'adapt': Recipe(trainer=_fast(depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'adapt_lr2e4': Recipe(trainer=_fast(learning_rate=2e-4, depth_scale_lr=0.05, translation_scale_lr=0.05)),
    'adapt_noscale': Recipe(trainer=_fast()),
    'direct': Recipe(trainer=_fast(scale_from_speed='direct')),
    'direct_fwd': Recipe(motion_prior=0.5, trainer=_fast(scale_from_speed='direct')),
    'direct_fwd_dscale': Recipe(motion_prior=0.5, trainer=_fast(scale_from_speed='direct', depth_scale_lr=0.05)),
    'direct_fwd_init10': Recipe(motion_prior=0.5, initial_depth=10.0, trainer=_fast(scale_from_speed='direct')),
}
