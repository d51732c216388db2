"""Checkpoint I/O: official packnet-sfm `.ckpt` files and our own format.

Official files pickle a yacs `CfgNode` next to the weights. We never run pickled code:
plain files load with torch's weights-only unpickler; official ones with an unpickler
that only resolves the handful of torch/builtin names a state_dict needs and turns every
other class into an inert placeholder, so neither yacs nor packnet-sfm is needed.

Our format is a plain dict (loads with weights_only=True) written atomically: temp file,
fsync, read back and checked, rename, fsync of the directory.

Every load is verified before anything uses it: its size before it is read, the zip
records' CRCs (a flipped bit), our metadata's presence, types and meaning (every number in a
physical or buildable range, a format version we know), and that every weight is finite. A
checkpoint that fails is rejected with a CheckpointError that names the file and the field;
whatever a damaged file makes the readers raise becomes one too. The file is read into memory
once, so a checkpoint rewritten in place while it loads cannot pull pages from under us
(memory-mapped, a truncation is a SIGBUS).
"""
from __future__ import annotations

import datetime
import hashlib
import io
import math
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from packnet_ros.networks import DEPTH_NETWORKS, PackNet, PoseNet, build_depth_net

FORMAT = 'packnet_ros'
FORMAT_VERSION = 1
MAX_FILE_BYTES = 4 * 2 ** 30  # PackNet01 with pose net and optimizer moments is ~1.5 GB
# What a file may claim before we build anything from it: beyond these, networks cannot be
# built in memory or the numbers mean no camera and no scene.
MAX_WIDTH = 4.0  # channel multiplier (shipped: 0.25-1)
MAX_REF_IMAGES = 4  # context frames of the pose network (trained: 2)
MAX_INPUT_SIDE = 4096  # network input height and width, pixels
MIN_DEPTH_RANGE = (1e-3, 10.0)  # metres: the depth heads' nearest depth (official: 0.5)
DEPTH_SCALE_RANGE = (1e-3, 1e3)  # a learnt global scale (official: 1)
MAX_STEP = 2 ** 62
OFFICIAL_PREFIXES = {'depth': ('model.depth_net.', 'depth_net.'), 'pose': ('model.pose_net.', 'pose_net.')}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match a known network."""


# --------------------------------------------------------------------------------------
# Safe unpickling of official checkpoints

_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'),
    ('torch._utils', '_rebuild_tensor_v2'),
    ('torch._utils', '_rebuild_parameter'),
    ('torch._utils', '_rebuild_parameter_with_state'),
    ('torch._tensor', '_rebuild_from_type_v2'),
    ('torch.nn.parameter', 'Parameter'),
    ('torch', 'Tensor'),
    ('torch', 'Size'),
    ('torch', 'device'),
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'object'),
    ('builtins', 'dict'),
    ('builtins', 'list'),
    ('copyreg', '_reconstructor'),
}


class Placeholder(dict):
    """Stands in for any pickled class we do not trust (yacs CfgNode, loggers, ...).

    It accepts whatever the pickle stream hands it and keeps it as data; it has no
    behaviour, so loading it runs no code from the file.
    """

    pickled_name = ''

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self):
        raise pickle.PicklingError(f'placeholder for {self.pickled_name} cannot be pickled')


_placeholders: dict[str, type] = {}


def _placeholder(module: str, name: str) -> type:
    key = f'{module}.{name}'
    if key not in _placeholders:
        _placeholders[key] = type(name, (Placeholder,), {'pickled_name': key, '__module__': __name__})
    return _placeholders[key]


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == 'torch' and (name.endswith('Storage') or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        return _placeholder(module, name)


class restricted_pickle:
    """A pickle module for torch.load(pickle_module=...) built on RestrictedUnpickler."""

    Unpickler = RestrictedUnpickler
    __name__ = 'packnet_ros.restricted_pickle'

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def _check_archive(data: io.BytesIO, path: Path) -> None:
    """CRC of every record of a zip checkpoint: torch.load alone accepts flipped bits."""
    try:
        with zipfile.ZipFile(data) as archive:
            bad = archive.testzip()
    except Exception as exc:  # BadZipFile, and for flipped header bits NotImplementedError and more
        raise CheckpointError(f'checkpoint {path} is unreadable (truncated or corrupt?): {exc}') from exc
    if bad is not None:
        raise CheckpointError(f'checkpoint {path} is corrupt: record {bad!r} fails its CRC check')


def _check_file(path: Path) -> None:
    """CheckpointError unless `path` is a regular file of at most MAX_FILE_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path} does not exist') from None
    except OSError as exc:
        raise CheckpointError(f'checkpoint {path} is unreadable: {exc}') from exc
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} is not a regular file')
    if info.st_size > MAX_FILE_BYTES:
        raise CheckpointError(f'checkpoint {path} is {info.st_size / 2 ** 30:.1f} GiB, more than the '
                              f'{MAX_FILE_BYTES / 2 ** 30:.1f} GiB a checkpoint may be')


def _is_zip(file, path: Path) -> bool:
    try:
        return zipfile.is_zipfile(file)
    except Exception as exc:  # a damaged end record can raise BadZipFile (e.g. "span multiple disks")
        raise CheckpointError(f'checkpoint {path} is unreadable (truncated or corrupt?): {exc}') from exc


def _torch_load(path: Path, map_location: Any) -> tuple[Any, str]:
    """torch.load without running pickled code, after checking the archive's integrity, and the
    sha256 of the bytes loaded. What is neither a zip archive (torch's format) nor a pickle
    stream (its legacy one) is refused from its ends alone, before it is read."""
    _check_file(path)
    try:
        with open(path, 'rb') as f:
            legacy = f.read(1) == b'\x80'  # pickle's PROTO opcode: torch's legacy format
            is_zip = not legacy and _is_zip(f, path)
            if not (legacy or is_zip):
                raise CheckpointError(f'checkpoint {path} is unreadable (truncated or corrupt?): neither a zip '
                                      'archive nor a pickle stream')
            f.seek(0)
            data = io.BytesIO(f.read())
    except OSError as exc:
        raise CheckpointError(f'checkpoint {path} is unreadable: {exc}') from exc
    if is_zip:
        _check_archive(data, path)
    digest = hashlib.sha256(data.getbuffer()).hexdigest()
    try:
        try:
            data.seek(0)
            return torch.load(data, map_location=map_location, weights_only=True), digest
        except pickle.UnpicklingError:
            # Official files hold a pickled config object: load them with placeholders.
            data.seek(0)
            return torch.load(data, map_location=map_location, weights_only=False,
                              pickle_module=restricted_pickle), digest
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise CheckpointError(f'checkpoint {path} is unreadable (truncated or corrupt?): {exc}') from exc


# --------------------------------------------------------------------------------------
# Architecture inference


def _shape(state: dict, key: str, path: Path) -> torch.Size:
    if key not in state:
        raise CheckpointError(f'{path}: depth weights lack key {key!r}; not a PackNet state_dict '
                              f'(first keys: {sorted(state)[:5]})')
    return state[key].shape


def infer_depth_spec(state: dict[str, torch.Tensor], path: Path) -> tuple[str, str, float]:
    """(architecture, version, width) of a PackNet state_dict, from its shapes alone."""
    d = _shape(state, 'pack1.conv3d.weight', path)[0]
    arch = next((a for a, cls in DEPTH_NETWORKS.items() if cls.num_3d_feat == d), None)
    if arch is None:
        raise CheckpointError(f'{path}: pack1.conv3d has {d} 3D features; no known PackNet uses that')
    cls = DEPTH_NETWORKS[arch]
    ni = _shape(state, 'pre_calc.conv_base.weight', path)[0]
    n5, iconv5_in = _shape(state, 'iconv5.conv_base.weight', path)[:2]
    n4 = _shape(state, 'iconv4.conv_base.weight', path)[0]
    if iconv5_in != n5 + n4:
        raise CheckpointError(f'{path}: iconv5 takes {iconv5_in} channels, not {n5}+{n4}: a PackNet '
                              'version other than 1A (skip concatenation), which is not supported')
    return arch, '1A', ni / cls.base_ni


def _load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """load_state_dict with an error that names every missing, unexpected or mis-shaped key."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f'{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}'
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'missing keys {missing[:8]}' + (f' (+{len(missing) - 8} more)' if len(missing) > 8 else ''))
        if unexpected:
            parts.append(f'unexpected keys {unexpected[:8]}'
                         + (f' (+{len(unexpected) - 8} more)' if len(unexpected) > 8 else ''))
        if wrong:
            parts.append('shape mismatches: ' + '; '.join(wrong[:8]))
        raise CheckpointError(f'{path}: {what} weights do not match {type(net).__name__}: ' + ', '.join(parts))
    net.load_state_dict(state)


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return {}


# --------------------------------------------------------------------------------------
# Verification


def _check_state(state: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    """A {name: tensor} mapping whose floating tensors are all finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f'{path}: {what} weights are not a mapping of names to tensors')
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f'{path}: {what} weights are not finite (NaN or inf) in {len(bad)} tensors, '
                              f'e.g. {bad[:3]}')
    return state


def _check_optimizer(optimizer: Any, path: Path) -> dict | None:
    """An optimizer state_dict whose tensors are finite; whether its moments suit the networks
    is the trainer's to judge on resume (it starts them afresh otherwise)."""
    if optimizer is None:
        return None
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get('state'), dict) \
            or not isinstance(optimizer.get('param_groups'), list):
        raise CheckpointError(f'{path}: optimizer state is not an optimizer state_dict')
    for slot in optimizer['state'].values():
        tensors = {k: v for k, v in slot.items() if isinstance(v, torch.Tensor)} if isinstance(slot, dict) else {}
        _check_state(tensors, path, 'optimizer')
    return optimizer


# field: (accepted types, may be None)
_OUR_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    'arch': ((str,), False), 'version': ((str,), False), 'width': ((float, int), False),
    'nb_ref_imgs': ((int,), True), 'input_size': ((list, tuple), True), 'step': ((int,), False),
    'created': ((str,), True), 'extra': ((dict,), True), 'depth_net': ((dict,), False),
    'pose_net': ((dict,), True), 'optimizer': ((dict,), True),
}


def _check_ours(ckpt: dict, path: Path) -> None:
    """Every metadata field of our format present and of the right type."""
    for name, (types, optional) in _OUR_FIELDS.items():
        if name not in ckpt:
            raise CheckpointError(f'{path}: packnet_ros checkpoint lacks {name!r}')
        value = ckpt[name]
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise CheckpointError(f'{path}: {name!r} is {value!r} ({type(value).__name__}), expected '
                                  + ' or '.join(t.__name__ for t in types))
    version = ckpt.get('format_version', FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f'{path}: format_version {version!r} is not one this packnet_ros reads '
                              f'(1 to {FORMAT_VERSION}); a newer packnet_ros wrote it?')
    if ckpt['arch'] not in DEPTH_NETWORKS:
        raise CheckpointError(f'{path}: unknown architecture {ckpt["arch"]!r}; known: {sorted(DEPTH_NETWORKS)}')
    if ckpt['version'] != '1A':
        raise CheckpointError(f'{path}: version {ckpt["version"]!r} is not a PackNet version we build (1A)')
    _check_range(path, 'width', ckpt['width'], 0, MAX_WIDTH, low_inclusive=False)
    _check_range(path, 'step', ckpt['step'], 0, MAX_STEP)
    if ckpt['nb_ref_imgs'] is not None:
        _check_range(path, 'nb_ref_imgs', ckpt['nb_ref_imgs'], 1, MAX_REF_IMAGES)
    size = ckpt['input_size']
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       and 0 < v <= MAX_INPUT_SIDE and v % 32 == 0 for v in size)):
        raise CheckpointError(f'{path}: input_size {size!r} is not two multiples of 32 from 32 to {MAX_INPUT_SIDE}')


def _check_range(path: Path, name: str, value: float, low: float, high: float, low_inclusive: bool = True) -> float:
    """`value` itself, when it is a finite number within [low, high] (or (low, high])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (low <= value if low_inclusive else low < value) or value > high:
        raise CheckpointError(f'{path}: {name} {value!r} is outside {"[" if low_inclusive else "("}{low:g}, {high:g}]')
    return value


# --------------------------------------------------------------------------------------
# Public API


@dataclass
class Checkpoint:
    """A verified checkpoint: what network it holds, how far it was trained, its weights.

    Official packnet-sfm files have format 'packnet-sfm', no input size and no optimizer.
    """

    path: Path
    format: str
    arch: str
    version: str
    model_width: float  # the networks' channel factor (the file's 'width'), not pixels
    depth_state: dict[str, torch.Tensor]
    pose_state: dict[str, torch.Tensor] | None = None
    nb_ref_imgs: int | None = None
    input_size: tuple[int, int] | None = None
    step: int = 0
    optimizer: dict | None = None
    extra: dict = field(default_factory=dict)
    created: str | None = None
    min_depth: float = 0.5  # the depth heads' nearest depth (official networks: 0.5)
    depth_scale: float = 1.0  # multiplies every output depth (a learnt global scale; official: 1)
    sha256: str = ''  # of the file's bytes as loaded (what an export of these weights is sealed with)

    @property
    def name(self) -> str:
        return f'{self.arch}(width={self.model_width:g}) {self.path.name}'

    def networks(self) -> tuple[PackNet, PoseNet | None]:
        """Build and fill the networks (eval mode); the pose network only if the file has one."""
        try:
            return self._networks()
        except CheckpointError:
            raise
        except Exception as exc:  # what the fields checks did not foresee still names the file
            raise CheckpointError(f'{self.path}: its networks cannot be built: {exc!r}') from exc

    def _networks(self) -> tuple[PackNet, PoseNet | None]:
        depth_net = build_depth_net(self.arch, self.model_width, self.version, self.min_depth)
        depth_net.depth_scale = self.depth_scale
        _load_state(depth_net, self.depth_state, self.path, 'depth')
        pose_net = None
        if self.pose_state:
            pose_net = PoseNet(nb_ref_imgs=self.nb_ref_imgs or 2)
            _load_state(pose_net, self.pose_state, self.path, 'pose')
            pose_net.eval()
        return depth_net.eval(), pose_net


def _ours(ckpt: dict, path: Path) -> Checkpoint:
    _check_ours(ckpt, path)
    return Checkpoint(
        path=path, format=FORMAT, arch=ckpt['arch'], version=ckpt['version'], model_width=float(ckpt['width']),
        depth_state=_check_state(ckpt['depth_net'], path, 'depth'),
        pose_state=_check_state(ckpt['pose_net'], path, 'pose') if ckpt['pose_net'] is not None else None,
        nb_ref_imgs=ckpt['nb_ref_imgs'], input_size=tuple(ckpt['input_size']) if ckpt['input_size'] else None,
        step=ckpt['step'], optimizer=_check_optimizer(ckpt['optimizer'], path), extra=ckpt['extra'] or {},
        created=ckpt['created'],
        # Files written before these fields existed have the official values.
        min_depth=float(_check_range(path, 'min_depth', ckpt.get('min_depth', 0.5), *MIN_DEPTH_RANGE)),
        depth_scale=float(_check_range(path, 'depth_scale', ckpt.get('depth_scale', 1.0), *DEPTH_SCALE_RANGE)))


def _official(ckpt: Any, path: Path) -> Checkpoint:
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: neither a packnet_ros checkpoint nor a packnet-sfm one '
                              f'(no "state_dict" entry)')
    depth = _strip(state, OFFICIAL_PREFIXES['depth'])
    if not depth:
        raise CheckpointError(f'{path}: state_dict has no depth network weights '
                              f'(expected keys starting with {OFFICIAL_PREFIXES["depth"][0]!r})')
    pose = _strip(state, OFFICIAL_PREFIXES['pose']) or None
    arch, version, width = infer_depth_spec(_check_state(depth, path, 'depth'), path)
    _check_range(path, 'width (from the weights\' shapes)', width, 0, MAX_WIDTH, low_inclusive=False)
    nb_ref_imgs = None
    if pose and 'pose_pred.weight' in pose:
        nb_ref_imgs = _check_range(path, 'nb_ref_imgs (from pose_pred\'s shape)',
                                   pose['pose_pred.weight'].shape[0] // 6, 1, MAX_REF_IMAGES)
    step = ckpt.get('global_step', 0)
    return Checkpoint(path=path, format='packnet-sfm', arch=arch, version=version, model_width=width,
                      depth_state=depth, pose_state=_check_state(pose, path, 'pose') if pose else None,
                      nb_ref_imgs=nb_ref_imgs,
                      step=step if isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP
                      else 0)


def load_checkpoint(path: str | os.PathLike, map_location: Any = 'cpu') -> Checkpoint:
    """Read and verify an official packnet-sfm `.ckpt` or one of ours; CheckpointError if unusable."""
    path = Path(path)
    ckpt, digest = _torch_load(path, map_location)
    loaded = _ours(ckpt, path) if isinstance(ckpt, dict) and ckpt.get('format') == FORMAT else _official(ckpt, path)
    loaded.sha256 = digest
    return loaded


def load_networks(path: str | os.PathLike, map_location: Any = 'cpu') -> tuple[PackNet, PoseNet | None]:
    """(depth_net, pose_net or None) from an official packnet-sfm `.ckpt` or one of ours."""
    return load_checkpoint(path, map_location).networks()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, depth_net: PackNet, pose_net: PoseNet | None = None, *,
                    step: int = 0, input_size: tuple[int, int] | None = None,
                    optimizer: dict | None = None, extra: dict | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write our format atomically; the final name only ever holds a complete, verified file.

    `optimizer` is an optimizer state_dict (for resuming training); `extra` plain data
    such as loss values; `dtype` float16 halves a shipped model (weights load back as float32).
    Non-finite weights are refused (CheckpointError), never written.
    """
    path = Path(path)

    def stored(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()
                for k, v in net.state_dict().items()}

    payload = {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'arch': depth_net.arch,
        'version': depth_net.version,
        'width': depth_net.width,
        'min_depth': depth_net.min_depth,
        'depth_scale': depth_net.depth_scale,
        'nb_ref_imgs': pose_net.nb_ref_imgs if pose_net is not None else None,
        'input_size': list(input_size) if input_size else None,
        'step': int(step),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'depth_net': stored(depth_net),
        'pose_net': stored(pose_net) if pose_net else None,
        'optimizer': optimizer,
        'extra': extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        written = load_checkpoint(tmp)
        if written.step != payload['step'] or set(written.depth_state) != set(payload['depth_net']):
            raise CheckpointError(f'{tmp}: read-back differs from what was written')
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path
