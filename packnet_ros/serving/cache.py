"""The automatic export cache: what a node serves a checkpoint from on onnxruntime.

One entry per checkpoint content and size (and calibration, for int8), each sealed like a
checkpoint: NAME.json beside NAME.onnx holds the sha256 of the source checkpoint and of the
.onnx. An entry whose seal does not hold is exported again; a cache that cannot be written
sends the export to a temporary directory. TensorRT keeps its engines beside the model.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from packnet_ros.serving.onnx_model import oversize

CACHE_KEEP = 8  # exports kept: a training run announces a new checkpoint every few minutes

log = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def int8_name(frames: Sequence[np.ndarray], tolerance: float) -> str:
    """What tells int8 entries of one checkpoint apart: their calibration frames and tolerance."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(np.ascontiguousarray(frame).tobytes())
    return f'{digest.hexdigest()[:12]}_{tolerance:g}'


def engine_cache(model: Path) -> Path:
    """Where TensorRT keeps the engines it builds for `model` (minutes to build, so kept)."""
    return model.parent / 'trt_cache'


def onnx_cache_path(source_sha256: str, height: int, width: int, calibration: str = '') -> Path:
    """Where the automatic export of the checkpoint whose content hashes to `source_sha256` is
    kept at this size; `calibration` names an int8 model (int8_name)."""
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
