"""ONNX export of the depth network (and PoseNet), checked against torch before it is trusted.

The graph takes `rgb` [B,3,H,W] in [0,1] and gives `inv_depth` [B,1,H,W] (1 / metres, the
network's own output, learnt scale included). Opset 17 by default: GroupNorm is then written
as InstanceNormalization + Mul/Add, which ONNX Runtime and TensorRT run everywhere (the
original's users could not export it: GroupNorm and Pad broke TensorRT 7). The model carries
its provenance in metadata_props (packnet_ros.serving.onnx_model), so a served .onnx says
what it is. The automatic exports a node serves are kept in packnet_ros.serving.cache.
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.image import check_network_size
from packnet_ros.model.checkpoints import load_checkpoint
from packnet_ros.networks import PackNet, PoseNet
from packnet_ros.serving.onnx_model import add_metadata
from packnet_ros.serving.provision import network_size

DEFAULT_OPSET = 17
EXPORT_TOLERANCE_ABS = 1e-4  # max |inverse depth difference| (1/metres) between ONNX Runtime and torch

# torch.onnx.export keeps global state (GLOBALS.in_onnx_export): one export at a time, whatever
# the thread (a node's loader threads export checkpoints announced together)
_export_lock = threading.Lock()


class ExportError(RuntimeError):
    """The exported model is invalid or does not compute what the torch model does."""


@dataclass
class ExportResult:
    depth: Path
    depth_difference: float
    pose: Path | None = None
    pose_difference: float | None = None
    int8_depth_difference: float | None = None  # median relative, on the calibration frames


def package_version() -> str:
    try:
        return importlib.metadata.version('packnet_ros')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def _export(module: torch.nn.Module, inputs: tuple, path: Path, input_names: list[str], output_name: str,
            opset: int, dynamic_batch: bool) -> None:
    axes = {name: {0: 'batch'} for name in [*input_names, output_name]} if dynamic_batch else None
    with _export_lock, warnings.catch_warnings():  # the TorchScript exporter is chatty about constant folding
        warnings.simplefilter('ignore')
        torch.onnx.export(module, inputs, str(path), opset_version=opset, dynamo=False, input_names=input_names,
                          output_names=[output_name], dynamic_axes=axes, do_constant_folding=True)


def _max_difference(path: Path, feeds: dict[str, torch.Tensor], expected: torch.Tensor) -> float:
    """max |ONNX Runtime's output on `feeds` - `expected`| (torch's on the same)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    return float(np.abs(got - expected.numpy()).max())


class _PoseGraph(torch.nn.Module):
    """PoseNet with its context images as separate graph inputs."""

    def __init__(self, pose_net: PoseNet):
        super().__init__()
        self.pose_net = pose_net

    def forward(self, target: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        return self.pose_net(target, list(context))


def export_depth(net: PackNet, path: str | os.PathLike, height: int, width: int, *, opset: int = DEFAULT_OPSET,
                 dynamic_batch: bool = False, source: str = '', source_sha256: str = '', step: int = 0,
                 tolerance: float = EXPORT_TOLERANCE_ABS) -> float:
    """Write the depth network as ONNX (atomically) and return max |inverse depth difference|
    to torch on a test input; ExportError (and no file) above `tolerance`. `source` names the
    checkpoint, `source_sha256` is its content's hash."""
    check_network_size(height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.float().eval()
    rgb = torch.rand(2 if dynamic_batch else 1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(rgb)
    if not bool(torch.isfinite(expected).all()):  # finite weights can still overflow: nothing to export
        raise ExportError(f'{source or "the network"} gives non-finite inverse depth on a probe image: not exported')
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        _export(net, (rgb[:1],), staged, ['rgb'], 'inv_depth', opset, dynamic_batch)
        add_metadata(staged, {'arch': net.arch, 'model_width': net.width, 'input_height': height,
                               'input_width': width, 'min_depth': net.min_depth, 'depth_scale': net.depth_scale,
                               'output': 'inverse depth, 1/metres', 'source': source,
                               'source_sha256': source_sha256, 'step': step,
                               'packnet_ros_version': package_version(), 'opset': opset})
        difference = _max_difference(staged, {'rgb': rgb}, expected)
        if not difference <= tolerance:
            raise ExportError(f'ONNX Runtime differs from torch by {difference:.3g} in inverse depth '
                              f'(tolerance {tolerance:g}): not written')
        os.replace(staged, path)
    return difference


def export_pose(pose_net: PoseNet, path: str | os.PathLike, height: int, width: int, *,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                tolerance: float = EXPORT_TOLERANCE_ABS) -> float:
    """PoseNet as ONNX: inputs `target`, `context0`..., output `pose` [B,N,6] (translation xyz, euler xyz)."""
    path = Path(path)
    graph = _PoseGraph(pose_net.float().eval())
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(1, 3, height, width, generator=g) for _ in range(1 + pose_net.nb_ref_imgs)]
    names = ['target'] + [f'context{i}' for i in range(pose_net.nb_ref_imgs)]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        _export(graph, tuple(images), staged, names, 'pose', opset, dynamic_batch)
        add_metadata(staged, {'network': 'PoseNet', 'input_height': height, 'input_width': width,
                               'output': 'pose [B,N,6]: translation (m) then euler angles (rad), target -> context',
                               'packnet_ros_version': package_version(), 'opset': opset})
        with torch.no_grad():
            expected = graph(*images)
        difference = _max_difference(staged, dict(zip(names, images)), expected)
        if not difference <= tolerance:
            raise ExportError(f'PoseNet: ONNX Runtime differs from torch by {difference:.3g} (tolerance '
                              f'{tolerance:g}): not written')
        os.replace(staged, path)
    return difference


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, height: int | None = None,
                      width: int | None = None, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                      pose: bool = False) -> ExportResult:
    """A checkpoint (official or ours) -> OUT.onnx (+ OUT_pose.onnx), at the checkpoint's
    training size unless given (int8: quantization.export_int8)."""
    ckpt = load_checkpoint(checkpoint)
    depth_net, pose_net = ckpt.networks()
    height, width = network_size(ckpt.input_size, height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out, export_depth(depth_net, out, height, width, opset=opset, dynamic_batch=dynamic_batch,
                                            source=ckpt.name, source_sha256=ckpt.sha256, step=ckpt.step))
    if pose:
        if pose_net is None:
            raise ExportError(f'{checkpoint} holds no PoseNet (stripped without --keep-pose?)')
        result.pose = out.with_name(f'{out.stem}_pose.onnx')
        result.pose_difference = export_pose(pose_net, result.pose, height, width, opset=opset,
                                             dynamic_batch=dynamic_batch)
    return result
