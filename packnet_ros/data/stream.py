"""Turn a camera stream plus measured speed into training triplets (t-1, t, t+1).

The distance between two frames is the speed integrated over the interval between their
stamps, with speed linear between odometry samples. A triplet that would teach nothing or
teach something wrong is skipped, and the reason counted.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, fields

import cv2
import numpy as np

from packnet_ros.losses import travelled_distance
from packnet_ros.options import option


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


@dataclass(frozen=True)
class TripletRules:
    """Which frames of a stream make a training triplet: one rule for the training node and for
    offline training (the node's parameters carry the same names).

    stride and context_distance choose the context frames (choose_context): by default the
    nearest frames at least 0.5 m from the target within 5 frames, which the curves chose over
    neighbouring frames (DEVELOPERS.md: on real footage, wider baselines let the photometric
    loss see depth, and slow driving keeps its triplets). min_distance: a context closer than
    this (metres) makes the triplet 'static'. max_frame_gap: seconds allowed between
    consecutive frames. max_speed: faster (or non-finite) speeds are refused. max_speed_delay:
    how long a live stream waits for lagging odometry (offline, every sample is there)."""

    stride: int = option(5, 'frames between target and context frames (by distance: at most)', low=1, high=100)
    context_distance: float = option(0.5, 'metres; > 0: the nearest context frames at least this far (within '
                                          'stride frames); 0: stride frames away', low=0.0)
    min_distance: float = option(0.1, 'metres; closer context frames make a triplet static (skipped)', low=0.0)
    max_frame_gap: float = option(0.5, 'seconds; a larger gap between frames breaks a triplet', low=0.0)
    max_speed: float = option(70.0, 'm/s; faster (or non-finite) speeds are refused as invalid', low=0.0)
    max_speed_delay: float = option(0.5, 'seconds (stream time) a live triplet waits for odometry covering it',
                                    low=0.0)

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f'stride must be >= 1, got {self.stride}')

    @classmethod
    def from_mapping(cls, values: dict) -> 'TripletRules':
        """The fields present in `values` (e.g. a node's parameters); others keep defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


NEIGHBOURS = TripletRules(stride=1, context_distance=0.0)  # consecutive frames, as the original trains


class StreamClock:
    """The order of one stream's stamps: whether a message can follow the newest one so far.

    Reasons for one that cannot: 'unstamped' (not finite), 'duplicate' (the same stamp again:
    drivers and bags do this), 'late' (older than the newest: re-sent, or overtaken on the way)
    and 'time_backwards' (the second message in a row from earlier on, later than the first:
    the stream itself went back, a looping bag or a restarted driver, and starts over from
    here). Only 'time_backwards' means start over; the others are dropped with everything kept.
    """

    def __init__(self):
        self.newest: float | None = None
        self._behind: float | None = None  # the last late stamp

    def check(self, stamp: float) -> str | None:
        if not np.isfinite(stamp):
            return 'unstamped'
        if self.newest is None or stamp > self.newest:
            self.newest, self._behind = stamp, None
            return None
        if stamp == self.newest:
            return 'duplicate'
        if self._behind is not None and stamp > self._behind:
            self.newest, self._behind = stamp, None
            return 'time_backwards'
        self._behind = stamp
        return 'late'


class SpeedTrack:
    """Recent (stamp, speed) samples; answers 'how far did we travel between t0 and t1'.

    A speed that is not finite, negative or above max_speed (m/s) is refused: one absurd
    sample would otherwise teach the network a wrong scale for as long as it stays in the
    replay buffer.
    """

    def __init__(self, max_samples: int = 2000, max_sample_gap: float = 0.5, max_speed: float = 70.0):
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.clock = StreamClock()
        self.max_sample_gap = max_sample_gap
        self.max_speed = max_speed

    def add(self, stamp: float, speed: float) -> str | None:
        """Store a sample; returns a skip reason for an unusable one."""
        if not (np.isfinite(speed) and 0 <= speed <= self.max_speed):
            return 'invalid_speed'
        reason = self.clock.check(stamp)
        if reason == 'time_backwards':
            self.samples.clear()  # a looping bag: start over from this sample
        if reason in (None, 'time_backwards'):
            self.samples.append((stamp, speed))
        return reason

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


Context = tuple[tuple[int, int], tuple[float, float], str | None]


def choose_context(distance: Callable[[int], tuple[float | None, str | None]], rules: TripletRules,
                   reach: tuple[int, int] | None = None) -> Context:
    """The context frames of one target, online and offline alike: (offsets (previous < 0, next
    > 0), their distances in metres, None) or (_, _, skip reason).

    `distance(offset)` is the travelled distance to the frame `offset` frames away, or
    (None, reason). With rules.context_distance 0 the context is `stride` frames away; with
    context_distance > 0 it is the nearest frame on each side at least that far, at most
    `stride` frames (and `reach`, the frames there are on each side) away, the farthest when
    none is: slow motion keeps its triplets and fast motion gets no wider baseline than it
    needs. A context closer than min_distance makes the triplet 'static'."""
    stride, context_distance = rules.stride, rules.context_distance
    offsets, distances = [], []
    for side, available in zip((-1, 1), reach or (stride, stride)):
        farthest = min(stride, available) if context_distance > 0 else stride
        for offset in range(1 if context_distance > 0 else stride, farthest + 1):
            d, reason = distance(side * offset)
            if reason:
                return (0, 0), (0.0, 0.0), reason
            if d >= context_distance:
                break
        offsets.append(side * offset)
        distances.append(d)
    if min(distances) < rules.min_distance:
        return (0, 0), (0.0, 0.0), 'static'
    return (offsets[0], offsets[1]), (distances[0], distances[1]), None


class TripletAccumulator:
    """Keeps the last frames (downsized to the network size) and emits triplets by `rules`.

    A candidate whose odometry has not arrived yet waits up to max_speed_delay seconds (stream
    time) before it is skipped. Both add_frame and add_speed return the triplets that became
    complete. A message stamped 0 is 'unstamped' (its driver does not stamp: a recording's
    own times may start at 0, a live message's never do). Frames and speeds out of order are
    counted by StreamClock's reasons: unstamped, duplicate and late ones are dropped with the
    window kept; time going backwards (a looping bag) starts the window afresh.
    """

    def __init__(self, height: int, width: int, rules: TripletRules | None = None, speed: SpeedTrack | None = None):
        self.rules = rules = rules or TripletRules()
        self.size = (height, width)
        self.speed = speed or SpeedTrack(max_speed=rules.max_speed)
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=2 * rules.stride + 1)
        self.clock = StreamClock()
        # Candidate windows (target in the middle) waiting for odometry; bounded so memory is too.
        self.pending: deque[tuple[tuple[float, np.ndarray], ...]] = deque()
        self.max_pending = 8
        self.skipped: Counter[str] = Counter()
        # Why the last frame or speed given was not used as it came (a skipped reason), or None.
        self.refused: str | None = None

    def add_speed(self, stamp: float, speed: float) -> list[Triplet]:
        reason = self.refused = 'unstamped' if stamp == 0 else self.speed.add(stamp, speed)
        if reason:
            self.skipped[reason] += 1
        return self._resolve(now=None)

    def add_frame(self, stamp: float, rgb: np.ndarray) -> list[Triplet]:
        """Add a frame; returns the triplets that are now complete (usually zero or one)."""
        reason = self.refused = 'unstamped' if stamp == 0 else self.clock.check(stamp)
        if reason:
            self.skipped[reason] += 1
            if reason != 'time_backwards':
                return []
            self.frames.clear()
            self.pending.clear()
        h, w = self.size
        small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        self.frames.append((stamp, np.ascontiguousarray(small, dtype=np.uint8)))
        if len(self.frames) == self.frames.maxlen:
            if np.max(np.diff([f[0] for f in self.frames])) > self.rules.max_frame_gap:
                self.skipped['gap'] += 1
            else:
                self.pending.append(tuple(self.frames))
                if len(self.pending) > self.max_pending:
                    self.pending.popleft()
                    self.skipped['stale_speed'] += 1
        return self._resolve(now=stamp)

    def _resolve(self, now: float | None) -> list[Triplet]:
        out = []
        while self.pending:
            window = self.pending[0]
            middle = self.rules.stride
            target = window[middle]
            offsets, distances, reason = choose_context(
                lambda offset: self.speed.distance(target[0], window[middle + offset][0]), self.rules)
            if reason == 'pending':
                if now is None or now - window[-1][0] <= self.rules.max_speed_delay:
                    break  # odometry may still come: keep order, wait
                reason = 'stale_speed' if self.speed.samples else 'no_speed'
            self.pending.popleft()
            if reason:
                self.skipped[reason] += 1
            else:
                before, after = window[middle + offsets[0]], window[middle + offsets[1]]
                out.append(Triplet(np.stack([before[1], target[1], after[1]]),
                                   np.array(distances, np.float32), target[0]))
        return out
