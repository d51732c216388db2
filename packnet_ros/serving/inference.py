"""Depth inference: image in, metric depth out, on CPU or GPU."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.geometry import inv2depth
from packnet_ros.image import check_network_size, to_tensor
from packnet_ros.model.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from packnet_ros.networks import PackNet
from packnet_ros.serving.backends import PRECISIONS, OnnxRuntimeBackend, TorchBackend
from packnet_ros.serving.cache import cached, int8_name, onnx_cache_path
from packnet_ros.serving.export import ExportError, export_depth
from packnet_ros.serving.onnx_model import OnnxInfo, is_onnx
from packnet_ros.serving.provision import DEFAULT_SIZE, ServingPlan, network_size
from packnet_ros.serving.quantization import INT8_TOLERANCE_REL, quantize_depth

PROBE_SEED = 0  # of the probe image an exported model must give finite depth for

log = logging.getLogger(__name__)


def mask_out_of_range(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth outside [min_depth, max_depth] becomes NaN: 'no valid measurement' (REP 118)."""
    return depth.masked_fill((depth < min_depth) | (depth > max_depth), float('nan'))


@dataclass
class DepthEstimator:
    """A depth network ready for inference at a fixed input size.

    infer() takes RGB uint8 at any size and returns depth in metres at network
    resolution: 1 / inverse depth, NaN outside [min_depth, max_depth] (by default
    every depth is kept). `net` is a PackNet (torch backend) or the path of an exported
    .onnx model (onnxruntime backend); `backend` runs it (its `name` says which).
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
            self.backend: TorchBackend | OnnxRuntimeBackend = TorchBackend(self.net, self.device, self.precision)
        else:
            self.backend = OnnxRuntimeBackend(self.net, self.device, self.precision, self.threads)
            self._check_graph()
        self._probe()

    def _check_graph(self) -> None:
        """No loader has checked an exported graph: one that takes other images is refused
        before it serves (CheckpointError)."""
        name, shape = self.backend.input, self.backend.input_shape
        if list(shape[1:]) != [3, self.height, self.width]:
            raise CheckpointError(f'{self.net} takes {name} {shape}, not 3x{self.height}x{self.width} images: '
                                  'export it again at that size')

    def _probe(self) -> None:
        """One forward pass on a fixed probe image, which also warms the backend up: a model whose
        inverse depth is not finite there (NaN weights, or finite ones that overflow) is refused
        before it serves anything (CheckpointError), whichever backend runs it."""
        name = self.net if isinstance(self.net, Path) else self.identity or type(self.net).__name__
        probe = torch.rand(1, 3, self.height, self.width, generator=torch.Generator().manual_seed(PROBE_SEED))
        try:
            finite = bool(torch.isfinite(self.backend(probe)).all())
        except Exception as exc:  # onnxruntime's errors derive from Exception alone
            raise CheckpointError(f'{name} fails on a probe image: {" ".join(str(exc).split())}') from exc
        if not finite:
            raise CheckpointError(f'{name} gives non-finite inverse depth on a probe image (NaN or inf '
                                  'weights?): not served')

    @classmethod
    def provision(cls, checkpoint: str | os.PathLike, plan: ServingPlan,
                  size: tuple[int | None, int | None] | None = None, *, calibration: Sequence[np.ndarray] = (),
                  int8_tolerance: float = INT8_TOLERANCE_REL, **options) -> 'DepthEstimator':
        """`checkpoint` served as `plan` says (packnet_ros.serving.provision.resolve), at `size`
        (height, width; None or 0 for the size it was trained at). An .onnx runs as it is, in its
        own precision. On onnxruntime a checkpoint is exported (and checked against torch) once
        per file content, into the user's cache, and served from there while the entry's seal
        holds and it probes finite; in int8 that export is quantized on `calibration` (RGB
        uint8 frames of the served camera), ExportError where int8 would change depth beyond
        `int8_tolerance`. `options`: min_depth, max_depth, threads."""
        height, width = size or (None, None)
        if is_onnx(checkpoint):
            return cls._from_onnx(Path(checkpoint), plan, height, width, **options)
        ckpt = load_checkpoint(checkpoint)
        net, _ = ckpt.networks()
        height, width = network_size(ckpt.input_size, height, width)
        if plan.backend == 'onnxruntime':
            return cls._from_export(ckpt, net, height, width, plan, calibration, int8_tolerance, **options)
        return cls(net, height, width, plan.device, plan.precision, identity=ckpt.name, step=ckpt.step, **options)

    @classmethod
    def _from_export(cls, ckpt: Checkpoint, net: PackNet, height: int, width: int, plan: ServingPlan,
                     calibration: Sequence[np.ndarray], int8_tolerance: float, **options) -> 'DepthEstimator':
        """`net` on onnxruntime from its cached export, exported again where the cache holds
        none that is sound (packnet_ros.serving.cache.cached) and probes finite; on torch where
        no export can be written at all (int8 then raises ExportError)."""
        int8 = plan.precision == 'int8'
        digest = ckpt.sha256  # of the very bytes these weights came from: it seals their export

        def model(problem: str = '') -> Path | None:
            fp32 = cached(onnx_cache_path(digest, height, width), digest, lambda out: export_depth(
                net, out, height, width, dynamic_batch=True, source=ckpt.name, source_sha256=digest, step=ckpt.step),
                problem)
            if fp32 is None or not int8:
                return fp32
            return cached(onnx_cache_path(digest, height, width, int8_name(calibration, int8_tolerance)), digest,
                          lambda out: quantize_depth(fp32, out, calibration, tolerance=int8_tolerance,
                                                     threads=options.get('threads', 0)), problem)

        def serve(onnx: Path | None) -> DepthEstimator:
            if onnx is None and int8:
                raise ExportError(f'{ckpt.path}: no folder can hold its int8 model (see the warnings)')
            if onnx is None:
                log.warning(f'{ckpt.path}: no folder can hold its ONNX export: serving it with torch')
            return cls(onnx or net, height, width, plan.device, plan.precision, identity=ckpt.name, step=ckpt.step,
                       **options)

        try:
            return serve(model())
        except CheckpointError as exc:  # a sealed entry that fails the probe: sealed by someone else
            return serve(model(str(exc)))

    @classmethod
    def _from_onnx(cls, path: Path, plan: ServingPlan, height: int | None, width: int | None,
                   **options) -> 'DepthEstimator':
        if not path.is_file():
            raise CheckpointError(f'ONNX model {path} does not exist')
        info = OnnxInfo.read(path)
        requested = plan.precision
        if info.precision == 'int8' and requested not in ('fp32', 'int8'):
            raise ValueError(f'{path.name} is an int8 model: it runs in int8, not {requested}')
        if info.precision != 'int8' and requested == 'int8':
            raise ValueError(f'{path.name} is a float model: quantize it (packnet-ros export --int8 '
                             '--calibration DATA), or give its checkpoint and calibration frames')
        # the file decides: a float request runs an int8 model as it is
        precision = 'int8' if info.precision == 'int8' else requested
        if (height or info.height_px, width or info.width_px) != (info.height_px, info.width_px):
            raise ValueError(f'{path.name} was exported for {info.width_px}x{info.height_px}, not '
                             f'{width or info.width_px}x{height or info.height_px}: export it again at that size')
        return cls(path, info.height_px, info.width_px, plan.device, precision,
                   identity=f'{path.name} ({info.source or info.arch})', step=info.step, **options)

    def infer_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B,3,height,width] in [0,1] -> depth [B,1,height,width] metres (float32, NaN out of range)."""
        inv_depth = self.backend(rgb)
        return mask_out_of_range(inv2depth(inv_depth), self.min_depth, self.max_depth)

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> depth float32 [height,width] metres."""
        batch = to_tensor(rgb, self.height, self.width)
        if self.device.type == 'cuda' and isinstance(self.backend, TorchBackend):
            batch = batch.pin_memory()  # lets the host->device copy run asynchronously
        return self.infer_tensor(batch)[0, 0].cpu().numpy()
