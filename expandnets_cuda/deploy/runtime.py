"""An onnxruntime session on the CPU: what the export check and the quantizer's calibration run."""
from __future__ import annotations


def onnx_session(path: str):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
