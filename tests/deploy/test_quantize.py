"""How hard weights are to quantize (expandnets_cuda.deploy.quantize.weight_ranges); the INT8 file
itself is tested through the export command (tests/deploy/test_export.py)."""
import pytest
import torch
from torch import nn

from expandnets_cuda.deploy.quantize import weight_ranges


def test_weight_ranges_measure_outliers_per_channel_and_across_channels():
    conv = nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -1.0] * 4 + [1.0], [1.0, -1.0] * 4 + [10.0]]).reshape(2, 1, 3, 3))
    (row,) = weight_ranges(nn.Sequential(conv))
    assert row["layer"] == "0" and row["shape"] == [2, 1, 3, 3]
    plain = (1.0 / torch.tensor([1.0, -1.0] * 4 + [1.0]).std(unbiased=False)).item()
    outlier = (10.0 / torch.tensor([1.0, -1.0] * 4 + [10.0]).std(unbiased=False)).item()
    assert row["channel_peak_over_std_max"] == pytest.approx(outlier)
    assert row["channel_peak_over_std_median"] == pytest.approx((plain + outlier) / 2)  # median of two: their mean
    assert row["tensor_peak_over_median_channel_peak"] == pytest.approx(10.0)  # torch's median of two: the lower
