"""Serving depth: inference backends (torch, onnxruntime), ONNX export and its cache, int8."""
