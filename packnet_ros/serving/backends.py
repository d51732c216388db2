"""Inference backends: what turns an image batch into inverse depth.

`torch` runs the network itself (fp32, or fp16/bf16 under autocast); `onnxruntime` runs an
exported graph (packnet_ros.serving.export, or its int8 form from packnet_ros.serving.quantization) with the
best execution provider the installed onnxruntime offers: TensorRT (engine cache beside the
model) or CUDA on a GPU, else the CPU.
Both take rgb [B,3,H,W] in [0,1] and return inverse depth [B,1,H,W] float32, so the depth
a node publishes means the same whatever the backend.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import torch

from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.networks import PackNet
from packnet_ros.serving.cache import engine_cache

BACKENDS = ('torch', 'onnxruntime')
AUTOCAST = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
PRECISIONS = (*AUTOCAST, 'int8')  # int8: a quantized onnxruntime model, on the CPU


def onnxruntime_missing(export: bool = True) -> str:
    """The modules the onnxruntime backend needs that do not import ('' when all do):
    onnxruntime to run, and onnx too when a checkpoint must be exported first."""
    missing = []
    for name in ('onnx', 'onnxruntime') if export else ('onnxruntime',):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return ' and '.join(missing)


class TorchBackend:
    name = 'torch'

    def __init__(self, net: PackNet, device: torch.device, precision: str):
        if precision not in AUTOCAST:
            raise ValueError(f'precision {precision} runs on onnxruntime (a quantized model), not torch')
        self.net, self.device, self.precision = net.to(device).eval(), device, precision
        if device.type == 'cuda':  # 2D convolutions only: the packing blocks' 3D ones have 5D weights
            for module in self.net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        rgb = rgb.to(self.device, non_blocking=True)
        if self.device.type == 'cuda':
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self.net(rgb).float()


def providers_for(device: torch.device, precision: str, cache_dir: Path) -> list:
    """ONNX Runtime execution providers, best first, among those this onnxruntime has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if precision == 'int8':
        if device.type != 'cpu':
            raise ValueError(f'int8 models run on the CPU here, not {device}: on a GPU use fp16')
        return ['CPUExecutionProvider']
    chosen: list = []
    if device.type == 'cuda':
        index = device.index or 0
        if 'TensorrtExecutionProvider' in available:
            chosen.append(('TensorrtExecutionProvider', {
                'device_id': index, 'trt_fp16_enable': precision == 'fp16', 'trt_engine_cache_enable': True,
                'trt_engine_cache_path': str(cache_dir)}))
        if 'CUDAExecutionProvider' in available:
            chosen.append(('CUDAExecutionProvider', {'device_id': index}))
        if not chosen:
            raise ValueError(f'device {device} asked of onnxruntime, whose providers are {available}: install '
                             'onnxruntime-gpu (CUDA / TensorRT) or use the torch backend')
    if precision != 'fp32' and not any(p[0] == 'TensorrtExecutionProvider' for p in chosen):
        raise ValueError(f'precision {precision} with onnxruntime needs its TensorRT provider (fp16); '
                         'use fp32, or the torch backend for fp16/bf16')
    return chosen + ['CPUExecutionProvider']


class OnnxRuntimeBackend:
    name = 'onnxruntime'

    def __init__(self, path: str | os.PathLike, device: torch.device, precision: str, threads: int = 0):
        import onnxruntime as ort

        self.path, self.device, self.precision = Path(path), device, precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle worker threads sleep instead of spinning: a node shares its cores with DDS
        # receive threads and the training node (spinning cost a frame now and then at
        # 1-2 Hz on two cores; sleeping costs ~2 % of PackNet01's latency).
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        providers = providers_for(device, precision, engine_cache(self.path))
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, ...) derive from Exception alone
            raise CheckpointError(f'{self.path} is not a model onnxruntime can load (truncated or corrupt?): '
                                  f'{" ".join(str(exc).split())}') from exc
        graph_input = self.session.get_inputs()[0]
        self.input, self.input_shape = graph_input.name, graph_input.shape
        batch = graph_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None  # exported without --dynamic-batch

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(rgb.detach().cpu().numpy(), dtype=np.float32)
        if self.fixed_batch and len(feed) != self.fixed_batch:  # a fixed-batch graph: one slice at a time
            parts = [self.session.run(None, {self.input: feed[i:i + self.fixed_batch]})[0]
                     for i in range(0, len(feed), self.fixed_batch)]
            return torch.from_numpy(np.concatenate(parts))
        return torch.from_numpy(self.session.run(None, {self.input: feed})[0])
