"""Serving depth: which backend and precision (provision), inference backends (torch, onnxruntime),
ONNX export, its cache and metadata, int8 and its live calibration."""
