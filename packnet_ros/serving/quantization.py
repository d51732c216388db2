"""Static int8 quantization of an exported depth model, calibrated on real frames.

Why: on a CPU, PackNet01's 2D convolutions run at the core's fp32 peak (pack1's 5x5
convolution over 2048 channels alone takes ~410 of ~1130 ms at 640x192 on two AVX-512
cores); int8 dot products (AVX-512 VNNI, AVX-VNNI, ARM dot product) do ~3.5x the work per
cycle. What stays float, and why:
- the packing blocks' 3D convolutions: ONNX Runtime's int8 3D convolution is ~17x slower
  than its float one (1205 vs 71 ms for pack1's, measured), and they are cheap in float;
- the inverse-depth heads (the convolutions before each sigmoid): the published depth comes
  straight out of them, and they are small.
Activations are uint8 per tensor with ranges observed on calibration frames, weights int8
per output channel, in QDQ form (which every onnxruntime execution provider reads). The
quantized model is checked against the float one on the calibration frames, and refused
when their depths differ by more than `tolerance` (median relative difference): a model
whose activations int8 cannot hold is never served.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.image import to_tensor
from packnet_ros.serving.backends import OnnxRuntimeBackend
from packnet_ros.serving.export import ExportError, ExportResult, export_checkpoint
from packnet_ros.serving.onnx_model import OnnxInfo, add_metadata

INT8_TOLERANCE_REL = 0.03  # median relative depth difference int8 vs fp32 on the calibration frames
MIN_FRAMES = 4


def saturating_cpu() -> bool:
    """An x86 CPU without VNNI multiplies uint8 x int8 pairs into saturating int16 (vpmaddubsw),
    which 8-bit weights overflow: there weights get 7 bits (onnxruntime's reduce_range, its own
    advice for such CPUs). Measured on an AVX2-only EPYC: the shipped model's int8 depth
    correlated 0.988 with float on frames it was not calibrated on, 7-bit weights pass the
    0.99 of test_quantization.py. CPUs with VNNI and ARM keep 8 bits."""
    if platform.machine().lower() not in ('x86_64', 'amd64', 'i386', 'i686'):
        return False
    try:
        flags = Path('/proc/cpuinfo').read_text()
    except OSError:
        return False
    return re.search(r'\b(avx512_vnni|avx_vnni)\b', flags) is None


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    frames: int
    depth_difference: float  # median |d_int8 - d_fp32| / d_fp32 over the calibration frames' pixels


def float_only_nodes(model) -> list[str]:
    """Convolutions that stay float: 3D ones (5D weights) and those feeding a sigmoid (the heads)."""
    ranks = {init.name: len(init.dims) for init in model.graph.initializer}
    sigmoid_inputs = {node.input[0] for node in model.graph.node if node.op_type == 'Sigmoid'}
    return [node.name for node in model.graph.node if node.op_type == 'Conv'
            and (ranks.get(node.input[1]) == 5 or node.output[0] in sigmoid_inputs)]


def depth_difference(reference: Path, candidate: Path, batches: list[torch.Tensor], threads: int) -> float:
    """Median relative difference of depth (1 / inverse depth) between a float model and its int8
    form on the same inputs, both run as the onnxruntime backend runs them on a CPU."""
    cpu = torch.device('cpu')
    ref = OnnxRuntimeBackend(reference, cpu, 'fp32', threads)
    cand = OnnxRuntimeBackend(candidate, cpu, 'int8', threads)
    # |d_c - d_r| / d_r = |i_r / i_c - 1| for inverse depths i
    diffs = [(ref(batch) / cand(batch).clamp(min=1e-12) - 1.0).abs().ravel() for batch in batches]
    return float(torch.cat(diffs).median())


def quantize_depth(fp32_model: str | os.PathLike, out: str | os.PathLike, frames: Sequence[np.ndarray], *,
                   tolerance: float = INT8_TOLERANCE_REL, threads: int = 0) -> QuantizeResult:
    """fp32 .onnx (packnet_ros.serving.export) + RGB uint8 frames [H,W,3] -> int8 .onnx, written atomically.

    Frames are resized to the model's input size; use frames from the camera the model will
    serve (a few dozen spread over a drive; at least MIN_FRAMES). CheckpointError when
    `fp32_model` is no readable packnet_ros export; ExportError (and no file) when it is not
    float or int8 changes depth beyond `tolerance`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_model, out = Path(fp32_model), Path(out)
    info = OnnxInfo.read(fp32_model)
    if info.precision != 'fp32':
        raise ExportError(f'{fp32_model.name} is already {info.precision}: quantize the fp32 export')
    if len(frames) < MIN_FRAMES:
        raise ExportError(f'int8 calibration needs at least {MIN_FRAMES} frames, got {len(frames)}')
    batches = [to_tensor(rgb, info.height_px, info.width_px) for rgb in frames]
    out.parent.mkdir(parents=True, exist_ok=True)

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            batch = next(self.remaining, None)
            return None if batch is None else {'rgb': batch.numpy()}

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepared, staged = Path(tmp) / 'prepared.onnx', Path(tmp) / out.name
        # ONNX shape inference and folding, as the quantizer expects (the symbolic kind cannot
        # follow the packing reshapes of a dynamic-batch graph)
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        keep_float = float_only_nodes(onnx.load(str(prepared)))
        quantize_static(str(prepared), str(staged), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=saturating_cpu(),
                        op_types_to_quantize=['Conv'], nodes_to_exclude=keep_float,
                        calibration_providers=['CPUExecutionProvider'])
        difference = depth_difference(fp32_model, staged, batches, threads)
        if not difference <= tolerance:
            raise ExportError(f'int8 changes depth by {100 * difference:.2f} % (median, on the {len(frames)} '
                              f'calibration frames; tolerance {100 * tolerance:g} %): not written')
        add_metadata(staged, {'precision': 'int8', 'calibration_frames': len(frames),
                              'int8_depth_difference': f'{difference:.6f}'})
        os.replace(staged, out)
    return QuantizeResult(out, len(frames), difference)


# A frame whose grey levels spread less than this (standard deviation, of 255) shows nothing:
# a lens cap, a dark garage, fog. Calibrated on such frames, int8 passed its check on them and
# then changed real frames' depth by 12 %.
MIN_CONTRAST = 8.0


def featureless(rgb: np.ndarray) -> bool:
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(grey.std()) < MIN_CONTRAST


def export_int8(checkpoint: str | os.PathLike, out: str | os.PathLike, frames: Sequence[np.ndarray],
                height: int | None = None, width: int | None = None, **options) -> ExportResult:
    """export_checkpoint's checked float model, quantized on `frames` (RGB uint8) into OUT.onnx;
    the float model is not kept. `options` go to export_checkpoint (opset, dynamic_batch, pose)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        result = export_checkpoint(checkpoint, Path(tmp) / out.name, height, width, **options)
        result.int8_depth_difference = quantize_depth(result.depth, out, frames).depth_difference
        if result.pose is not None:
            result.pose = Path(shutil.move(result.pose, out.with_name(result.pose.name)))
    result.depth = out
    return result


class CalibrationFrames:
    """Frames kept from a live camera for int8 calibration: `count` of them, at least `period`
    seconds apart, so that they span some of the drive rather than one moment of it, and none
    featureless (those are counted in `refused`, and the set waits for frames that show a scene)."""

    def __init__(self, count: int, period: float):
        if count < MIN_FRAMES:
            raise ValueError(f'int8 calibration needs at least {MIN_FRAMES} frames, got {count}')
        self.count, self.period = count, period
        self.frames: list[np.ndarray] = []
        self.refused = 0
        self._last = float('-inf')

    @property
    def complete(self) -> bool:
        return len(self.frames) >= self.count

    def offer(self, rgb: np.ndarray, stamp: float) -> bool:
        """Keep a copy of `rgb` if due; True exactly when this frame completes the set."""
        if self.complete or stamp - self._last < self.period:
            return False
        if featureless(rgb):
            self.refused += 1
            return False
        self.frames.append(rgb.copy())
        self._last = stamp
        return self.complete
