"""Shipping a model outside plmkit: ONNX export with a parity check (`plmkit export --format
onnx`) and a small onnxruntime wrapper for exported directories (`deploy.onnx.OnnxModel`).

onnx and onnxruntime are an optional extra (`pip install plmkit[deploy]`): only this package
imports them, lazily, and says so in one line when they are missing."""
