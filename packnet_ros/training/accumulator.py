"""Turn a camera stream plus measured speed into training triplets (t-1, t, t+1).

The distance between two frames is the speed integrated over the interval between their
stamps, with speed linear between odometry samples. A triplet that would teach nothing or
teach something wrong is skipped, and the reason counted.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import cv2
import numpy as np

from packnet_ros.losses import travelled_distance


@dataclass(frozen=True)
class Triplet:
    """Frames [3,h,w,3] uint8 ordered (previous, target, next), the distances from the
    target to each context frame [2] in metres, and (offline, where cameras differ between
    drives) the intrinsics [3,3] at the frames' size."""

    images: np.ndarray
    distances: np.ndarray
    stamp: float
    intrinsics: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.distances.nbytes


class SpeedTrack:
    """Recent (stamp, speed) samples; answers 'how far did we travel between t0 and t1'.

    A speed that is not finite, negative or above max_speed (m/s) is refused: one absurd
    sample would otherwise teach the network a wrong scale for as long as it stays in the
    replay buffer.
    """

    def __init__(self, max_samples: int = 2000, max_sample_gap: float = 0.5, max_speed: float = 70.0):
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.max_sample_gap = max_sample_gap
        self.max_speed = max_speed

    def add(self, stamp: float, speed: float) -> str | None:
        """Store a sample; returns a skip reason for an unusable one."""
        if not (np.isfinite(speed) and 0 <= speed <= self.max_speed) or not np.isfinite(stamp):
            return 'invalid_speed'
        if self.samples and stamp <= self.samples[-1][0]:
            if stamp == self.samples[-1][0]:
                return 'duplicate'  # the same sample again (drivers and bags do this): keep the first
            self.samples.clear()  # time went backwards (a looping bag): start over
            self.samples.append((stamp, speed))
            return 'time_backwards'
        self.samples.append((stamp, speed))
        return None

    def distance(self, t0: float, t1: float) -> tuple[float | None, str | None]:
        """(metres, None), or (None, reason) when the samples do not cover [t0, t1] densely.

        The reason 'pending' means the samples may still arrive (odometry lags the camera).
        """
        lo, hi = min(t0, t1), max(t0, t1)
        if len(self.samples) < 2 or hi > self.samples[-1][0]:
            return None, 'pending'
        stamps = np.fromiter((s[0] for s in self.samples), float)
        speeds = np.fromiter((s[1] for s in self.samples), float)
        if lo < stamps[0]:
            return None, 'no_speed'
        inside = stamps[(stamps >= lo) & (stamps <= hi)]
        bounds = np.concatenate([[stamps[stamps <= lo][-1]], inside, [stamps[stamps >= hi][0]]])
        if np.max(np.diff(bounds)) > self.max_sample_gap:
            return None, 'stale_speed'
        return travelled_distance(stamps, speeds, t0, t1), None


class TripletAccumulator:
    """Keeps the last frames (downsized to the network size) and emits triplets.

    stride: frames between target and context (1 = consecutive). min_distance: a context
    frame closer than this (metres) makes the triplet 'static'. max_frame_gap: seconds
    allowed between consecutive frames of a triplet. A candidate whose odometry has not
    arrived yet waits up to max_speed_delay seconds (stream time) before it is skipped.
    Both add_frame and add_speed return the triplets that became complete. A repeated
    stamp is counted as 'duplicate' and ignored; an earlier one means time went backwards
    (a looping bag) and starts the window afresh.
    """

    def __init__(self, height: int, width: int, stride: int = 1, min_distance: float = 0.2,
                 max_frame_gap: float = 0.5, max_speed_delay: float = 0.5, speed: SpeedTrack | None = None):
        if stride < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        self.size = (height, width)
        self.stride = stride
        self.min_distance = min_distance
        self.max_frame_gap = max_frame_gap
        self.speed = speed or SpeedTrack()
        self.max_speed_delay = max_speed_delay
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=2 * stride + 1)
        # Candidates (before, target, after) waiting for odometry; bounded so memory is too.
        self.pending: deque[tuple[tuple[float, np.ndarray], ...]] = deque()
        self.max_pending = 8
        self.skipped: Counter[str] = Counter()
        self.emitted = 0

    def add_speed(self, stamp: float, speed: float) -> list[Triplet]:
        reason = self.speed.add(stamp, speed)
        if reason:
            self.skipped[reason] += 1
        return self._resolve(now=None)

    def add_frame(self, stamp: float, rgb: np.ndarray) -> list[Triplet]:
        """Add a frame; returns the triplets that are now complete (usually zero or one)."""
        if self.frames and stamp == self.frames[-1][0]:
            self.skipped['duplicate'] += 1
            return []
        if self.frames and stamp < self.frames[-1][0]:
            self.skipped['time_backwards'] += 1
            self.frames.clear()
            self.pending.clear()
        h, w = self.size
        small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        self.frames.append((stamp, np.ascontiguousarray(small, dtype=np.uint8)))
        if len(self.frames) == self.frames.maxlen:
            if np.max(np.diff([f[0] for f in self.frames])) > self.max_frame_gap:
                self.skipped['gap'] += 1
            else:
                self.pending.append((self.frames[0], self.frames[self.stride], self.frames[-1]))
                if len(self.pending) > self.max_pending:
                    self.pending.popleft()
                    self.skipped['stale_speed'] += 1
        return self._resolve(now=stamp)

    def _resolve(self, now: float | None) -> list[Triplet]:
        out = []
        while self.pending:
            before, target, after = self.pending[0]
            distances, reason = [], None
            for context in (before, after):
                d, reason = self.speed.distance(target[0], context[0])
                if reason:
                    break
                distances.append(d)
            if reason == 'pending':
                if now is None or now - after[0] <= self.max_speed_delay:
                    break  # odometry may still come: keep order, wait
                reason = 'stale_speed' if self.speed.samples else 'no_speed'
            self.pending.popleft()
            if reason:
                self.skipped[reason] += 1
            elif min(distances) < self.min_distance:
                self.skipped['static'] += 1
            else:
                self.emitted += 1
                out.append(Triplet(np.stack([before[1], target[1], after[1]]),
                                   np.array(distances, np.float32), target[0]))
        return out
