"""int8 calibrated on the served camera's own frames, and kept honest on live ones.

A node that serves a checkpoint in int8 (ServingPlan.calibrate) serves float until it has
kept calibration frames from its camera; from then on every checkpoint it loads is quantized
on those frames, and served in int8 unless int8 would change depth beyond the tolerance.
Every `recheck_period` seconds int8's depth on a live frame is compared with float's: the
calibration frames may not represent the camera (16 black frames at start passed the check
on themselves and then changed real frames' depth by 12 %); beyond the tolerance the float
model serves from the next frame on.

The node offers frames (offer), asks for the model that serves a checkpoint (serve, on its
loader thread), says which model it swapped in (adopt) and hands over what int8 gave on a
frame (check); Int8Calibrator keeps the frames, the state and why int8 was refused.
"""
from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Callable

import numpy as np

from packnet_ros.serving.export import ExportError
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.onnx_model import is_onnx
from packnet_ros.serving.provision import ServingPlan
from packnet_ros.serving.quantization import INT8_TOLERANCE_REL, CalibrationFrames

RECHECK_PERIOD_S = 30.0


class Int8State(enum.Enum):
    NOT_USED = 'not used'
    CALIBRATING = 'calibrating'
    SERVING = 'serving int8'
    REFUSED = 'refused, serving float'


class Int8Calibrator:
    """The models a node serves under `plan`, int8 or float, and why.

    `frames` calibration frames at least `period` seconds apart; `tolerance` is the largest
    median relative change of depth against float, on the calibration frames and on live
    ones; `on_refused(status, detail)` hears every refusal (a short status for health, the
    whole reason for the log).
    """

    def __init__(self, plan: ServingPlan, frames: int, period: float, tolerance: float = INT8_TOLERANCE_REL,
                 recheck_period: float = RECHECK_PERIOD_S, on_refused: Callable[[str, str], None] | None = None):
        self.plan = plan
        self.frames = CalibrationFrames(frames, period) if plan.calibrate else None
        self.state = Int8State.CALIBRATING if self.frames is not None else Int8State.NOT_USED
        self.reason = ''  # why int8 was refused
        self.tolerance, self.recheck_period = tolerance, recheck_period
        self.on_refused = on_refused or (lambda status, detail: None)
        self.reference: DepthEstimator | None = None  # the float model of the int8 one served
        self._made: tuple[DepthEstimator, DepthEstimator] | None = None  # the newest int8 model and its float
        self._lock = threading.Lock()  # _made: set on the loader thread, taken on the worker
        self._last_check = -math.inf

    def offer(self, rgb: np.ndarray, stamp: float) -> bool:
        """Keep `rgb` (a frame at network size) for calibration if due; True exactly when it
        completes the set: checkpoints loaded from then on are quantized."""
        return self.frames is not None and self.frames.offer(rgb, stamp)

    def serve(self, checkpoint: str | os.PathLike, size: tuple[int | None, int | None] | None = None,
              **options) -> DepthEstimator:
        """The model that serves `checkpoint`: int8 once calibrated (float where int8 is refused),
        float until then, the plan's precision where int8 is not used; an .onnx in its own."""
        if self.frames is None:
            return DepthEstimator.provision(checkpoint, self.plan, size, **options)
        if self.frames.complete and not is_onnx(checkpoint):
            try:
                int8 = DepthEstimator.provision(checkpoint, self.plan, size, calibration=self.frames.frames,
                                                int8_tolerance=self.tolerance, **options)
            except ExportError as exc:
                self._refuse(str(exc), 'int8 refused for this model: serving float',
                             f'int8 refused for {checkpoint}, serving it in float: {exc}')
            else:
                # the float export quantization started from (cached): what int8 is checked against
                reference = DepthEstimator.provision(checkpoint, self.plan.in_float(), size, **options)
                with self._lock:
                    self._made = int8, reference
                self.state = Int8State.SERVING
                return int8
        return DepthEstimator.provision(checkpoint, self.plan.in_float(), size, **options)

    def adopt(self, estimator: DepthEstimator) -> None:
        """`estimator` serves from now on: when it is the int8 model made here, it is checked
        against its float model on the next frame; any other model is not checked."""
        with self._lock:
            ours = self._made is not None and self._made[0] is estimator
            self.reference = self._made[1] if ours else None
            if ours:
                self._made = None
        self._last_check = -math.inf

    def check(self, rgb: np.ndarray, depth: np.ndarray, now: float) -> DepthEstimator | None:
        """Every recheck_period seconds (0: never), int8's `depth` for `rgb` against float's: the
        float model to serve instead when they differ beyond the tolerance, else None."""
        reference = self.reference
        if reference is None or self.recheck_period <= 0 or now - self._last_check < self.recheck_period:
            return None
        self._last_check = now
        expected = reference.infer(rgb)
        valid = np.isfinite(expected) & np.isfinite(depth) & (expected > 0)
        change = float(np.median(np.abs(depth[valid] / expected[valid] - 1))) if valid.any() else math.inf
        if change <= self.tolerance:
            return None
        self.reference = None
        reason = (f'on a live frame int8 changed depth by {change:.1%} against float (tolerance '
                  f'{self.tolerance:.0%}): its calibration frames do not represent this camera')
        self._refuse(reason, 'int8 differs from float on live frames: serving float',
                     f'int8 refused, serving float from now on: {reason}')
        return reference

    def _refuse(self, reason: str, status: str, detail: str) -> None:
        self.state, self.reason = Int8State.REFUSED, reason
        self.on_refused(status, detail)

    def status(self) -> str:
        """The state as /diagnostics says it."""
        if self.state is Int8State.CALIBRATING:
            text = f'calibrating: {len(self.frames.frames)}/{self.frames.count} frames'
            if self.frames.refused:
                text += f' ({self.frames.refused} featureless frames not kept)'
            return text
        if self.state is Int8State.REFUSED:
            return f'{self.state.value}: {self.reason}'
        return self.state.value
