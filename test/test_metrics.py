"""Depth metrics on hand-computed numbers and on KITTI_tiny ground truth."""
from dataclasses import asdict

import numpy as np
import pytest
import torch

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.metrics import HOLE_FACTOR, METRIC_NAMES, garg_mask, hole_fraction, image_metrics, mean_metrics

from helpers import KITTI_DRIVE, require


def test_hand_computed_metrics_without_crop():
    gt = np.array([[2.0, 4.0], [8.0, 0.0]])      # 0 = no return, ignored
    pred = np.array([[1.0, 4.0], [16.0, 3.0]])
    r = image_metrics(gt, pred, crop=None)
    m = asdict(r.metric)
    assert m['abs_rel'] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert m['sq_rel'] == pytest.approx((1 / 2 + 0 + 64 / 8) / 3)
    assert m['rmse'] == pytest.approx(np.sqrt((1 + 0 + 64) / 3))
    assert m['rmse_log'] == pytest.approx(np.sqrt((np.log(2) ** 2 * 2) / 3))
    assert (m['a1'], m['a2'], m['a3']) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert r.scale_ratio == pytest.approx(4.0 / 4.0)
    assert r.valid_pixels == 3


def test_median_scaling_removes_global_scale():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 70, size=(40, 60))
    r = image_metrics(gt, gt / 3.0, crop=None)
    assert r.scale_ratio == pytest.approx(3.0)
    assert r.median_scaled.abs_rel == pytest.approx(0.0, abs=1e-12)
    assert r.metric.abs_rel == pytest.approx(2 / 3)
    assert r.median_scaled.a1 == 1.0


def test_garg_crop_and_depth_range():
    mask = garg_mask(375, 1242)
    assert mask[153:371, 44:1197].all() and mask.sum() == (371 - 153) * (1197 - 44)
    gt = np.full((10, 10), 100.0)  # beyond max_depth=80
    assert image_metrics(gt, gt, crop=None) is None
    with pytest.raises(ValueError, match='no image'):
        mean_metrics([image_metrics(gt, gt, crop=None)])


def test_prediction_is_resized_to_ground_truth():
    gt = np.full((20, 40), 10.0)
    r = image_metrics(gt, np.full((5, 10), 5.0), crop=None)
    assert r.scale_ratio == pytest.approx(2.0)


def test_kitti_ground_truth_against_itself_and_scaled():
    drive = KittiDrive(require(KITTI_DRIVE))
    gts = np.stack([drive.projected_depth(f) for f in drive.frames])
    same = mean_metrics([image_metrics(g, g) for g in gts])
    assert same.metric.abs_rel == 0 and same.metric.a1 == 1 and same.images == len(drive.frames)
    half = mean_metrics([image_metrics(g, np.where(g > 0, g / 2, 1.0)) for g in gts])
    assert half.scale_ratio == pytest.approx(2.0)
    assert half.metric.abs_rel == pytest.approx(0.5)
    assert half.median_scaled.abs_rel == pytest.approx(0.0, abs=1e-6)
    assert set(asdict(half.metric)) == set(METRIC_NAMES)


def test_hole_fraction_counts_far_pixels_of_the_lower_half_only():
    """A road scene: depth falls from 50 m at the top row to 2 m at the bottom; sky far above.
    A car-sized patch of the lower half read as 1 km is a hole; the sky is not."""
    rows = torch.linspace(50.0, 2.0, 64).view(1, 1, 64, 1).expand(2, 1, 64, 96).clone()
    rows[:, :, :10] = 5000.0  # sky, upper half
    assert hole_fraction(rows) == 0.0
    rows[0, :, 40:52, 30:54] = 1000.0  # 12 x 24 pixels of the first map's 32 x 96 lower half
    assert hole_fraction(rows) == pytest.approx(12 * 24 / (2 * 32 * 96))
    median = float(rows[1].median())
    rows[1, :, 60:, :] = 0.99 * HOLE_FACTOR * median  # far, but not beyond the factor
    assert hole_fraction(rows) == pytest.approx(12 * 24 / (2 * 32 * 96))
