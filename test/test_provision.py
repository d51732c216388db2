"""Which backend and precision serve a model: one decision (serving.provision.resolve) for the
node and the offline commands."""
import pytest
import torch

from packnet_ros.serving.onnx_model import is_onnx
from packnet_ros.serving.provision import DEFAULT_SIZE, ServingPlan, network_size, resolve

CPU, GPU = torch.device('cpu'), torch.device('cuda')


def test_auto_serving_is_int8_only_for_a_checkpoint_on_a_cpu():
    assert resolve('model.ckpt', CPU) == ServingPlan('onnxruntime', 'int8', CPU, calibrate=True)
    assert resolve('model.ckpt', CPU, 'onnxruntime') == ServingPlan('onnxruntime', 'int8', CPU, calibrate=True)
    assert resolve('model.ckpt', CPU, 'torch') == ServingPlan('torch', 'fp32', CPU)
    assert resolve('model.ckpt', GPU) == ServingPlan('torch', 'fp32', GPU)
    assert resolve('model.onnx', CPU) == ServingPlan('onnxruntime', 'fp32', CPU)  # the file decides
    assert resolve('', CPU) == ServingPlan('torch', 'fp32', CPU)  # untrained network: torch
    assert resolve('model.ckpt', CPU, precision='bf16') == ServingPlan('torch', 'bf16', CPU)
    with pytest.raises(ValueError, match='int8 needs'):
        resolve('model.ckpt', CPU, 'torch', 'int8')


def test_without_calibration_frames_auto_serves_a_checkpoint_in_float():
    assert resolve('model.ckpt', CPU, calibration=False) == ServingPlan('onnxruntime', 'fp32', CPU)
    assert resolve('model.onnx', CPU, precision='int8', calibration=False) == ServingPlan('onnxruntime', 'int8', CPU)
    with pytest.raises(ValueError, match='needs calibration frames'):
        resolve('model.ckpt', CPU, 'onnxruntime', 'int8', calibration=False)


def test_explicit_choices_are_kept_and_checked():
    assert resolve('model.ckpt', 'cpu', 'torch', 'fp32') == ServingPlan('torch', 'fp32', CPU)
    assert resolve('model.onnx', CPU, 'torch', 'fp32').backend == 'onnxruntime'  # an .onnx runs there only
    with pytest.raises(ValueError, match='backend must be one of'):
        resolve('model.ckpt', CPU, 'tensorflow')
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve('model.ckpt', CPU, precision='fp8')
    assert resolve('model.ckpt', CPU).in_float() == ServingPlan('onnxruntime', 'fp32', CPU)


def test_sizes_and_onnx_files():
    assert network_size(None) == DEFAULT_SIZE and network_size((96, 320)) == (96, 320)
    assert network_size((96, 320), 64, None) == (64, 320) and network_size(None, 0, 320) == (DEFAULT_SIZE[0], 320)
    assert is_onnx('a/b.onnx') and not is_onnx('b.ckpt') and not is_onnx('')
