"""Eigen/KITTI depth metrics, metric and median-scaled, plus the gt/pred scale ratio."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

METRIC_NAMES = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3')
# Garg et al. (ECCV 2016) crop, as fractions of the KITTI image size.
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def garg_mask(h: int, w: int) -> np.ndarray:
    y1, y2, x1, x2 = GARG_CROP
    mask = np.zeros((h, w), dtype=bool)
    mask[int(y1 * h):int(y2 * h), int(x1 * w):int(x2 * w)] = True
    return mask


def resize_depth(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners) resize of a depth map to the ground-truth size, as the original does."""
    if pred.shape == tuple(shape):
        return pred
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode='bilinear', align_corners=True)[0, 0].numpy()


@dataclass(frozen=True)
class Errors:
    """The Eigen/KITTI errors of depth against ground truth (METRIC_NAMES)."""

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    a1: float
    a2: float
    a3: float

    @classmethod
    def of(cls, gt: np.ndarray, pred: np.ndarray) -> 'Errors':
        thresh = np.maximum(gt / pred, pred / gt)
        diff = gt - pred
        return cls(abs_rel=float(np.mean(np.abs(diff) / gt)), sq_rel=float(np.mean(diff ** 2 / gt)),
                   rmse=float(np.sqrt(np.mean(diff ** 2))),
                   rmse_log=float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
                   a1=float(np.mean(thresh < 1.25)), a2=float(np.mean(thresh < 1.25 ** 2)),
                   a3=float(np.mean(thresh < 1.25 ** 3)))

    @classmethod
    def mean(cls, many: list['Errors']) -> 'Errors':
        return cls(**{k: float(np.mean([getattr(e, k) for e in many])) for k in METRIC_NAMES})


@dataclass(frozen=True)
class Headline:
    """The numbers a person reads first: metric and median-scaled abs_rel (is the depth right,
    is its shape right), metric a1, and the scale ratio median(gt)/median(pred)."""

    abs_rel: float
    abs_rel_median_scaled: float
    a1: float
    scale_ratio: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class DepthMetrics:
    """Depth judged against ground truth, as a metric depth and up to scale: the errors of the
    prediction as it is and median-scaled (times median(gt)/median(pred) per image), and that
    scale ratio. One image's (images 1), or the mean over `images` images."""

    metric: Errors
    median_scaled: Errors
    scale_ratio: float
    images: int = 1
    valid_pixels: int = 0

    def summary(self) -> Headline:
        return Headline(self.metric.abs_rel, self.median_scaled.abs_rel, self.metric.a1, self.scale_ratio)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> 'DepthMetrics':
        """Back from to_dict() (e.g. read from an evaluation JSON file)."""
        return cls(metric=Errors(**values['metric']), median_scaled=Errors(**values['median_scaled']),
                   scale_ratio=values['scale_ratio'], images=values.get('images', 1),
                   valid_pixels=values.get('valid_pixels', 0))


def image_metrics(gt: np.ndarray, pred: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0,
                  crop: str | None = 'garg') -> DepthMetrics | None:
    """Metrics of one depth map pair [H,W] (metres; gt 0 or NaN = no return), or None when no
    ground-truth pixel is valid."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = resize_depth(np.asarray(pred), gt.shape).astype(np.float64)
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth) & np.isfinite(pred) & (pred > 0)
    if crop == 'garg':
        valid &= garg_mask(*gt.shape)
    elif crop is not None:
        raise ValueError(f'unknown crop {crop!r}; expected "garg" or None')
    if not valid.any():
        return None
    gt, pred = gt[valid], pred[valid]
    ratio = float(np.median(gt) / np.median(pred))
    return DepthMetrics(metric=Errors.of(gt, np.clip(pred, min_depth, max_depth)),
                        median_scaled=Errors.of(gt, np.clip(pred * ratio, min_depth, max_depth)),
                        scale_ratio=ratio, valid_pixels=int(valid.sum()))


def mean_metrics(per_image: list[DepthMetrics | None]) -> DepthMetrics:
    """Average of image_metrics results over the images that had valid ground truth."""
    results = [r for r in per_image if r is not None]
    if not results:
        raise ValueError('no image had valid ground-truth depth')
    return DepthMetrics(metric=Errors.mean([r.metric for r in results]),
                        median_scaled=Errors.mean([r.median_scaled for r in results]),
                        scale_ratio=float(np.mean([r.scale_ratio for r in results])),
                        images=sum(r.images for r in results), valid_pixels=sum(r.valid_pixels for r in results))


# A pixel of the lower image half farther than this many times its image's median depth is a hole.
HOLE_FACTOR = 20.0


def hole_fraction(depth: torch.Tensor, factor: float = HOLE_FACTOR) -> float:
    """Fraction of the lower half of depth maps [B,1,H,W] that reads farther than `factor` x
    each map's median: the infinite-depth holes self-supervised depth digs where things move
    with the camera (the car ahead in traffic), needing no ground truth to see. The lower half
    holds the ground and what stands on it, near for a camera looking about level; the sky,
    rightly far, is in the upper half."""
    median = depth.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    lower = depth[..., depth.shape[-2] // 2:, :]
    return float((lower > factor * median).float().mean())
