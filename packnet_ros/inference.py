"""Depth inference: image in, metric depth out, on CPU or GPU."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.backends import BACKENDS, PRECISIONS, OnnxRuntimeBackend, TorchBackend, onnx_cache_path, prune_cache
from packnet_ros.checkpoints import CheckpointError, load_checkpoint
from packnet_ros.geometry import inv2depth
from packnet_ros.image import check_network_size, to_tensor
from packnet_ros.networks import PackNet

DEFAULT_SIZE = (192, 640)


def resolve_device(name: str) -> torch.device:
    """'auto' picks the first GPU when there is one; 'cuda' without a GPU is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but no CUDA GPU is available')
    return device


def mask_out_of_range(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth outside [min_depth, max_depth] becomes NaN: 'no valid measurement' (REP 118)."""
    return depth.masked_fill((depth < min_depth) | (depth > max_depth), float('nan'))


@dataclass
class DepthEstimator:
    """A depth network ready for inference at a fixed input size.

    infer() takes RGB uint8 at any size and returns depth in metres at network
    resolution: 1 / inverse depth, NaN outside [min_depth, max_depth] (by default
    every depth is kept). `net` is a PackNet (torch backend) or the path of an exported
    .onnx model (onnxruntime backend).
    """

    net: PackNet | Path
    height: int = DEFAULT_SIZE[0]
    width: int = DEFAULT_SIZE[1]
    device: torch.device = torch.device('cpu')
    precision: str = 'fp32'
    min_depth: float = 0.0
    max_depth: float = float('inf')
    identity: str = ''
    step: int = 0
    threads: int = 0  # onnxruntime's CPU threads (0: as many as torch uses)

    def __post_init__(self) -> None:
        check_network_size(self.height, self.width)
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if isinstance(self.net, PackNet):
            self.run = TorchBackend(self.net, self.device, self.precision)
            self.backend = 'torch'
        else:
            self.run = OnnxRuntimeBackend(self.net, self.device, self.precision, self.threads)
            self.backend = 'onnxruntime'

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, height: int | None = None, width: int | None = None,
                        device: str = 'cpu', backend: str = 'torch',
                        calibration: Sequence[np.ndarray] = (), int8_tolerance: float | None = None,
                        **kwargs) -> 'DepthEstimator':
        """Load weights; the input size defaults to the one the checkpoint was trained at. An .onnx
        path runs on onnxruntime; a checkpoint with backend 'onnxruntime' is exported (and
        checked against torch) once per file content, into the user's cache. Precision 'int8'
        quantizes that export on `calibration` (RGB uint8 frames of the served camera) and
        raises ExportError where int8 would change depth beyond `int8_tolerance` (default:
        packnet_ros.quantization.TOLERANCE)."""
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if Path(path).suffix == '.onnx':
            return cls._from_onnx(Path(path), height, width, device, **kwargs)
        if kwargs.get('precision') == 'int8' and backend != 'onnxruntime':
            raise ValueError('precision int8 needs the onnxruntime backend')
        ckpt = load_checkpoint(path)
        net, _ = ckpt.networks()
        trained = ckpt.input_size or DEFAULT_SIZE
        height, width = height or trained[0], width or trained[1]
        if backend == 'onnxruntime':
            from packnet_ros.export import export_depth

            onnx = onnx_cache_path(path, height, width)
            if not onnx.is_file():
                export_depth(net, onnx, height, width, dynamic_batch=True, source=ckpt.name, step=ckpt.step)
                prune_cache(onnx.parent)
            net = onnx
            if kwargs.get('precision') == 'int8':
                from packnet_ros.quantization import TOLERANCE, calibration_digest, quantize_depth

                tolerance = TOLERANCE if int8_tolerance is None else int8_tolerance
                net = onnx_cache_path(path, height, width, f'{calibration_digest(calibration)}_{tolerance:g}')
                if not net.is_file():
                    quantize_depth(onnx, net, calibration, tolerance=tolerance, threads=kwargs.get('threads', 0))
                    prune_cache(net.parent)
        return cls(net, height, width, resolve_device(device), identity=ckpt.name, step=ckpt.step, **kwargs)

    @classmethod
    def _from_onnx(cls, path: Path, height: int | None, width: int | None, device: str,
                   **kwargs) -> 'DepthEstimator':
        from packnet_ros.export import OnnxInfo

        if not path.is_file():
            raise CheckpointError(f'ONNX model {path} does not exist')
        info = OnnxInfo.read(path)
        requested = kwargs.get('precision', 'fp32')
        if info.precision == 'int8' and requested not in ('fp32', 'int8'):
            raise ValueError(f'{path.name} is an int8 model: it runs in int8, not {requested}')
        if info.precision != 'int8' and requested == 'int8':
            raise ValueError(f'{path.name} is a float model: quantize it (packnet-ros export --int8 '
                             '--calibration DATA), or give its checkpoint and calibration frames')
        if info.precision == 'int8':  # the file decides: the default fp32 request runs it as it is
            kwargs['precision'] = 'int8'
        if (height or info.height_px, width or info.width_px) != (info.height_px, info.width_px):
            raise ValueError(f'{path.name} was exported for {info.width_px}x{info.height_px}, not '
                             f'{width or info.width_px}x{height or info.height_px}: export it again at that size')
        return cls(path, info.height_px, info.width_px, resolve_device(device),
                   identity=f'{path.name} ({info.source or info.arch})', step=info.step, **kwargs)

    def infer_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B,3,height,width] in [0,1] -> depth [B,1,height,width] metres (float32, NaN out of range)."""
        inv_depth = self.run(rgb)
        return mask_out_of_range(inv2depth(inv_depth), self.min_depth, self.max_depth)

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> depth float32 [height,width] metres."""
        batch = to_tensor(rgb, self.height, self.width)
        if self.device.type == 'cuda' and self.backend == 'torch':
            batch = batch.pin_memory()  # lets the host->device copy run asynchronously
        return self.infer_tensor(batch)[0, 0].cpu().numpy()
