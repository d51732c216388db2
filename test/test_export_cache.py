"""The automatic ONNX export cache: an entry serves only when its seal (the sha256 of its source
checkpoint and of itself) and a probe pass, else it is exported again; a cache that cannot be
written never stops serving."""
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.provision import resolve

SIZE = (64, 192)
RGB = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, make_small_checkpoint):
    """The served model and another one (other weights, other scale)."""
    folder = tmp_path_factory.mktemp('ckpt')
    return tuple(make_small_checkpoint(folder / f'seed{seed}.ckpt', seed, SIZE, step=seed, depth=12.0, scale=scale)
                 for seed, scale in ((0, 1.7), (1, 0.5)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder (returned) and temporary directory for each test."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    (tmp_path / 'tmp').mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    return tmp_path / 'cache' / 'packnet_ros' / 'onnx'


def served(checkpoint: Path, precision: str = 'fp32', **kwargs) -> DepthEstimator:
    return DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'onnxruntime', precision), **kwargs)


def torch_depth(checkpoint: Path) -> np.ndarray:
    return DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'torch', 'fp32')).infer(RGB)


def poison(path: Path) -> None:
    """Every float weight of an .onnx becomes NaN."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(model, str(path))


def test_a_model_planted_under_a_cache_name_is_exported_again(checkpoints, cache, caplog):
    shipped, other = checkpoints
    entry = served(shipped).backend.path
    planted = served(other).backend.path
    assert np.median(np.abs(served(other).infer(RGB) / torch_depth(shipped) - 1)) > 0.5  # a different model
    shutil.copy(planted, entry)
    with caplog.at_level(logging.WARNING):
        again = served(shipped)
    np.testing.assert_allclose(again.infer(RGB), torch_depth(shipped), rtol=1e-4)
    assert again.backend.path == entry and 'changed since it was sealed' in caplog.text
    caplog.clear()
    for suffix in ('.onnx', '.json'):  # with its own seal: it seals another checkpoint's export
        shutil.copy(planted.with_suffix(suffix), entry.with_suffix(suffix))
    with caplog.at_level(logging.WARNING):
        again = served(shipped)
    np.testing.assert_allclose(again.infer(RGB), torch_depth(shipped), rtol=1e-4)
    assert 'exported from another checkpoint' in caplog.text


@pytest.mark.parametrize('resealed', [False, True], ids=['its_seal', 'resealed'])
def test_a_cached_export_with_nan_weights_is_exported_again(checkpoints, cache, caplog, resealed):
    shipped, _ = checkpoints
    entry = served(shipped).backend.path
    poison(entry)
    if resealed:  # a seal that matches the poisoned file: only the probe can tell
        from packnet_ros.serving.cache import file_sha256, seal

        seal(entry, file_sha256(shipped))
    with caplog.at_level(logging.WARNING):
        again = served(shipped)
    np.testing.assert_allclose(again.infer(RGB), torch_depth(shipped), rtol=1e-4)
    assert ('non-finite' if resealed else 'changed since it was sealed') in caplog.text


def test_a_truncated_cache_entry_is_exported_again(checkpoints, cache, caplog):
    shipped, _ = checkpoints
    entry = served(shipped).backend.path
    with open(entry, 'r+b') as file:
        file.truncate(entry.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        again = served(shipped)
    assert again.backend.path == entry and 'changed since it was sealed' in caplog.text
    np.testing.assert_allclose(again.infer(RGB), torch_depth(shipped), rtol=1e-4)


def test_a_truncated_int8_cache_entry_is_quantized_again(checkpoints, cache, caplog):
    shipped, _ = checkpoints
    frames = [np.random.default_rng(i).integers(0, 256, (*SIZE, 3), dtype=np.uint8) for i in range(4)]
    int8 = dict(precision='int8', calibration=frames, int8_tolerance=1.0)
    entry = served(shipped, **int8).backend.path
    with open(entry, 'r+b') as file:
        file.truncate(entry.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        again = served(shipped, **int8)
    assert again.backend.path == entry and again.precision == 'int8' and 'changed since it was sealed' in caplog.text
    assert np.isfinite(again.infer(RGB)).all()


def fail_mkdir_under(folder: Path, code: int, monkeypatch) -> None:
    """mkdir under `folder` fails with `code`, as on a read-only or full file system."""
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(folder):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, 'mkdir', mkdir)


def obstruct(cache: Path, entry: Path, obstacle: str, monkeypatch) -> None:
    if obstacle == 'file_in_the_way':
        shutil.rmtree(cache.parent)
        cache.parent.write_text('not a folder')
    elif obstacle == 'directory_in_place':
        entry.unlink()
        entry.mkdir()
        (entry / 'something').write_text('')
    elif obstacle == 'read_only':
        shutil.rmtree(cache)
        cache.mkdir()
        cache.chmod(0o555)
        if os.geteuid() == 0:  # root writes through file modes: fail as a read-only mount does
            fail_mkdir_under(cache, errno.EROFS, monkeypatch)
    else:
        shutil.rmtree(cache)
        cache.mkdir()
        fail_mkdir_under(cache, errno.ENOSPC, monkeypatch)


@pytest.mark.parametrize('obstacle', ['file_in_the_way', 'directory_in_place', 'read_only', 'no_space'])
def test_an_unusable_cache_exports_to_a_temporary_directory(checkpoints, cache, monkeypatch, caplog, obstacle):
    shipped, _ = checkpoints
    entry = served(shipped).backend.path
    obstruct(cache, entry, obstacle, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING):
            estimator = served(shipped)
    finally:
        if cache.is_dir():
            cache.chmod(0o755)
    assert estimator.backend.name == 'onnxruntime' and estimator.backend.path.is_relative_to(tempfile.gettempdir())
    assert 'temporary directory' in caplog.text
    np.testing.assert_allclose(estimator.infer(RGB), torch_depth(shipped), rtol=1e-4)


def test_with_nowhere_to_write_an_export_torch_serves(checkpoints, cache, tmp_path, monkeypatch, caplog):
    shipped, _ = checkpoints
    blocked = tmp_path / 'blocked'
    blocked.write_text('a file, not a folder')
    monkeypatch.setenv('XDG_CACHE_HOME', str(blocked))
    monkeypatch.setattr(tempfile, 'tempdir', str(blocked))
    with caplog.at_level(logging.WARNING):
        estimator = served(shipped)
    assert estimator.backend.name == 'torch' and 'serving it with torch' in caplog.text
    np.testing.assert_allclose(estimator.infer(RGB), torch_depth(shipped), rtol=1e-5)
