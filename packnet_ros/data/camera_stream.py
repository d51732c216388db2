"""One camera's stream (calibration, frames) plus measured speed -> training triplets, without ROS.

The training node and the bag reader both feed their messages through a TripletStream, as
plain numbers, so that a camera on the robot and its recording train on the same triplets:
the same checks, rectification, network size and intrinsics, and the same skip reasons.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, Union

import numpy as np

from packnet_ros.data.decode import ConversionError
from packnet_ros.data.stream import Skip, Triplet, TripletAccumulator, TripletRules
from packnet_ros.geometry.distortion import Calibration, Rectifier, RectifierCache

T = TypeVar('T')
# A value, or what decodes it: called only when the stream can use the value, so that nothing
# is decoded for nothing; the ConversionError it raises is counted as the input's skip reason.
Lazy = Union[T, Callable[[], T]]


@dataclass(frozen=True)
class Refusal:
    """Why the last input was not used as it came, and what its decoder said (or '')."""

    reason: Skip
    detail: str = ''


def _value(lazy: Lazy[T]) -> T:
    return lazy() if callable(lazy) else lazy


class TripletStream:
    """Camera calibrations, frames (stamp in seconds, RGB uint8 at any size) and speed samples
    in; triplets at the network size out, with every refusal counted in `skipped`.

    A distorted camera's frames are rectified (unless `rectify` is False: the frames are
    rectified already), and `intrinsics` are the rectified camera's at the network size.
    Online, the session holds them (one camera); offline, where cameras differ between
    recordings, `carry_intrinsics` puts them on each triplet.
    """

    def __init__(self, height: int, width: int, rules: TripletRules | None = None, *, rectify: bool = True,
                 carry_intrinsics: bool = False):
        self.accumulator = TripletAccumulator(height, width, rules)
        self.rules = self.accumulator.rules
        self.skipped: Counter[Skip] = self.accumulator.skipped  # one count for the inputs and the rules
        self.rectify = rectify
        self.carry_intrinsics = carry_intrinsics
        self.rectifiers = RectifierCache()
        self.rectifier: Rectifier | None = None
        self.intrinsics: np.ndarray | None = None
        self.refused: Refusal | None = None

    @property
    def rectifying(self) -> bool:
        """Whether frames are rectified before they make triplets."""
        return self.rectify and self.rectifier is not None and self.rectifier.calibration.needs_rectification

    def set_camera(self, calibration: Lazy[Calibration]) -> bool:
        """Take the camera's calibration; True when it is another than before (new intrinsics)."""
        try:
            rectifier = self.rectifiers.get(_value(calibration))
        except ConversionError as exc:
            self._refuse(Skip.CAMERA_INFO_REJECTED, str(exc))
            return False
        self.refused = None
        if rectifier is self.rectifier:
            return False
        self.rectifier = rectifier
        self.intrinsics = self.accumulator.size.intrinsics(rectifier.K, rectifier.calibration.width,
                                                           rectifier.calibration.height)
        return True

    def add_frame(self, stamp: float, rgb: Lazy[np.ndarray]) -> list[Triplet]:
        """A frame of the camera last set; the triplets now complete. Frames before any
        camera are not decoded, and one of another size than the camera's is refused."""
        if self.rectifier is None:
            return self._refuse(Skip.NO_CAMERA_INFO)
        try:
            image = _value(rgb)
        except ConversionError as exc:
            return self._refuse(Skip.BAD_IMAGE, str(exc))
        calibration = self.rectifier.calibration
        if (image.shape[1], image.shape[0]) != (calibration.width, calibration.height):
            return self._refuse(Skip.BAD_IMAGE, f'image is {image.shape[1]}x{image.shape[0]} but camera_info is '
                                                f'{calibration.width}x{calibration.height}')
        if self.rectifying:
            image = self.rectifier.rectify(image)
        return self._out(self.accumulator.add_frame(stamp, image))

    def add_speed(self, stamp: float, speed: float) -> list[Triplet]:
        """A speed sample (m/s); the triplets it completes."""
        return self._out(self.accumulator.add_speed(stamp, speed))

    def _refuse(self, reason: Skip, detail: str = '') -> list[Triplet]:
        self.refused = Refusal(reason, detail)
        self.skipped[reason] += 1
        return []

    def _out(self, triplets: list[Triplet]) -> list[Triplet]:
        reason = self.accumulator.refused
        self.refused = Refusal(reason) if reason else None
        if not self.carry_intrinsics:
            return triplets
        return [Triplet(t.images, t.distances, t.stamp, self.intrinsics) for t in triplets]
