"""int8 quantization: calibrated on real frames, checked against float, refused when it changes depth."""
import numpy as np
import pytest
import torch

from packnet_ros.cli import main
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.image import read_rgb, to_tensor
from packnet_ros.model.checkpoints import load_checkpoint
from packnet_ros.serving.export import ExportError, export_depth
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.onnx_model import OnnxInfo
from packnet_ros.serving.provision import resolve
from packnet_ros.serving.quantization import MIN_FRAMES, CalibrationFrames, float_only_nodes, quantize_depth

from helpers import KITTI_DRIVE, REPO, require

SHIPPED = REPO / 'models' / 'synthetic_scale_free.ckpt'
SIZE = (96, 320)


@pytest.fixture(scope='module')
def frames():
    """KITTI_tiny's 7 frames at network size: the first 4 calibrate, the last 3 are held out."""
    drive = KittiDrive(require(KITTI_DRIVE))
    return [to_tensor(read_rgb(drive.image_path(f)), *SIZE)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
            for f in drive.frames]


@pytest.fixture(scope='module')
def fp32_model(tmp_path_factory):
    """The shipped trained model exported in float: trained weights, as int8 meets them in use."""
    path = tmp_path_factory.mktemp('fp32') / 'shipped.onnx'
    export_depth(load_checkpoint(SHIPPED).networks()[0], path, *SIZE, source='shipped')
    return path


@pytest.fixture(scope='module')
def int8_model(fp32_model, frames, tmp_path_factory):
    out = tmp_path_factory.mktemp('int8') / 'shipped_int8.onnx'
    return quantize_depth(fp32_model, out, frames[:4])


def torch_depth(rgb):
    return DepthEstimator.provision(SHIPPED, resolve(SHIPPED, 'cpu', 'torch', 'fp32'), SIZE).infer(rgb)


def test_int8_model_keeps_depth_on_frames_it_was_not_calibrated_on(int8_model, frames):
    served = DepthEstimator.provision(int8_model.path, resolve(int8_model.path, 'cpu', 'torch', 'fp32'))
    assert (served.backend.name, served.precision) == ('onnxruntime', 'int8')
    for rgb in frames[4:]:
        expected, got = torch_depth(rgb), served.infer(rgb)
        relative = np.abs(got - expected) / expected
        assert np.median(relative) < 0.03  # int8 steps are ~1/256 of each activation's range
        assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99
    # the reported difference is that of the calibration frames, against torch as well
    on_calibration = np.concatenate([(np.abs(served.infer(f) - torch_depth(f)) / torch_depth(f)).ravel()
                                     for f in frames[:4]])
    assert int8_model.depth_difference == pytest.approx(np.median(on_calibration), rel=0.05, abs=1e-4)


def test_int8_model_says_what_it_is_and_keeps_3d_and_head_convolutions_float(int8_model):
    import onnx

    info = OnnxInfo.read(int8_model.path)
    assert (info.precision, info.arch, info.height_px, info.width_px, info.source) == (
        'int8', 'PackNetSlim01', *SIZE, 'shipped')
    model = onnx.load(str(int8_model.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert int(meta['calibration_frames']) == 4
    assert float(meta['int8_depth_difference']) == pytest.approx(int8_model.depth_difference, abs=1e-6)
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == 'DequantizeLinear'}
    convs = [n for n in model.graph.node if n.op_type == 'Conv']
    quantized = [n for n in convs if n.input[1] in dequantized]
    kept = set(float_only_nodes(model))
    assert len(quantized) > 20 and len(kept) == len(convs) - len(quantized)
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    assert sum(ranks.get(n.input[1]) == 5 for n in convs) == 10  # one 3D convolution per (un)packing block...
    assert all(n.name in kept for n in convs if ranks.get(n.input[1]) == 5)  # ...all of them float


def test_refused_when_int8_changes_depth_beyond_tolerance(fp32_model, frames, tmp_path):
    out = tmp_path / 'strict.onnx'
    with pytest.raises(ExportError, match='int8 changes depth by'):
        quantize_depth(fp32_model, out, frames[:4], tolerance=1e-6)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_clear_errors(fp32_model, int8_model, frames, tmp_path):
    with pytest.raises(ExportError, match=f'at least {MIN_FRAMES} frames'):
        quantize_depth(fp32_model, tmp_path / 'few.onnx', frames[:MIN_FRAMES - 1])
    with pytest.raises(ExportError, match='already int8'):
        quantize_depth(int8_model.path, tmp_path / 'twice.onnx', frames[:4])
    with pytest.raises(ValueError, match='is a float model'):
        DepthEstimator.provision(fp32_model, resolve(fp32_model, 'cpu', 'torch', 'int8'))
    with pytest.raises(ValueError, match='needs the onnxruntime backend'):
        DepthEstimator.provision(SHIPPED, resolve(SHIPPED, 'cpu', 'torch', 'int8'), calibration=frames[:4])
    with pytest.raises(ValueError, match='int8 models run on the CPU'):
        DepthEstimator(int8_model.path, *SIZE, torch.device('cuda'), precision='int8')


def test_checkpoint_in_int8_is_quantized_once_per_calibration(frames):
    int8 = resolve(SHIPPED, 'cpu', 'onnxruntime', 'int8')
    first = DepthEstimator.provision(SHIPPED, int8, SIZE, calibration=frames[:4])
    assert first.precision == 'int8' and OnnxInfo.read(first.net).precision == 'int8'
    written = first.net.stat().st_mtime_ns
    again = DepthEstimator.provision(SHIPPED, int8, SIZE, calibration=frames[:4])
    assert again.net == first.net and again.net.stat().st_mtime_ns == written  # cached, not redone
    other = DepthEstimator.provision(SHIPPED, int8, SIZE, calibration=frames[1:5])
    assert other.net != first.net  # other frames, other model


def test_export_cli_writes_an_int8_model(tmp_path, capsys):
    out = tmp_path / 'int8.onnx'
    drive = require(KITTI_DRIVE)
    assert main(['export', '--checkpoint', str(SHIPPED), '--onnx', str(out), '--height', str(SIZE[0]),
                 '--width', str(SIZE[1]), '--int8', '--calibration', str(drive), '--calibration-frames', '4']) == 0
    assert 'on 4 calibration frames' in capsys.readouterr().out
    assert OnnxInfo.read(out).precision == 'int8' and sorted(p.name for p in tmp_path.iterdir()) == ['int8.onnx']
    with pytest.raises(SystemExit, match='--int8 needs --calibration'):
        main(['export', '--checkpoint', str(SHIPPED), '--onnx', str(out), '--int8'])


def test_calibration_frames_are_spread_in_time():
    kept = CalibrationFrames(count=4, period=2.0)
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[0, 1] = frame[1, 0] = 100  # a chequerboard: a scene, not a lens cap
    completed = [kept.offer(frame + i, stamp=0.5 * i) for i in range(14)]
    assert [f[0, 0, 0] for f in kept.frames] == [0, 4, 8, 12]  # every 2 s of a 2 Hz stream
    assert completed.index(True) == 12 and completed.count(True) == 1 and kept.complete
    frame += 1  # kept frames are copies: a reused buffer does not change them
    assert kept.frames[0][0, 0, 0] == 0
    with pytest.raises(ValueError, match='at least'):
        CalibrationFrames(count=MIN_FRAMES - 1, period=0.0)


def test_featureless_frames_are_not_kept_for_calibration():
    """16 black frames (a lens cap, a dark garage) calibrated an int8 model that passed its check
    on them and changed real frames' depth by 12 %."""
    kept = CalibrationFrames(count=4, period=0.0)
    rng = np.random.default_rng(0)
    for level in (0, 30, 255):
        assert not kept.offer(np.full((48, 64, 3), level, np.uint8), stamp=level)
    assert not kept.offer(rng.normal(20, 3, (48, 64, 3)).clip(0, 255).astype(np.uint8), stamp=1)  # dark, noisy
    assert kept.refused == 4 and not kept.frames
    scene = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert [kept.offer(scene, stamp=10 + i) for i in range(4)] == [False, False, False, True]


def test_the_calibrator_keeps_frames_only_where_int8_calibrates(frames):
    from packnet_ros.serving.calibration import Int8Calibrator, Int8State

    calibrator = Int8Calibrator(resolve(SHIPPED, 'cpu'), 4, 0.0)  # auto on a CPU: int8, calibrated here
    assert calibrator.state is Int8State.CALIBRATING and calibrator.status() == 'calibrating: 0/4 frames'
    assert [calibrator.offer(rgb, float(i)) for i, rgb in enumerate(frames[:4])] == [False, False, False, True]
    assert calibrator.status() == 'calibrating: 4/4 frames'
    unused = Int8Calibrator(resolve(SHIPPED, 'cpu', 'torch'), 4, 0.0)
    assert unused.state is Int8State.NOT_USED and not unused.offer(frames[0], 0.0) and unused.status() == 'not used'
