"""Turn a camera stream plus measured speed into training triplets (t-1, t, t+1).

The distance between two frames is the speed integrated over the interval between their
stamps, with speed linear between odometry samples. A triplet that would teach nothing or
teach something wrong is skipped, and the reason (a Skip) counted. The camera around these
rules (calibration, rectification, frame checks) is data.camera_stream.TripletStream.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np

from packnet_ros.geometry import scale_intrinsics
from packnet_ros.image import resize_area
from packnet_ros.losses import travelled_distance
from packnet_ros.options import option


class Skip(StrEnum):
    """Why a message, frame or triplet was not used. The values are the names counted on
    /diagnostics (skipped_<value>) and in offline planners' skip counts."""

    # the stream's order (StreamClock)
    UNSTAMPED = 'unstamped'
    DUPLICATE = 'duplicate'
    LATE = 'late'
    TIME_BACKWARDS = 'time_backwards'
    # speed (SpeedTrack)
    INVALID_SPEED = 'invalid_speed'
    NO_SPEED = 'no_speed'
    STALE_SPEED = 'stale_speed'
    PENDING = 'pending'  # not a skip yet: odometry covering the triplet may still arrive
    # the triplet (TripletRules)
    GAP = 'gap'
    STATIC = 'static'
    # the camera's input (TripletStream)
    NO_CAMERA_INFO = 'no_camera_info'
    CAMERA_INFO_REJECTED = 'camera_info_rejected'
    BAD_IMAGE = 'bad_image'


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

    def broken(self, stamps: Sequence[float]) -> bool:
        """Whether a window of frame stamps spans a gap above max_frame_gap, or is out of order:
        a triplet across it would pair frames that do not follow each other."""
        steps = np.diff(stamps)
        return bool(np.max(steps) > self.max_frame_gap or np.min(steps) <= 0)

    @classmethod
    def from_mapping(cls, values: dict) -> 'TripletRules':
        """The fields present in `values` (e.g. a node's parameters); others keep defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


NEIGHBOURS = TripletRules(stride=1, context_distance=0.0)  # consecutive frames, as the original trains


class StreamClock:
    """The order of one stream's stamps: whether a message can follow the newest one so far.

    Reasons for one that cannot: UNSTAMPED (not finite), DUPLICATE (the same stamp again:
    drivers and bags do this), LATE (older than the newest: re-sent, or overtaken on the way)
    and TIME_BACKWARDS (the second message in a row from earlier on, later than the first:
    the stream itself went back, a looping bag or a restarted driver, and starts over from
    here). Only TIME_BACKWARDS means start over; the others are dropped with everything kept.
    """

    def __init__(self):
        self.newest: float | None = None
        self._behind: float | None = None  # the last late stamp

    def check(self, stamp: float) -> Skip | None:
        if not np.isfinite(stamp):
            return Skip.UNSTAMPED
        if self.newest is None or stamp > self.newest:
            self.newest, self._behind = stamp, None
            return None
        if stamp == self.newest:
            return Skip.DUPLICATE
        if self._behind is not None and stamp > self._behind:
            self.newest, self._behind = stamp, None
            return Skip.TIME_BACKWARDS
        self._behind = stamp
        return Skip.LATE


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

    @classmethod
    def for_rules(cls, rules: TripletRules, max_samples: int = 2000) -> SpeedTrack:
        """The track a stream by `rules` keeps: speeds above rules.max_speed are refused."""
        return cls(max_samples=max_samples, max_speed=rules.max_speed)

    def add(self, stamp: float, speed: float) -> Skip | None:
        """Store a sample; returns a skip reason for an unusable one."""
        if not (np.isfinite(speed) and 0 <= speed <= self.max_speed):
            return Skip.INVALID_SPEED
        reason = self.clock.check(stamp)
        if reason is Skip.TIME_BACKWARDS:
            self.samples.clear()  # a looping bag: start over from this sample
        if reason in (None, Skip.TIME_BACKWARDS):
            self.samples.append((stamp, speed))
        return reason

    def distance(self, t0: float, t1: float) -> tuple[float | None, Skip | None]:
        """(metres, None), or (None, reason) when the samples do not cover [t0, t1] densely.

        The reason PENDING means the samples may still arrive (odometry lags the camera).
        """
        lo, hi = min(t0, t1), max(t0, t1)
        if len(self.samples) < 2 or hi > self.samples[-1][0]:
            return None, Skip.PENDING
        stamps = np.fromiter((s[0] for s in self.samples), float)
        speeds = np.fromiter((s[1] for s in self.samples), float)
        if lo < stamps[0]:
            return None, Skip.NO_SPEED
        inside = stamps[(stamps >= lo) & (stamps <= hi)]
        bounds = np.concatenate([[stamps[stamps <= lo][-1]], inside, [stamps[stamps >= hi][0]]])
        if np.max(np.diff(bounds)) > self.max_sample_gap:
            return None, Skip.STALE_SPEED
        return travelled_distance(stamps, speeds, t0, t1), None


@dataclass(frozen=True)
class Context:
    """The context frames chosen for one target: offsets (previous < 0, next > 0) from it and
    the distances travelled to them in metres, or the reason there is no triplet."""

    offsets: tuple[int, int] = (0, 0)
    distances: tuple[float, float] = (0.0, 0.0)
    skip: Skip | None = None


def choose_context(speed: SpeedTrack, stamps: Sequence[float], target: int, rules: TripletRules,
                   reach: tuple[int, int] | None = None) -> Context:
    """The context frames of the target `stamps[target]`, online and offline alike.

    With rules.context_distance 0 the context is `stride` frames away; with context_distance
    > 0 it is the nearest frame on each side at least that far, at most `stride` frames (and
    `reach`, the frames there are on each side) away, the farthest when none is: slow motion
    keeps its triplets and fast motion gets no wider baseline than it needs. A context closer
    than min_distance makes the triplet STATIC."""
    stride, context_distance = rules.stride, rules.context_distance
    offsets, distances = [], []
    for side, available in zip((-1, 1), reach or (stride, stride)):
        farthest = min(stride, available) if context_distance > 0 else stride
        for offset in range(1 if context_distance > 0 else stride, farthest + 1):
            d, reason = speed.distance(stamps[target], stamps[target + side * offset])
            if reason:
                return Context(skip=reason)
            if d >= context_distance:
                break
        offsets.append(side * offset)
        distances.append(d)
    if min(distances) < rules.min_distance:
        return Context(skip=Skip.STATIC)
    return Context((offsets[0], offsets[1]), (distances[0], distances[1]))


@dataclass(frozen=True)
class NetworkSize:
    """The size triplets are made at: frames are area-resampled to it and intrinsics scaled with them."""

    height: int
    width: int

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] of any size -> contiguous uint8 [height,width,3]."""
        return np.ascontiguousarray(resize_area(rgb, self.height, self.width), dtype=np.uint8)

    def intrinsics(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """Intrinsics [3,3] of a width x height image -> those of its frames at this size."""
        return scale_intrinsics(K, self.width / width, self.height / height)


class TripletAccumulator:
    """Keeps the last frames (downsized to the network size) and emits triplets by `rules`.

    A candidate whose odometry has not arrived yet waits up to max_speed_delay seconds (stream
    time) before it is skipped. Both add_frame and add_speed return the triplets that became
    complete. A message stamped 0 is UNSTAMPED (its driver does not stamp: a recording's own
    times may start at 0, a live message's never do). Frames and speeds out of order are
    counted by StreamClock's reasons: unstamped, duplicate and late ones are dropped with the
    window kept; time going backwards (a looping bag) starts the window afresh.
    """

    def __init__(self, height: int, width: int, rules: TripletRules | None = None, speed: SpeedTrack | None = None):
        self.rules = rules = rules or TripletRules()
        self.size = NetworkSize(height, width)
        self.speed = speed or SpeedTrack.for_rules(rules)
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=2 * rules.stride + 1)
        self.clock = StreamClock()
        # Candidate windows (target in the middle) waiting for odometry; bounded so memory is too.
        self.pending: deque[tuple[tuple[float, np.ndarray], ...]] = deque()
        self.max_pending = 8
        self.skipped: Counter[Skip] = Counter()
        # Why the last frame or speed given was not used as it came (a skipped reason), or None.
        self.refused: Skip | None = None

    def add_speed(self, stamp: float, speed: float) -> list[Triplet]:
        reason = self.refused = Skip.UNSTAMPED if stamp == 0 else self.speed.add(stamp, speed)
        if reason:
            self.skipped[reason] += 1
        return self._resolve(now=None)

    def add_frame(self, stamp: float, rgb: np.ndarray) -> list[Triplet]:
        """Add a frame (RGB uint8 at any size); returns the triplets that are now complete (usually zero or one)."""
        reason = self.refused = Skip.UNSTAMPED if stamp == 0 else self.clock.check(stamp)
        if reason:
            self.skipped[reason] += 1
            if reason is not Skip.TIME_BACKWARDS:
                return []
            self.frames.clear()
            self.pending.clear()
        self.frames.append((stamp, self.size.fit(rgb)))
        if len(self.frames) == self.frames.maxlen:
            if self.rules.broken([f[0] for f in self.frames]):
                self.skipped[Skip.GAP] += 1
            else:
                self.pending.append(tuple(self.frames))
                if len(self.pending) > self.max_pending:
                    self.pending.popleft()
                    self.skipped[Skip.STALE_SPEED] += 1
        return self._resolve(now=stamp)

    def _resolve(self, now: float | None) -> list[Triplet]:
        out = []
        while self.pending:
            window = self.pending[0]
            middle = self.rules.stride
            context = choose_context(self.speed, [f[0] for f in window], middle, self.rules)
            reason = context.skip
            if reason is Skip.PENDING:
                if now is None or now - window[-1][0] <= self.rules.max_speed_delay:
                    break  # odometry may still come: keep order, wait
                reason = Skip.STALE_SPEED if self.speed.samples else Skip.NO_SPEED
            self.pending.popleft()
            if reason:
                self.skipped[reason] += 1
            else:
                before, target, after = (window[middle + o] for o in (context.offsets[0], 0, context.offsets[1]))
                out.append(Triplet(np.stack([before[1], target[1], after[1]]),
                                   np.array(context.distances, np.float32), target[0]))
        return out
