"""Which backend and precision serve a model on this machine: decided here, once, for the
node and the offline commands alike (infer, eval, export).

'auto' is onnxruntime on a CPU for fp32, and int8 for a checkpoint there (both measured
faster with the same depth: README); torch for GPUs, fp16/bf16 and untrained networks. An
.onnx file always runs on onnxruntime. Without onnx/onnxruntime installed, a checkpoint is
served by torch in fp32, with a note saying so (an .onnx file still needs them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from packnet_ros.devices import resolve_device
from packnet_ros.serving.backends import BACKENDS, PRECISIONS, onnxruntime_missing
from packnet_ros.serving.onnx_model import is_onnx

DEFAULT_SIZE = (192, 640)  # (height, width) a checkpoint that does not say its training size is served at


@dataclass(frozen=True)
class ServingPlan:
    """How models are served: the backend and precision asked for, resolved on this machine."""

    backend: str  # one of BACKENDS
    precision: str  # one of PRECISIONS
    device: torch.device
    calibrate: bool = False  # int8 of a checkpoint: quantized on frames of the served camera
    note: str = ''  # why it differs from what was asked, for a warning

    def in_float(self) -> 'ServingPlan':
        """The same backend in fp32: what serves while int8 waits for calibration frames, and
        what int8 is checked against."""
        return replace(self, precision='fp32', calibrate=False)


def network_size(trained: tuple[int, int] | None, height: int | None = None,
                 width: int | None = None) -> tuple[int, int]:
    """(height, width) a model is served at: as asked, else as trained, else DEFAULT_SIZE."""
    trained = trained or DEFAULT_SIZE
    return height or trained[0], width or trained[1]


def resolve(checkpoint: str | os.PathLike, device: str | torch.device, backend: str = 'auto',
            precision: str = 'auto', *, calibration: bool = True) -> ServingPlan:
    """The plan for serving `checkpoint` ('' = an untrained network) on `device`. `calibration`:
    whether frames of the served camera can calibrate int8 (a node keeps them; without them
    'auto' serves a checkpoint in float, and int8 needs an int8 .onnx). ValueError for a
    combination that cannot run."""
    if backend not in ('auto', *BACKENDS):
        raise ValueError(f'backend must be one of {("auto", *BACKENDS)}, got {backend!r}')
    if precision not in ('auto', *PRECISIONS):
        raise ValueError(f'precision must be one of {("auto", *PRECISIONS)}, got {precision!r}')
    device = resolve_device(device) if isinstance(device, str) else device
    checkpoint = str(checkpoint)
    onnx_file = is_onnx(checkpoint)
    cpu = device.type == 'cpu'
    if precision == 'auto':
        quantizable = checkpoint and not onnx_file and calibration
        precision = 'int8' if cpu and backend in ('auto', 'onnxruntime') and quantizable else 'fp32'
    if not checkpoint:
        return ServingPlan('torch', 'fp32' if precision == 'int8' else precision, device)
    if backend == 'auto':
        backend = 'onnxruntime' if onnx_file or (cpu and precision in ('fp32', 'int8')) else 'torch'
    if onnx_file:
        backend = 'onnxruntime'
    if backend == 'onnxruntime':
        missing = onnxruntime_missing(export=not onnx_file)
        if missing and onnx_file:
            raise ValueError(f'{checkpoint} is an ONNX model, which needs {missing}: pip install onnx onnxruntime')
        if missing:
            return ServingPlan('torch', 'fp32' if precision == 'int8' else precision, device,
                               note=f'{missing} not installed: serving with torch in fp32 (pip install onnx '
                                    'onnxruntime for the faster CPU backends and int8)')
    if precision == 'int8' and (backend != 'onnxruntime' or not cpu):
        raise ValueError('precision int8 needs the onnxruntime backend on a CPU (a checkpoint it quantizes, or an '
                         'int8 .onnx)')
    if precision == 'int8' and not onnx_file and not calibration:
        raise ValueError(f'precision int8 of {checkpoint} needs calibration frames from its camera: write the int8 '
                         'model with packnet-ros export --int8 --calibration DATA and give that .onnx')
    return ServingPlan(backend, precision, device, calibrate=precision == 'int8' and not onnx_file)
