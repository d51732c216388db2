"""What an exported depth model says about itself: its metadata_props, read before it serves.

Export writes them (packnet_ros.serving.export, .quantization); the estimator and the cache
read them, and the size limit, so that neither imports the exporter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packnet_ros.model.checkpoints import CheckpointError

MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit: a larger .onnx is no single-file model (ours never use external data)


def is_onnx(path: str | os.PathLike) -> bool:
    """Whether `path` names an exported model (served by onnxruntime as it is) rather than a checkpoint."""
    return Path(path).suffix == '.onnx'


def oversize(size: int) -> str:
    """Why a file of `size` bytes is no ONNX model ('' when it may be one)."""
    if size <= MAX_MODEL_BYTES:
        return ''
    return f'is {size / 2**20:.1f} MiB, over the {MAX_MODEL_BYTES / 2**20:g} MiB limit of an ONNX model'


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


def add_metadata(path: Path, values: dict[str, object]) -> None:
    """Add metadata_props to the model at `path`, check it and save it in place."""
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
