"""A training session: the policy that keeps a long, unattended training run safe.

It owns the trainer, the replay buffer, the held-out triplets and the checkpoint folder:
resume from the newest valid checkpoint, skip non-finite steps, roll back when the running
loss diverges, save atomically with rotation, and validate a checkpoint on held-out
triplets before saying it should be announced. It knows nothing of ROS: the training node
feeds it triplets and publishes what it announces; offline training drives it the same way.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from packnet_ros.data.stream import Triplet
from packnet_ros.devices import resolve_device
from packnet_ros.model.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from packnet_ros.networks import DEPTH_NETWORKS, PoseNet
from packnet_ros.options import option, redefault
from packnet_ros.training import distributed
from packnet_ros.training.buffer import ReplayBuffer
from packnet_ros.training.checkpoint_dir import CheckpointDirectory
from packnet_ros.training.trainer import (
    HeldOutScore,
    StepInterrupted,
    Trainer,
    TrainerConfig,
    TrainerState,
    Weights,
    fresh_networks,
)

EMA = 0.05  # weight of the newest step in the running loss
# Learning rates the curves chose (DEVELOPERS.md): from random weights 2e-4 is too slow for the
# learnt scales and collapsed on KITTI_tiny; a trained model adapts best at the paper's 2e-4.
SCRATCH_LR = 1e-3
FINE_TUNE_LR = 2e-4
RATE_WINDOW_S = 2.0
# Steps in a row that fail or are skipped before the session goes back to known-good weights
# rather than spinning (poisoned state gives every step a non-finite loss).
MAX_FAILED_STEPS = 20


@dataclass(kw_only=True)
class SessionConfig(TrainerConfig):
    """What a session needs: how to train (TrainerConfig's fields, inherited) plus the policy
    around it. The training node's parameters carry the same names."""

    checkpoint_dir: str | Path
    # The recipe the learning curves chose (DEVELOPERS.md), as the training node's defaults;
    # TrainerConfig's own stay the paper's, which the named recipes build on.
    learning_rate: float = option(0.0, 'Adam learning rate of the networks; 0 = 1e-3 from random weights, 2e-4 from '
                                       'init_checkpoint (what the learning curves chose)', low=0.0, high=1.0)
    warmup_steps: int = redefault(TrainerConfig, 'warmup_steps', 0)
    velocity_loss_weight: float = redefault(TrainerConfig, 'velocity_loss_weight', 1.0)
    depth_scale_lr: float = redefault(TrainerConfig, 'depth_scale_lr', 0.05)
    translation_scale_lr: float = redefault(TrainerConfig, 'translation_scale_lr', 0.05)
    height: int = option(96, 'network input height (multiple of 32)', low=32, high=4096)
    width: int = option(320, 'network input width (multiple of 32)', low=32, high=4096)
    init_checkpoint: str = option('', 'official .ckpt or packnet_ros checkpoint to start from; empty = from scratch')
    arch: str = option('PackNetSlim01', 'architecture when starting from scratch', choices=tuple(DEPTH_NETWORKS))
    model_width: float = option(0.25, 'channel width factor when starting from scratch', low=0.01, high=4.0)
    seed: int = option(0, 'seed for initialising networks trained from scratch (reproducible runs)', low=0)
    device: str = option('auto', 'auto, cpu, cuda or cuda:N')
    initial_depth: float = option(0.0, 'metres a network trained from scratch predicts at first (0 = the heads\' '
                                       'default)', low=0.0)
    motion_prior: float = option(0.5, 'metres per frame a fresh PoseNet predicts along the optical axis (0 = none); '
                                      'for a camera facing the direction of travel', low=0.0, high=100.0)
    batch_size: int = option(4, 'triplets per step', low=1, high=1024)
    buffer_triplets: int = option(500, 'replay buffer size in triplets', low=1)
    buffer_mb: float = option(256.0, 'replay buffer size in MiB', low=1.0)
    min_triplets: int = option(8, 'triplets in the buffer before training starts', low=1)
    holdout_every: int = option(10, 'every Nth triplet goes to the held-out set instead of the buffer (0 = none)',
                                low=0)
    holdout_size: int = option(8, 'held-out triplets kept (most recent)', low=0)
    save_every_steps: int = option(200, 'checkpoint period in steps', low=1)
    save_every_seconds: float = option(300.0, 'checkpoint period in seconds (whichever comes first)', low=0.0)
    keep_last: int = option(3, 'checkpoints kept in checkpoint_dir', low=1)
    validate_before_announce: bool = option(True, 'announce only if held-out loss is no worse than the last '
                                                  'announced')
    divergence_factor: float = option(3.0, 'roll back when the running loss exceeds this multiple of the last '
                                           'saved one', low=1.0)
    max_steps: int = option(0, 'stop training after this many steps (0 = never)', low=0)

    @classmethod
    def from_mapping(cls, values: dict) -> 'SessionConfig':
        """The fields present in `values` (e.g. a node's parameters); others keep defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def trainer(self) -> TrainerConfig:
        values = {f.name: getattr(self, f.name) for f in fields(TrainerConfig)}
        values['learning_rate'] = self.learning_rate or (FINE_TUNE_LR if self.init_checkpoint else SCRATCH_LR)
        return TrainerConfig(**values)


# A candidate whose translations agree with the measured distances within this fraction
# passes the velocity check even if the announced one agreed better (noise, not drift).
VELOCITY_TOLERANCE = 0.05
# "No worse" in a loss means not worse by more than this fraction: the rounding of the same
# warp computed at another scale, far below what a training step changes.
LOSS_TOLERANCE = 1e-3
# A candidate may read this fraction of the lower image half as holes even if the announced
# model read less: a sliver of sky or a far road end, not a collapse (collapsed: 10-30 %).
HOLE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Validation:
    """Held-out scores of a new checkpoint and of the one announced before it (at the start:
    the model the session began from). A candidate is announced only if it is no worse in
    every respect: the photometric loss sees the structure, the velocity consistency sees
    PoseNet's scale, the photometric loss at measured motion sees the depth's scale (a
    scale-drifted model, whose own motion still explains the frames, fails there), and the
    hole fraction sees the collapse that all the losses reward: objects moving with the camera
    read as infinitely far."""

    candidate: HeldOutScore
    announced: HeldOutScore

    @property
    def failures(self) -> list[str]:
        """What the candidate is worse in, in words; empty when it passed."""
        c, a = self.candidate, self.announced
        slack = 1 + LOSS_TOLERANCE
        checks = (('held-out loss', c.photometric, a.photometric, c.photometric <= a.photometric * slack),
                  ('loss at measured motion', c.metric_photometric, a.metric_photometric,
                   c.metric_photometric <= a.metric_photometric * slack),
                  ('velocity error', c.velocity, a.velocity, c.velocity <= max(a.velocity, VELOCITY_TOLERANCE)),
                  ('depth holes', c.holes, a.holes, c.holes <= max(a.holes, HOLE_TOLERANCE)))
        return [f'{name} {mine:.4f} > {theirs:.4f}' for name, mine, theirs, ok in checks if not ok]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class StepResult:
    """What one call of step() did. losses is None when the step was skipped."""

    losses: dict[str, float] | None
    error: str = ''
    rolled_back_to: Path | None = None
    recovered: bool = False  # failures in a row sent the weights back (to rolled_back_to, or announced ones)
    saved: Path | None = None
    announce: Path | None = None


@dataclass
class SessionStats:
    triplets: int = 0
    nonfinite_steps: int = 0
    failed_steps: int = 0
    rollbacks: int = 0
    failed_saves: int = 0
    not_announced: int = 0
    steps_per_s: float = 0.0
    loss_ema: float = math.nan
    losses: dict[str, float] = field(default_factory=dict)
    last_saved: Path | None = None
    announced: Path | None = None
    last_validation: Validation | None = None
    rejected_on_resume: list[str] = field(default_factory=list)
    failing_steps: int = 0  # failed or skipped steps since the last good one
    save_error: str = ''  # why the latest save failed; empty when it worked


class TrainingSession:
    """Thread-safe where it must be: add() from input callbacks, step() from one trainer thread,
    stop() and save() from the thread that shuts the session down while a step is in flight."""

    def __init__(self, config: SessionConfig, logger=None):
        self.config = config
        self.log = logger or logging.getLogger(__name__)
        self.device = resolve_device(config.device)
        self.folder = CheckpointDirectory(config.checkpoint_dir)
        self.stats = SessionStats()
        self.lock = threading.Lock()
        self.buffer = ReplayBuffer(config.buffer_triplets, int(config.buffer_mb * 2 ** 20), seed=config.seed)
        self.holdout: list[Triplet] = []
        self.has_intrinsics = False
        self.trainer, self.origin = self._start()
        self.saved_ema = math.nan  # running loss when the last checkpoint was saved
        self.saved_step = self.trainer.step_count  # what is on disk already (resumed, or nothing learnt)
        # The model to beat: what the session started from, then each announced checkpoint.
        self.announced_weights: Weights = self.trainer.weights()
        self._last_save = self._window_start = time.monotonic()
        self._window_steps = 0

    # ------------------------------------------------------------------ start

    def _start(self) -> tuple[Trainer, str]:
        """Resume from the newest valid checkpoint, else start from init_checkpoint, else scratch."""
        c = self.config
        ckpt, rejected = self.folder.newest_valid()
        self.stats.rejected_on_resume = rejected
        for reason in rejected:
            self.log.warning(f'passing over a checkpoint that cannot be resumed: {reason}')
        resumed = ckpt is not None
        if ckpt is None and c.init_checkpoint:
            ckpt = load_checkpoint(c.init_checkpoint)
        if ckpt is not None:
            depth_net, pose_net = ckpt.networks()
            pose_net = pose_net or PoseNet()
        else:
            torch.manual_seed(c.seed)
            depth_net, pose_net = fresh_networks(c.arch, c.model_width, c.initial_depth, c.motion_prior)
        trainer = Trainer(depth_net, pose_net, np.eye(3), c.trainer(), device=self.device)
        if resumed:
            self._restore(trainer, ckpt, self.log)
            origin = f'resumed from {ckpt.path} at step {ckpt.step}'
        else:
            origin = f'initialised from {ckpt.path}' if ckpt is not None else 'from scratch'
        self.log.info(f'training {depth_net.arch}(width={depth_net.width:g}) at {c.width}x{c.height} '
                      f'on {self.device}, {origin}')
        return trainer, origin

    @staticmethod
    def _restore(trainer: Trainer, ckpt: Checkpoint, log: logging.Logger) -> None:
        weights = Weights(ckpt.depth_state, ckpt.pose_state or trainer.pose_net.state_dict(), ckpt.min_depth,
                          trainer.depth_net.depth_scale)
        unusable = trainer.restore(TrainerState(weights, ckpt.optimizer, ckpt.step))
        if unusable:
            log.warning(f'{ckpt.path}: optimizer moments start afresh, the saved ones cannot be used: {unusable}')

    # ------------------------------------------------------------------ input

    def set_intrinsics(self, K: np.ndarray) -> None:
        """Camera intrinsics [3,3] at the training resolution."""
        with self.lock:
            self.trainer.set_intrinsics(K)
            self.has_intrinsics = True

    def add(self, triplets: Iterable[Triplet]) -> None:
        """New triplets: every holdout_every-th is held out for validation, the rest train."""
        c = self.config
        with self.lock:
            for triplet in triplets:
                self.stats.triplets += 1
                if c.holdout_every > 0 and self.stats.triplets % c.holdout_every == 0:
                    self.holdout = (self.holdout + [triplet])[-c.holdout_size:]
                else:
                    self.buffer.add(triplet)

    @property
    def step_count(self) -> int:
        return self.trainer.step_count

    @property
    def finished(self) -> bool:
        return bool(self.config.max_steps) and self.trainer.step_count >= self.config.max_steps

    def ready(self) -> bool:
        with self.lock:
            return self._can_train()

    def _can_train(self) -> bool:
        return self.has_intrinsics and len(self.buffer) >= self.config.min_triplets and not self.finished

    # ------------------------------------------------------------------ training

    def step(self, batch: list[Triplet] | None = None) -> StepResult | None:
        """One optimisation step plus the policy around it, on `batch` or on a sample of the
        replay buffer; None when not ready to train."""
        with self.lock:
            if batch is None:
                if not self._can_train():
                    return None
                batch = self.buffer.sample(self.config.batch_size)
            elif self.finished:
                return None
        try:
            losses = self.trainer.step(batch)
        except StepInterrupted:
            return None
        except distributed.DistributedError:
            raise  # the processes cannot go on apart: the run stops, its last checkpoint resumable
        except Exception as exc:  # noqa: BLE001 - e.g. a camera that changed size mid-run: the run goes on
            self.stats.failed_steps += 1
            return self._failed(repr(exc))
        if losses is None:
            self.stats.nonfinite_steps += 1
            return self._failed('non-finite loss')
        s = self.stats
        s.failing_steps = 0
        s.losses = losses
        s.loss_ema = losses['loss'] if math.isnan(s.loss_ema) else (1 - EMA) * s.loss_ema + EMA * losses['loss']
        self._update_rate()
        result = StepResult(losses)
        if self._diverged():
            result.rolled_back_to = self.roll_back()
            return result
        c, now = self.config, time.monotonic()
        due = now - self._last_save >= c.save_every_seconds  # rank 0's clock decides for all processes
        if self.trainer.step_count % c.save_every_steps == 0 or distributed.agree(due) or self.finished:
            result.saved, result.announce = self.checkpoint()
        return result

    def _failed(self, error: str) -> StepResult:
        """A step that taught nothing; after MAX_FAILED_STEPS in a row, back to good weights."""
        result = StepResult(None, error=error)
        self.stats.failing_steps += 1
        if self.stats.failing_steps >= MAX_FAILED_STEPS:
            self.log.error(f'{self.stats.failing_steps} training steps in a row failed (latest: {error}): '
                           'going back to the last good weights')
            result.rolled_back_to, result.recovered = self.recover(), True
        return result

    def recover(self) -> Path | None:
        """Back to the last saved checkpoint, or (none saved, or it no longer loads) to the
        weights last announced or started from, with fresh optimizer moments."""
        self.stats.failing_steps = 0
        path = self.roll_back() if self.stats.last_saved is not None else None
        if path is None:
            with self.trainer.commit_lock:
                self.trainer.reset(self.announced_weights)
            self.stats.rollbacks += 1
        return path

    def _update_rate(self) -> None:
        self._window_steps += 1
        now = time.monotonic()
        if now - self._window_start >= RATE_WINDOW_S:
            self.stats.steps_per_s = self._window_steps / (now - self._window_start)
            self._window_start, self._window_steps = now, 0

    def _diverged(self) -> bool:
        diverged = (self.stats.last_saved is not None and not math.isnan(self.saved_ema)
                    and self.stats.loss_ema > self.config.divergence_factor * self.saved_ema)
        return distributed.agree(diverged)

    def roll_back(self) -> Path | None:
        """Back to the last saved checkpoint: weights, optimizer moments and step."""
        path = self.stats.last_saved
        try:
            with self.trainer.commit_lock:
                self._restore(self.trainer, load_checkpoint(path), self.log)
                self.saved_step = self.trainer.step_count
        except CheckpointError as exc:  # damaged on disk since: keep going, stop comparing against it
            self.log.error(f'running loss diverged but {exc}; training on')
            self.saved_ema = self.stats.loss_ema
            return None
        self.stats.loss_ema = self.saved_ema
        self.stats.rollbacks += 1
        self.log.warning(f'running loss diverged: rolled back to {path}')
        return path

    def checkpoint(self) -> tuple[Path | None, Path | None]:
        """Save now; (saved path, path to announce or None). A save that fails keeps training."""
        t, c = self.trainer, self.config
        self._last_save = time.monotonic()
        path = self._save()
        if not distributed.agree(path is not None):
            self.stats.failed_saves += 1
            return None, None
        self.stats.last_saved, self.saved_ema = path, self.stats.loss_ema
        if not distributed.is_main():
            return path, None
        self.folder.prune(c.keep_last, protect=(self.stats.announced, path))
        with t.commit_lock:  # validation swaps the announced weights in and out
            if not self._finite_depth():
                self.stats.not_announced += 1
                self.log.error(f'saved {path.name}; not announced: its depth is not finite')
                return path, None
            validation = self._validate() if c.validate_before_announce else None
            if validation is not None and not validation.passed:
                self.stats.not_announced += 1
                self.log.info(f'saved {path.name}; not announced, worse than the announced model: '
                              + ', '.join(validation.failures))
                return path, None
            self.announced_weights = t.weights()
        self.stats.announced = path
        self.log.info(f'announcing {path} (step {t.step_count}, loss {self.stats.loss_ema:.4f})')
        return path, path

    def _save(self) -> Path | None:
        """Write the live state (rank 0 only); its path, or None when the write failed."""
        t, c = self.trainer, self.config
        with t.commit_lock:
            t.fold_scales()
            path = self.folder.path_for(t.step_count)
            if distributed.is_main():  # one writer; the others learn from it whether the save worked
                try:
                    save_checkpoint(path, t.depth_net, t.pose_net, step=t.step_count,
                                    input_size=(c.height, c.width), optimizer=t.optimizer.state_dict(),
                                    extra={'loss_ema': self.stats.loss_ema})
                except (CheckpointError, OSError) as exc:
                    self.stats.save_error = f'could not save a checkpoint at step {t.step_count}: {exc}'
                    self.log.error(self.stats.save_error)
                    return None
                self.stats.save_error = ''
            self.saved_step = t.step_count
            return path

    def stop(self) -> None:
        """Drop the step in flight and take no more: the run is ending."""
        self.trainer.stop()

    def save(self, timeout: float = -1) -> Path | None:
        """Save the last completed step unless it is on disk already, without validating or
        announcing: what a stopping run keeps (it resumes from there). Safe while a step of
        another thread is still in flight. The path written, or None (also when the trainer's
        own checkpoint, which saves first, kept the state busy beyond `timeout` seconds)."""
        lock = self.trainer.commit_lock
        if not lock.acquire(timeout=timeout):
            return None
        try:
            if self.trainer.step_count == self.saved_step:
                return None
            path = self._save()
        finally:
            lock.release()
        if path is not None:
            self.stats.last_saved = path
            self.folder.prune(self.config.keep_last, protect=(self.stats.announced, path))
        return path

    def _finite_depth(self) -> bool:
        """The probe every announcement passes, validated or not: finite depth on a held-out or
        buffered frame (finite weights can still overflow)."""
        with self.lock:
            probe = self.holdout[:1] or self.buffer.sample(1)
        return not probe or self.trainer.finite_depth(probe)

    def _validate(self) -> Validation | None:
        """Held-out scores of the live weights vs the last announced ones, on the same triplets
        (None when there is nothing to compare with)."""
        with self.lock:
            holdout = list(self.holdout)
        if not holdout:
            return None
        validation = Validation(self.trainer.evaluate(holdout),
                                self.trainer.evaluate(holdout, self.announced_weights))
        self.stats.last_validation = validation
        return validation

    def buffer_fill(self) -> tuple[int, int, int]:
        """(triplets in the buffer, bytes, held-out triplets)."""
        with self.lock:
            return len(self.buffer), self.buffer.nbytes, len(self.holdout)
