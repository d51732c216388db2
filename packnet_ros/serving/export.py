"""ONNX export of the depth network (and PoseNet), checked against torch before it is trusted.

The graph takes `rgb` [B,3,H,W] in [0,1] and gives `inv_depth` [B,1,H,W] (1 / metres, the
network's own output, learnt scale included). Opset 17 by default: GroupNorm is then written
as InstanceNormalization + Mul/Add, which ONNX Runtime and TensorRT run everywhere (the
original's users could not export it: GroupNorm and Pad broke TensorRT 7). The model carries
its provenance in metadata_props, so a served .onnx says what it is.

Automatic exports (the onnxruntime backend given a checkpoint) are kept in a cache, one per
checkpoint content and size, each sealed like a checkpoint: NAME.json beside NAME.onnx holds
the sha256 of the source checkpoint and of the .onnx. An entry whose seal does not hold is
exported again; a cache that cannot be written sends the export to a temporary directory.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packnet_ros.image import check_network_size
from packnet_ros.model.checkpoints import CheckpointError, load_checkpoint
from packnet_ros.networks import PackNet, PoseNet

DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |inverse depth difference| between ONNX Runtime and torch
MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit: a larger .onnx is no single-file model (ours never use external data)
CACHE_KEEP = 8  # exports kept: a training run announces a new checkpoint every few minutes

log = logging.getLogger(__name__)
# torch.onnx.export keeps global state (GLOBALS.in_onnx_export): one export at a time, whatever
# the thread (a node's loader threads export checkpoints announced together)
_export_lock = threading.Lock()


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
    precision: str = 'fp32'  # 'int8' after packnet_ros.serving.quantization

    @classmethod
    def read(cls, path: str | os.PathLike) -> 'OnnxInfo':
        """The metadata of the model at `path`; CheckpointError for a file that is no such model
        (its size is checked before anything is read)."""
        import onnx

        try:
            too_large = oversize(os.stat(path).st_size)
            if too_large:
                raise CheckpointError(f'{path} {too_large}: not read')
            model = onnx.load(str(path), load_external_data=False)
        except CheckpointError:
            raise
        except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
            raise CheckpointError(f'{path} is not a readable ONNX model: {exc}') from exc
        meta = {p.key: p.value for p in model.metadata_props}
        missing = [k for k in ('arch', 'model_width', 'input_height', 'input_width') if k not in meta]
        if missing:
            raise CheckpointError(f'{path} lacks packnet_ros metadata {missing}: export it with packnet-ros export')
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


def oversize(size: int) -> str:
    """Why a file of `size` bytes is no ONNX model ('' when it may be one)."""
    if size <= MAX_MODEL_BYTES:
        return ''
    return f'is {size / 2**20:.1f} MiB, over the {MAX_MODEL_BYTES / 2**20:g} MiB limit of an ONNX model'


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


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


def add_metadata(path: Path, values: dict[str, object]) -> None:
    """Add metadata_props to the model at `path`, check it and save it in place."""
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


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
                 tolerance: float = TOLERANCE) -> float:
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
    trained = ckpt.input_size or (192, 640)
    height, width = height or trained[0], width or trained[1]
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


# --------------------------------------------------------------------------------------
# The automatic export cache


def onnx_cache_path(source_sha256: str, height: int, width: int, calibration: str = '') -> Path:
    """Where the automatic export of the checkpoint whose content hashes to `source_sha256` is
    kept at this size; `calibration` names the frames of an int8 model (quantization.calibration_digest)."""
    root = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'packnet_ros' / 'onnx'
    int8 = f'_int8_{calibration}' if calibration else ''
    return root / f'{source_sha256[:16]}_{width}x{height}_dynamic_batch{int8}.onnx'


def seal(entry: Path, source_sha256: str) -> None:
    """Record (atomically, in NAME.json) what a cache entry was exported from and what it holds."""
    descriptor, staged = tempfile.mkstemp(suffix='.tmp', prefix=f'.{entry.stem}.', dir=entry.parent)
    try:
        with os.fdopen(descriptor, 'w') as file:
            json.dump({'source_sha256': source_sha256, 'onnx_sha256': file_sha256(entry)}, file)
        os.replace(staged, entry.with_suffix('.json'))
    finally:
        Path(staged).unlink(missing_ok=True)


def cache_problem(entry: Path, source_sha256: str) -> str:
    """Why a cache entry must not be served ('' when its seal holds): it was sealed here, for
    this source checkpoint, and its content is what was sealed."""
    try:
        info = os.stat(entry)
        if not stat.S_ISREG(info.st_mode):
            return 'it is not a regular file'
        if oversize(info.st_size):
            return f'it {oversize(info.st_size)}'
        sealed = json.loads(entry.with_suffix('.json').read_text())
        if not isinstance(sealed, dict):
            return 'its seal is not a packnet_ros seal'
        if sealed.get('source_sha256') != source_sha256:
            return 'its seal says it was exported from another checkpoint'
        if sealed.get('onnx_sha256') != file_sha256(entry):
            return 'its content changed since it was sealed (truncated, edited or replaced)'
    except FileNotFoundError:
        return 'it has no seal'
    except (OSError, ValueError) as exc:  # ValueError: the seal is no JSON
        return f'it or its seal cannot be read: {exc}'
    return ''


def discard(entry: Path) -> None:
    """Delete a cache entry and its seal (OSError where that cannot be done)."""
    entry.unlink(missing_ok=True)
    entry.with_suffix('.json').unlink(missing_ok=True)


def prune_cache(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Delete all but the `keep` most recently written exports; what cannot be deleted stays."""
    def written(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    for stale in sorted(folder.glob('*.onnx'), key=written, reverse=True)[keep:]:
        try:
            discard(stale)
        except OSError:
            pass


def cached(entry: Path, source_sha256: str, make: Callable[[Path], object], problem: str = '') -> Path | None:
    """`entry` when its seal holds and there is no `problem` (a reason found by the caller, such
    as a failed probe); else the model make(path) writes there, sealed. Where the cache cannot
    hold it (a file or folder in the way, read-only, full), make() writes into a temporary
    directory (deleted at exit); None where that fails too. Every reason is logged."""
    if os.path.lexists(entry):
        problem = problem or cache_problem(entry, source_sha256)
        if not problem:
            return entry
        log.warning(f'ONNX cache entry {entry} is not used: {problem}; exporting it again')
    try:
        discard(entry)
        make(entry)
        seal(entry, source_sha256)
    except OSError as exc:
        log.warning(f'cannot write the ONNX cache entry {entry} ({exc}): exporting to a temporary directory instead')
    else:
        prune_cache(entry.parent)
        return entry
    try:
        scratch = Path(tempfile.mkdtemp(prefix='packnet_ros_onnx_'))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        make(scratch / entry.name)
    except OSError as exc:
        log.warning(f'cannot write the ONNX export to a temporary directory either ({exc})')
        return None
    return scratch / entry.name
