"""INT8 after contraction: static post-training quantization of an exported ONNX model, and how
hard its weights are to quantize.

``quantize_onnx`` is onnxruntime's static quantizer (what a user deploying on a CPU picks: no
retraining, a few hundred calibration images): the model pre-processed (shape inference, BN folded
into the convolutions), then QDQ format, int8 weights per output channel, uint8 activations
calibrated on the given images (MinMax).

``weight_ranges`` measures what re-parameterisation can do to a layer's weights: a merged kernel
can carry a few large values (RepVGG-style merges are known to lose accuracy in INT8 for that
reason). Per output channel, ``max|w| / std(w)`` is how many standard deviations the int8 grid must
span (larger: coarser steps for the typical weight); across channels, the ratio of the largest
channel maximum to the median one is what per-tensor quantization would pay.
"""
from __future__ import annotations

import os
import statistics
from typing import Dict, List

import torch
from torch import nn


def quantize_onnx(path: str, calibration_images: torch.Tensor, out_path: str, *, per_channel: bool = True,
                  batch: int = 32) -> str:
    """``out_path``: ``path`` quantized to INT8 (QDQ; weights int8 per channel, activations uint8),
    calibrated on ``calibration_images`` (what the model takes as input, ``(N, ...)``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from expandnets_cuda.deploy.runtime import onnx_session

    name = onnx_session(path).get_inputs()[0].name
    images = calibration_images.detach().float().cpu().numpy()

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(range(0, images.shape[0], batch))

        def get_next(self):
            start = next(self.rows, None)
            return None if start is None else {name: images[start:start + batch]}

    prepared = out_path + ".prepared.onnx"
    quant_pre_process(path, prepared)
    try:
        quantize_static(prepared, out_path, Batches(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        os.remove(prepared)
    return out_path


def weight_ranges(model: nn.Module) -> List[Dict[str, object]]:
    """Per convolution and linear layer of ``model``: the median and the largest per-channel
    ``max|w| / std(w)``, and the largest channel maximum over the median one."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach().double().reshape(module.weight.shape[0], -1)
            peaks = w.abs().amax(1)
            spread = (peaks / w.std(1, unbiased=False).clamp_min(1e-30)).tolist() if w.shape[1] > 1 else [1.0]
            rows.append({"layer": name, "shape": list(module.weight.shape),
                         "channel_peak_over_std_median": statistics.median(spread),
                         "channel_peak_over_std_max": max(spread),
                         "tensor_peak_over_median_channel_peak": (peaks.max() / peaks.median().clamp_min(1e-30)).item()})
    return rows
