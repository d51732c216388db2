"""Offline evaluation as the paper reports it: the Eigen split of KITTI raw, Garg crop, 80 m cap.

A split file names frames; each is read with its ground truth (packnet-sfm's
`proj_depth/velodyne` maps when present, else the velodyne scan projected into the
camera), depth is predicted in batches, and every image's metrics come from
`packnet_ros.metrics`, so the numbers here and anywhere else in the package agree.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from packnet_ros.data.kitti import KittiDrive, KittiError
from packnet_ros.data.split import Sample
from packnet_ros.image import read_rgb, to_tensor
from packnet_ros.metrics import METRIC_NAMES, DepthMetrics, Errors, image_metrics, mean_metrics
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import ServingPlan


def drive_samples(drive_dir: str | Path, camera: int = 2) -> list[Sample]:
    """Every frame of one drive folder (when no split file is given)."""
    drive = KittiDrive(drive_dir, camera)
    return [Sample(drive.path, camera, frame) for frame in drive.frames]


class EvalFrames(Dataset):
    """(network input [3,h,w] in [0,1], ground truth [H,W] metres with 0 = none, index)."""

    def __init__(self, samples: list[Sample], height: int, width: int):
        self.samples, self.size = samples, (height, width)
        self.drives: dict[tuple[Path, int], KittiDrive] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, int]:
        s = self.samples[index]
        key = (s.drive, s.camera)
        if key not in self.drives:
            self.drives[key] = KittiDrive(s.drive, s.camera)
        drive = self.drives[key]
        rgb = read_rgb(drive.image_path(s.frame))
        gt = drive.ground_truth(s.frame, rgb.shape[:2])
        if gt is None:
            gt = np.zeros(rgb.shape[:2], np.float32)
        return to_tensor(rgb, *self.size)[0], gt, index


def _collate(items: list) -> tuple[torch.Tensor, list[np.ndarray], list[int]]:
    return torch.stack([i[0] for i in items]), [i[1] for i in items], [i[2] for i in items]


@dataclass
class EvalConfig:
    checkpoint: str
    samples: list[Sample]
    plan: ServingPlan  # packnet_ros.serving.provision.resolve: backend, precision and device
    height: int | None = None  # None: the size the checkpoint was trained at
    width: int | None = None
    batch_size: int = 8
    workers: int = 2
    min_depth: float = 0.0
    max_depth: float = 80.0
    crop: str | None = 'garg'


@dataclass
class EvalResult:
    checkpoint: str
    input_size: tuple[int, int]
    images: int  # with valid ground truth
    without_ground_truth: int
    metric: Errors
    median_scaled: Errors
    scale_ratio: float
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(config: EvalConfig, progress: Callable[[int], None] | None = None) -> EvalResult:
    """Metrics of a checkpoint over the samples, metric and median-scaled (gt/pred per image)."""
    estimator = DepthEstimator.provision(config.checkpoint, config.plan, (config.height, config.width))
    loader = DataLoader(EvalFrames(config.samples, estimator.height, estimator.width),
                        batch_size=config.batch_size, num_workers=config.workers, collate_fn=_collate)
    per_image: list[DepthMetrics | None] = [None] * len(config.samples)
    for batch, gts, indices in loader:
        depth = estimator.infer_tensor(batch)[:, 0].cpu().numpy()
        for pred, gt, index in zip(depth, gts, indices):
            per_image[index] = image_metrics(gt, pred, min_depth=config.min_depth, max_depth=config.max_depth,
                                             crop=config.crop)
        if progress:
            progress(len(indices))
    missing = sum(r is None for r in per_image)
    if missing == len(per_image):
        raise KittiError('no frame has ground truth: expected proj_depth/velodyne/image_0X/FRAME.npz '
                         'or velodyne_points/data/FRAME.bin in the drive folders')
    mean = mean_metrics(per_image)
    settings = {'precision': config.plan.precision, 'min_depth': config.min_depth, 'max_depth': config.max_depth,
                'crop': config.crop, 'backend': estimator.backend.name}
    return EvalResult(config.checkpoint, (estimator.height, estimator.width), mean.images, missing,
                      mean.metric, mean.median_scaled, mean.scale_ratio, settings)


def format_table(result: EvalResult) -> str:
    """The paper's table: one row without and one with per-image median scaling."""
    header = '| ' + ' | '.join(['', *METRIC_NAMES]) + ' |'
    rule = '|' + '---|' * (len(METRIC_NAMES) + 1)
    rows = [f'| {name} | ' + ' | '.join(f'{getattr(values, k):.3f}' for k in METRIC_NAMES) + ' |'
            for name, values in (('metric', result.metric), ('median-scaled', result.median_scaled))]
    notes = (f'{result.images} images ({result.without_ground_truth} without ground truth skipped), '
             f'input {result.input_size[1]}x{result.input_size[0]}, gt/pred scale ratio {result.scale_ratio:.3f}')
    return '\n'.join([header, rule, *rows, '', notes])
