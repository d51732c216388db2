"""Velocity supervision: predicted translation length must equal the distance travelled.

This is what gives the self-supervised system metric scale: the photometric loss is
blind to a global scale factor, the measured speed is not.
"""
from __future__ import annotations

import numpy as np
import torch


def travelled_distance(stamps: np.ndarray, speeds: np.ndarray, t0: float, t1: float) -> float:
    """Integral of speed over [t0, t1], speed linear between samples (trapezoid rule).

    stamps (s, increasing) and speeds (m/s) are odometry samples; the interval must lie
    within them, since extrapolating a speed profile is a guess, not a measurement.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    speeds = np.asarray(speeds, dtype=np.float64)
    if stamps.ndim != 1 or stamps.shape != speeds.shape or len(stamps) < 2:
        raise ValueError('need at least two (stamp, speed) samples of equal length')
    if np.any(np.diff(stamps) <= 0):
        raise ValueError('odometry stamps must be strictly increasing')
    lo, hi = min(t0, t1), max(t0, t1)
    if lo < stamps[0] or hi > stamps[-1]:
        raise ValueError(f'interval [{lo}, {hi}] is outside the odometry samples [{stamps[0]}, {stamps[-1]}]')
    inner = (stamps > lo) & (stamps < hi)
    t = np.concatenate([[lo], stamps[inner], [hi]])
    v = np.interp(t, stamps, speeds)
    return float(np.sum((v[1:] + v[:-1]) * np.diff(t)) / 2)


def velocity_loss(poses: list[torch.Tensor], distances: torch.Tensor) -> torch.Tensor:
    """Mean over context frames of mean |‖t_pred‖ − distance|.

    poses: N x [B,4,4] predicted target->context transforms; distances [B,N] metres
    travelled between the target and each context frame.
    """
    if distances.shape[-1] != len(poses):
        raise ValueError(f'{len(poses)} poses but distances has shape {tuple(distances.shape)}')
    terms = [(pose[:, :3, 3].norm(dim=-1) - distances[:, j]).abs().mean() for j, pose in enumerate(poses)]
    return sum(terms) / len(terms)
