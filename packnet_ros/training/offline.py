"""Offline training on recorded drives and bags, with the online node's session policy.

A DataLoader feeds batches to a TrainingSession: the same resume, rollback, atomic
checkpoints and validation on held-out triplets as on the robot, and checkpoints that
depth_node loads as they are. Under torchrun each process trains on its share of the data
(DistributedSampler) and the session keeps them in step (training.distributed); only rank 0
writes checkpoints, TensorBoard logs and progress. Checkpoints go to `out`, which every
process must see (one machine, or a shared filesystem across machines).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Subset

from packnet_ros.data.stream import TripletRules
from packnet_ros.data.triplets import BagTopics, DriveTriplets, open_source
from packnet_ros.image import colorize_depth, rgb_to_tensor
from packnet_ros.metrics import image_metrics, mean_metrics
from packnet_ros.training import distributed
from packnet_ros.training.session import SessionConfig, StepResult, TrainingSession

Report = Callable[[StepResult, int, int], None]


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
    tensorboard: bool = True
    topics: BagTopics = field(default_factory=BagTopics)
    session: dict = field(default_factory=dict)


def _collate(triplets: list) -> list:
    return triplets


@dataclass
class Throughput:
    """Where this process's time went: waiting for the DataLoader, or in training steps."""

    processes: int = 1
    steps: int = 0
    images: int = 0  # target images trained on, all processes together
    data_s: float = 0.0
    step_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.data_s + self.step_s, 1e-9)

    @property
    def data_share(self) -> float:
        return self.data_s / max(self.data_s + self.step_s, 1e-9)


@dataclass
class OfflineRun:
    session: TrainingSession
    throughput: Throughput


class HeldOut:
    """Held-out triplets: their loss through the session, and depth metrics where the drive
    has ground truth (Garg crop, 0-80 m), logged with a depth image at every checkpoint."""

    def __init__(self, data: ConcatDataset, indices: list[int]):
        self.triplets = [data[i] for i in indices]
        self.ground_truth = [self._ground_truth(data, i) for i in indices]

    @staticmethod
    def _ground_truth(data: ConcatDataset, index: int) -> np.ndarray | None:
        source = int(np.searchsorted(data.cumulative_sizes, index, side='right'))
        local = index - (data.cumulative_sizes[source - 1] if source else 0)
        dataset = data.datasets[source]
        return dataset.ground_truth(local) if isinstance(dataset, DriveTriplets) else None

    @torch.no_grad()
    def metrics(self, session: TrainingSession) -> tuple[dict | None, np.ndarray | None]:
        """(mean metrics over held-out frames with ground truth, first predicted depth [h,w])."""
        net = session.trainer.depth_net
        net.eval()
        try:
            per_image, first = [], None
            for triplet, gt in zip(self.triplets, self.ground_truth):
                target = rgb_to_tensor(triplet.images[1], session.device)[None]
                depth = (1.0 / net(target).clamp(min=1e-6))[0, 0].float().cpu().numpy()
                first = depth if first is None else first
                if gt is not None:
                    per_image.append(image_metrics(gt, depth, min_depth=1e-3, max_depth=80.0, crop='garg'))
        finally:
            net.train()
        results = [r for r in per_image if r is not None]
        return (mean_metrics(results) if results else None), first


class TensorBoardLog:
    """Losses every step; held-out loss, metrics and a depth image at every checkpoint (rank 0)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def step(self, step: int, result: StepResult, learning_rate: float) -> None:
        for key, value in (result.losses or {}).items():
            self.writer.add_scalar(f'train/{key}', value, step)
        self.writer.add_scalar('train/learning_rate', learning_rate, step)

    def checkpoint(self, step: int, session: TrainingSession, held_out: HeldOut) -> None:
        score = session.trainer.evaluate(held_out.triplets)
        if score is not None:
            for key, value in asdict(score).items():
                self.writer.add_scalar(f'val/{key}', value, step)
        metrics, depth = held_out.metrics(session)
        if metrics:
            for row, errors in (('metric', metrics.metric), ('median_scaled', metrics.median_scaled)):
                for key, value in asdict(errors).items():
                    self.writer.add_scalar(f'val_{row}/{key}', value, step)
            self.writer.add_scalar('val/scale_ratio', metrics.scale_ratio, step)
        if depth is not None:
            self.writer.add_image('val/depth', colorize_depth(depth), step, dataformats='HWC')
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _settings(config: OfflineConfig) -> tuple[SessionConfig, TripletRules]:
    """The session's settings and the triplet rules, from the training node's parameter names."""
    settings = {**config.session, 'checkpoint_dir': config.out, 'min_triplets': 0}
    rule_names = {f.name for f in fields(TripletRules)}
    known = {f.name for f in fields(SessionConfig)} | rule_names
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f'unknown training settings {unknown}; known: {sorted(known)}')
    session = SessionConfig(**{k: v for k, v in settings.items() if k not in rule_names})
    return session, TripletRules.from_mapping(settings)


def train(config: OfflineConfig, report: Report | None = None, logger=None) -> OfflineRun:
    """Train until `steps` (or `epochs` over the data); the session ends with its last checkpoint
    saved. Under torchrun, call it in every process (after distributed.start)."""
    out = Path(config.out)
    if any(out.glob('step_*.ckpt')) and not config.resume:
        raise FileExistsError(f'{out} already holds checkpoints: pass --resume to continue, or choose another --out')
    session_config, rules = _settings(config)
    sources = {path: open_source(path, session_config.height, session_config.width, config.topics, rules)
               for path in config.data}
    empty = [path for path, datasets in sources.items() if sum(len(d) for d in datasets) == 0]
    if empty:
        raise ValueError(f'no usable triplets in {empty} (too short, static, or without speed)')
    data = ConcatDataset([d for datasets in sources.values() for d in datasets if len(d)])
    every = config.holdout_every
    held = [i for i in range(len(data)) if every and i % every == every - 1][:config.holdout_size]
    trained = sorted(set(range(len(data))) - set(held))
    processes = torch.distributed.get_world_size() if distributed.active() else 1
    batch = session_config.batch_size  # per process, as the original's batch per GPU
    session_config.max_steps = config.steps or config.epochs * max(1, len(trained) // (batch * processes))
    session = TrainingSession(session_config, logger)  # saves at max_steps, whatever the period
    main = distributed.is_main()
    held_out = HeldOut(data, held) if main else HeldOut(data, [])
    session.holdout = held_out.triplets
    log = TensorBoardLog(out / 'tensorboard') if main and config.tensorboard else None
    throughput = Throughput(processes)
    try:
        _loop(session, Subset(data, trained), config, report if main else None, log, held_out, throughput)
    except KeyboardInterrupt:
        if not distributed.active():
            session.checkpoint()  # atomic: Ctrl-C loses at most the steps since this save
        raise
    finally:
        if log:
            log.close()
    return OfflineRun(session, throughput)


def _loop(session: TrainingSession, data: Subset, config: OfflineConfig, report: Report | None,
          log: TensorBoardLog | None, held_out: HeldOut, throughput: Throughput) -> None:
    c = session.config
    sampler = None
    if distributed.active():  # equal, disjoint shares per process; the same order for a resumed step
        sampler = DistributedSampler(data, shuffle=True, seed=c.seed + session.step_count, drop_last=True)
    loader = DataLoader(data, batch_size=c.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=len(data) >= c.batch_size, num_workers=config.workers, collate_fn=_collate,
                        persistent_workers=config.workers > 0,
                        generator=torch.Generator().manual_seed(c.seed + session.step_count))
    epoch = 0
    while not session.finished:
        if sampler is not None:
            sampler.set_epoch(epoch)
        waited = time.perf_counter()
        for triplets in loader:
            started = time.perf_counter()
            result = session.step(triplets)
            throughput.data_s += started - waited
            throughput.step_s += time.perf_counter() - started
            throughput.steps += 1
            throughput.images += len(triplets) * throughput.processes
            if result is not None:
                if report:
                    report(result, session.step_count, c.max_steps)
                if log and result.losses:
                    log.step(session.step_count, result, session.trainer.learning_rate())
                if log and result.saved:
                    log.checkpoint(session.step_count, session, held_out)
            if session.finished:
                break
            waited = time.perf_counter()
        epoch += 1
