"""ONNX export and the onnxruntime backend: same depth as torch, provenance in the model, clear errors."""
import threading

import numpy as np
import pytest
import torch

from packnet_ros.cli import main
from packnet_ros.image import read_rgb
from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.networks import PackNetSlim01
from packnet_ros.serving import onnx_model
from packnet_ros.serving.export import ExportError, export_depth
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.onnx_model import OnnxInfo
from packnet_ros.serving.provision import resolve

from helpers import KITTI_DRIVE, require


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, make_small_checkpoint):
    # a learnt scale must survive the export
    return make_small_checkpoint(tmp_path_factory.mktemp('ckpt') / 'small.ckpt', step=42, depth=12.0, scale=1.7,
                                 pose=True)


def kitti_image():
    return read_rgb(require(KITTI_DRIVE) / 'image_02' / 'data' / '0000000002.png')


def test_export_cli_writes_checked_models_with_metadata(checkpoint, tmp_path, capsys):
    out = tmp_path / 'depth.onnx'
    assert main(['export', '--checkpoint', str(checkpoint), '--onnx', str(out), '--pose', '--dynamic-batch']) == 0
    printed = capsys.readouterr().out
    assert 'max |inverse depth difference|' in printed and 'depth_pose.onnx' in printed
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert 'GroupNormalization' not in {n.op_type for n in model.graph.node}  # opset 17: runs everywhere
    info = OnnxInfo.read(out)
    assert (info.arch, info.width, info.height_px, info.width_px, info.step) == ('PackNetSlim01', 0.25, 64, 192, 42)
    assert info.depth_scale == pytest.approx(1.7) and info.min_depth == 0.5 and info.version
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    batch = np.random.default_rng(0).random((3, 3, 64, 192), dtype=np.float32)
    assert session.run(None, {'rgb': batch})[0].shape == (3, 1, 64, 192)
    pose = ort.InferenceSession(str(tmp_path / 'depth_pose.onnx'), providers=['CPUExecutionProvider'])
    assert [i.name for i in pose.get_inputs()] == ['target', 'context0', 'context1']
    assert pose.run(None, {n: batch for n in ('target', 'context0', 'context1')})[0].shape == (3, 2, 6)


def test_onnx_model_serves_the_same_depth_as_torch(checkpoint, tmp_path):
    out = tmp_path / 'depth.onnx'
    assert main(['export', '--checkpoint', str(checkpoint), '--onnx', str(out)]) == 0
    rgb = kitti_image()
    on_torch = resolve(checkpoint, 'cpu', 'torch', 'fp32')
    reference = DepthEstimator.provision(checkpoint, on_torch).infer(rgb)
    served = DepthEstimator.provision(out, resolve(out, 'cpu', 'torch', 'fp32'), min_depth=0.0)
    batch = torch.rand(3, 3, 64, 192, generator=torch.Generator().manual_seed(0))
    assert served.backend.fixed_batch == 1  # exported without --dynamic-batch: batches go through a slice at a time
    torch.testing.assert_close(served.infer_tensor(batch), DepthEstimator.provision(checkpoint, on_torch, min_depth=0.0)
                               .infer_tensor(batch), rtol=1e-3, atol=0)  # depth; inverse depth is held to 1e-4
    assert served.backend.name == 'onnxruntime' and (served.height, served.width) == (64, 192) and served.step == 42
    np.testing.assert_allclose(served.infer(rgb), reference, rtol=1e-4)
    assert 12 * 1.7 / 1.5 < np.median(served.infer(rgb)) < 12 * 1.7 * 1.5  # the learnt scale is in the graph


def test_onnxruntime_backend_exports_a_checkpoint_once(checkpoint, tmp_path):
    rgb = kitti_image()
    on_onnxruntime = resolve(checkpoint, 'cpu', 'onnxruntime', 'fp32')
    first = DepthEstimator.provision(checkpoint, on_onnxruntime)
    cached = first.backend.path
    assert cached.is_file() and first.backend.name == 'onnxruntime'
    written = cached.stat().st_mtime_ns
    again = DepthEstimator.provision(checkpoint, on_onnxruntime)
    assert again.backend.path == cached and cached.stat().st_mtime_ns == written
    torch_depth = DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'torch', 'fp32')).infer(rgb)
    np.testing.assert_allclose(again.infer(rgb), torch_depth, rtol=1e-4)
    other_size = DepthEstimator.provision(checkpoint, on_onnxruntime, (96, 320))
    assert other_size.backend.path != cached and other_size.infer(rgb).shape == (96, 320)


def test_errors_are_clear(checkpoint, tmp_path, capsys):
    out = tmp_path / 'depth.onnx'
    assert main(['export', '--checkpoint', str(checkpoint), '--onnx', str(out)]) == 0
    with pytest.raises(ValueError, match='exported for 192x64, not 320x96'):
        DepthEstimator.provision(out, resolve(out, 'cpu', 'torch', 'fp32'), (96, 320))
    with pytest.raises(ValueError, match='needs its TensorRT provider'):
        DepthEstimator.provision(out, resolve(out, 'cpu', 'torch', 'bf16'))
    with pytest.raises(ValueError, match='backend must be one of'):
        DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'tensorflow', 'fp32'))
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a model')
    with pytest.raises(CheckpointError, match='garbage.onnx is not a readable ONNX model'):
        DepthEstimator.provision(garbage, resolve(garbage, 'cpu', 'torch', 'fp32'))
    net = PackNetSlim01(width=0.25)
    strict = tmp_path / 'strict.onnx'
    with pytest.raises(ExportError, match='differs from torch'):
        export_depth(net, strict, 64, 192, tolerance=0.0 - 1.0)
    assert not strict.exists()  # nothing half-checked is left behind
    assert main(['infer', '--checkpoint', str(garbage), str(require(KITTI_DRIVE)), str(tmp_path / 'o')]) == 2
    assert 'not a readable ONNX model' in capsys.readouterr().err


@pytest.fixture(scope='module')
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('onnx') / 'depth.onnx'
    net = DepthEstimator.provision(checkpoint, resolve(checkpoint, 'cpu', 'torch', 'fp32')).net
    export_depth(net, out, 64, 192, source='small')
    return out


def edited(source, path, edit):
    """A copy of the .onnx at `source`, at `path`, with edit(model) applied."""
    import onnx

    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(path))
    return path


def test_an_onnx_with_nan_weights_is_refused(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    def nan_weights(model):
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT:
                init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))

    nan = edited(exported, tmp_path / 'nan.onnx', nan_weights)
    with pytest.raises(CheckpointError, match=r'nan\.onnx gives non-finite inverse depth on a probe image'):
        DepthEstimator.provision(nan, resolve(nan, 'cpu', 'torch', 'fp32'))


def test_an_onnx_whose_graph_takes_another_size_is_refused(exported, tmp_path):
    def claim_96x320(model):  # metadata that disagrees with the graph's input
        for prop in model.metadata_props:
            prop.value = {'input_height': '96', 'input_width': '320'}.get(prop.key, prop.value)

    resized = edited(exported, tmp_path / 'resized.onnx', claim_96x320)
    for size in ((None, None), (96, 320)):
        with pytest.raises(CheckpointError, match=r'resized\.onnx takes rgb \[1, 3, 64, 192\], not 3x96x320 images'):
            DepthEstimator.provision(resized, resolve(resized, 'cpu', 'torch', 'fp32'), size)


def test_a_truncated_onnx_is_refused(exported, tmp_path):
    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(exported.read_bytes()[:exported.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r'truncated\.onnx is not a readable ONNX model'):
        DepthEstimator.provision(truncated, resolve(truncated, 'cpu', 'torch', 'fp32'))


def test_an_onnx_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_model, 'MAX_MODEL_BYTES', 1 << 20)
    monkeypatch.setattr('onnx.load', lambda *args, **kwargs: pytest.fail('a file over the size limit was read'))
    huge = tmp_path / 'huge.onnx'
    with open(huge, 'wb') as file:
        file.truncate((1 << 20) + 1)  # sparse: nothing written
    with pytest.raises(CheckpointError, match=r'huge\.onnx is 1\.0 MiB, over the 1 MiB limit'):
        DepthEstimator.provision(huge, resolve(huge, 'cpu', 'torch', 'fp32'))


def test_exports_from_many_threads_at_once_all_succeed(tmp_path):
    """torch.onnx.export is not re-entrant: export.py runs one at a time (checkpoints announced
    together used to fail with 'GLOBALS.in_onnx_export must be False')."""
    net = PackNetSlim01(width=0.25)
    start, errors = threading.Barrier(4), []

    def export_one(i):
        start.wait()
        try:
            export_depth(net, tmp_path / f'{i}.onnx', 64, 64)
        except Exception as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=export_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(p.name for p in tmp_path.iterdir()) == ['0.onnx', '1.onnx', '2.onnx', '3.onnx']
