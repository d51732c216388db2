"""ONNX export of the depth network (and PoseNet), checked against torch before it is trusted.

The graph takes `rgb` [B,3,H,W] in [0,1] and gives `inv_depth` [B,1,H,W] (1 / metres, the
network's own output, learnt scale included). Opset 17 by default: GroupNorm is then written
as InstanceNormalization + Mul/Add, which ONNX Runtime and TensorRT run everywhere (the
original's users could not export it: GroupNorm and Pad broke TensorRT 7). The model carries
its provenance in metadata_props, so a served .onnx says what it is.
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.checkpoints import load_checkpoint
from packnet_ros.image import check_network_size
from packnet_ros.networks import PackNet, PoseNet

DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |inverse depth difference| between ONNX Runtime and torch


class ExportError(RuntimeError):
    """The exported model is invalid or does not compute what the torch model does."""


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported depth model says about itself (its metadata_props)."""

    arch: str
    width: float
    height_px: int
    width_px: int
    min_depth: float
    depth_scale: float
    source: str
    step: int
    version: str
    precision: str = 'fp32'  # 'int8' after packnet_ros.quantization

    @classmethod
    def read(cls, path: str | os.PathLike) -> 'OnnxInfo':
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
            raise ExportError(f'{path} is not a readable ONNX model: {exc}') from exc
        meta = {p.key: p.value for p in model.metadata_props}
        missing = [k for k in ('arch', 'model_width', 'input_height', 'input_width') if k not in meta]
        if missing:
            raise ExportError(f'{path} lacks packnet_ros metadata {missing}: export it with packnet-ros export')
        return cls(meta['arch'], float(meta['model_width']), int(meta['input_height']), int(meta['input_width']),
                   float(meta.get('min_depth', 0)), float(meta.get('depth_scale', 1)), meta.get('source', ''),
                   int(meta.get('step', 0)), meta.get('packnet_ros_version', ''), meta.get('precision', 'fp32'))


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
    with warnings.catch_warnings():  # the TorchScript exporter is chatty about constant folding
        warnings.simplefilter('ignore')
        torch.onnx.export(module, inputs, str(path), opset_version=opset, dynamo=False, input_names=input_names,
                          output_names=[output_name], dynamic_axes=axes, do_constant_folding=True)


def add_metadata(path: Path, values: dict[str, object]) -> None:
    """Add metadata_props to the model at `path`, check it and save it in place."""
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _max_difference(path: Path, module: torch.nn.Module, feeds: dict[str, torch.Tensor]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    with torch.no_grad():
        expected = module(*feeds.values()).numpy()
    return float(np.abs(got - expected).max())


class _PoseGraph(torch.nn.Module):
    """PoseNet with its context images as separate graph inputs."""

    def __init__(self, pose_net: PoseNet):
        super().__init__()
        self.pose_net = pose_net

    def forward(self, target: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        return self.pose_net(target, list(context))


def export_depth(net: PackNet, path: str | os.PathLike, height: int, width: int, *, opset: int = DEFAULT_OPSET,
                 dynamic_batch: bool = False, source: str = '', step: int = 0,
                 tolerance: float = TOLERANCE) -> float:
    """Write the depth network as ONNX (atomically) and return max |inverse depth difference|
    to torch on a test input; ExportError (and no file) above `tolerance`."""
    check_network_size(height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.float().eval()
    rgb = torch.rand(2 if dynamic_batch else 1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        _export(net, (rgb[:1],), staged, ['rgb'], 'inv_depth', opset, dynamic_batch)
        add_metadata(staged, {'arch': net.arch, 'model_width': net.width, 'input_height': height,
                               'input_width': width, 'min_depth': net.min_depth, 'depth_scale': net.depth_scale,
                               'output': 'inverse depth, 1/metres', 'source': source, 'step': step,
                               'packnet_ros_version': package_version(), 'opset': opset})
        difference = _max_difference(staged, net, {'rgb': rgb})
        if not difference <= tolerance:
            raise ExportError(f'ONNX Runtime differs from torch by {difference:.3g} in inverse depth '
                              f'(tolerance {tolerance:g}): not written')
        os.replace(staged, path)
    return difference


def export_pose(pose_net: PoseNet, path: str | os.PathLike, height: int, width: int, *,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, tolerance: float = TOLERANCE) -> float:
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
        difference = _max_difference(staged, graph, dict(zip(names, images)))
        if not difference <= tolerance:
            raise ExportError(f'PoseNet: ONNX Runtime differs from torch by {difference:.3g} (tolerance '
                              f'{tolerance:g}): not written')
        os.replace(staged, path)
    return difference


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, height: int | None = None,
                      width: int | None = None, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                      pose: bool = False, calibration: Sequence[np.ndarray] = ()) -> ExportResult:
    """A checkpoint (official or ours) -> OUT.onnx (+ OUT_pose.onnx), at the checkpoint's
    training size unless given. With `calibration` frames (RGB uint8), OUT.onnx is the int8
    model (packnet_ros.quantization) of the checked float export."""
    ckpt = load_checkpoint(checkpoint)
    depth_net, pose_net = ckpt.networks()
    trained = ckpt.input_size or (192, 640)
    height, width = height or trained[0], width or trained[1]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / out.name if calibration else out
        result = ExportResult(out, export_depth(depth_net, fp32, height, width, opset=opset,
                                                dynamic_batch=dynamic_batch, source=ckpt.name, step=ckpt.step))
        if calibration:
            from packnet_ros.quantization import quantize_depth

            result.int8_depth_difference = quantize_depth(fp32, out, calibration).depth_difference
    if pose:
        if pose_net is None:
            raise ExportError(f'{checkpoint} holds no PoseNet (stripped without --keep-pose?)')
        result.pose = out.with_name(f'{out.stem}_pose.onnx')
        result.pose_difference = export_pose(pose_net, result.pose, height, width, opset=opset,
                                             dynamic_batch=dynamic_batch)
    return result
