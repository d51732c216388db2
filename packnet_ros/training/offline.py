"""Offline training on recorded drives and bags, with the online node's session policy.

A DataLoader feeds batches to a TrainingSession: the same resume, rollback, atomic
checkpoints and validation on held-out triplets as on the robot, and checkpoints that
depth_node loads as they are.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from packnet_ros.data.triplets import BagTopics, open_source
from packnet_ros.training.session import SessionConfig, StepResult, TrainingSession


@dataclass
class OfflineConfig:
    """What `packnet-ros train` runs; session settings are SessionConfig's (same names)."""

    data: list[str]
    out: Path
    steps: int = 0  # 0: use epochs
    epochs: int = 1
    workers: int = 2
    holdout_every: int = 20  # every Nth triplet validates instead of training (0: none)
    holdout_size: int = 32
    resume: bool = False
    topics: BagTopics = field(default_factory=BagTopics)
    session: dict = field(default_factory=dict)


def _collate(triplets: list) -> list:
    return triplets


def train(config: OfflineConfig, report: Callable[[StepResult, int, int], None] | None = None,
          logger=None) -> TrainingSession:
    """Train until `steps` (or `epochs` over the data); returns the session, its last checkpoint saved."""
    out = Path(config.out)
    if any(out.glob('step_*.ckpt')) and not config.resume:
        raise FileExistsError(f'{out} already holds checkpoints: pass --resume to continue, or choose another --out')
    settings = {**config.session, 'checkpoint_dir': out, 'min_triplets': 0}
    known = {f.name for f in fields(SessionConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f'unknown training settings {unknown}; known: {sorted(known)}')
    session_config = SessionConfig(**settings)
    sources = [open_source(path, session_config.height, session_config.width, config.topics) for path in config.data]
    empty = [path for path, source in zip(config.data, sources) if len(source) == 0]
    if empty:
        raise ValueError(f'no usable triplets in {empty} (too short, static, or without speed)')
    data = ConcatDataset(sources)
    indices = list(range(len(data)))
    every = config.holdout_every
    held = [i for i in indices if every and i % every == every - 1][:config.holdout_size]
    trained = [i for i in indices if i not in set(held)]
    batch = session_config.batch_size
    session_config.max_steps = config.steps or config.epochs * max(1, len(trained) // batch)
    session = TrainingSession(session_config, logger)  # saves at max_steps, whatever the period
    session.holdout = [data[i] for i in held]
    steps = session_config.max_steps
    if session.finished:
        return session
    loader = DataLoader(Subset(data, trained), batch_size=batch, shuffle=True, drop_last=len(trained) >= batch,
                        num_workers=config.workers, collate_fn=_collate, persistent_workers=config.workers > 0,
                        generator=torch.Generator().manual_seed(session_config.seed + session.step_count))
    try:
        while not session.finished:
            for triplets in loader:
                result = session.step(triplets)
                if result is not None and report:
                    report(result, session.step_count, steps)
                if session.finished:
                    break
    except KeyboardInterrupt:
        session.checkpoint()  # atomic: Ctrl-C loses at most the steps since this save
        raise
    return session
