"""The paper's network zoo: exact parameter counts of each compact network and of its ExpandNet
(the paper's layer choices), and expand -> contract giving the same function (float64)."""
import json
import pathlib

import pytest
import torch

import expandnets_cuda as ec
from expandnets_cuda.models import (PAPER_PRESETS, alexnet_compact, expand_paper, mobilenet_v1,
                                    mobilenet_v1_cifar, mobilenet_v2, paper_preset, shufflenet_v2_x0_5)
from helpers import assert_rel_close, randomise_bn as _randomise_bn

_TABLES = pathlib.Path(__file__).resolve().parents[2] / "bench" / "paper_tables.json"
PAPER = json.loads(_TABLES.read_text())

# preset -> (compact params, ExpandNet params, layers expanded); exact, from our models.
COUNTS = {
    "mobilenet_v1_cifar": (3_217_226, 3_943_598, 14),
    "mobilenet_v2_cifar": (2_296_922, 3_334_462, 18),  # the paper says 3.12M: see docs/usage.md
    "mobilenet_v1": (4_231_976, 4_958_348, 14),
    "mobilenet_v2": (3_504_872, 3_666_108, 5),
    "shufflenet_v2_x0_5": (1_366_792, 1_526_428, 20),
    "alexnet_compact_ck": (7_278_824, 13_548_728, 2),
    "alexnet_compact_cl": (7_278_824, 114_648_984, 5),
}
REPRODUCED = ("mobilenet_v1_cifar", "mobilenet_v2")  # paper counts we match to its rounding


def _millions(count: int) -> float:
    return round(count / 1e6, 2)


def test_every_preset_has_a_count():
    assert set(COUNTS) == set(PAPER_PRESETS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_exact_counts(name):
    preset = paper_preset(name)
    compact = preset.build().to("meta")  # counts need no storage (AlexNet-CL has 115M parameters)
    expanded = preset.expand(compact)
    compact_params, expanded_params, n_layers = COUNTS[name]
    assert ec.count_params(compact) == compact_params
    assert ec.count_params(expanded) == expanded_params
    units = [n for n, m in expanded.named_modules() if isinstance(m, ec.FusedExpandConv2d)]
    assert units == preset.layer_names(compact) and len(units) == n_layers
    assert all(m.spec.strategy == preset.strategy and m.spec.rate == 4
               for m in expanded.modules() if isinstance(m, ec.FusedExpandConv2d))


@pytest.mark.parametrize("name", REPRODUCED)
def test_paper_counts_reproduced(name):
    compact_params, expanded_params, _ = COUNTS[name]
    assert (_millions(compact_params), _millions(expanded_params)) == paper_preset(name).paper_params


def test_paper_counts_agree_with_the_paper_tables():
    table2 = PAPER["table2_mobilenets_cifar_r4"]
    assert paper_preset("mobilenet_v1_cifar").paper_params == (
        table2["MobileNet"]["params"] / 1e6, table2["MobileNet_ExpandNet_CL"]["params"] / 1e6)
    assert paper_preset("mobilenet_v2_cifar").paper_params == (
        table2["MobileNetV2"]["params"] / 1e6, table2["MobileNetV2_ExpandNet_CL"]["params"] / 1e6)


def test_mobilenet_v2_imagenet_expands_the_first_depthwise_of_each_stride2_stage():
    names = paper_preset("mobilenet_v2").layer_names(mobilenet_v2())
    model = mobilenet_v2()
    assert names[0] == "stem.0"
    for name in names[1:]:
        conv = model.get_submodule(name)
        assert conv.groups == conv.in_channels and conv.stride == (2, 2)
    assert [model.get_submodule(n).in_channels for n in names[1:]] == [96, 144, 192, 576]


ROUND_TRIPS = {  # preset -> (model, input size); the CL AlexNet is narrowed to stay fast
    "mobilenet_v1_cifar": (mobilenet_v1_cifar, 32),
    "mobilenet_v1": (mobilenet_v1, 64),
    "mobilenet_v2": (mobilenet_v2, 64),
    "mobilenet_v2_cifar": (None, 32),
    "shufflenet_v2_x0_5": (shufflenet_v2_x0_5, 64),
    "alexnet_compact_ck": (alexnet_compact, 67),
    "alexnet_compact_cl": (lambda: alexnet_compact(num_classes=10, channels=(8, 16, 24, 24, 16)), 67),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_expand_then_contract_is_the_same_function(name):
    build, size = ROUND_TRIPS[name]
    torch.manual_seed(3)
    compact = _randomise_bn((build or paper_preset(name).build)().double()).eval()
    expanded = expand_paper(name, compact).eval()
    assert any(isinstance(m, ec.FusedExpandConv2d) for m in expanded.modules())
    contracted = ec.contract_model(expanded)
    assert ec.count_params(contracted) == ec.count_params(compact)
    assert [type(m) for m in contracted.modules()] == [type(m) for m in compact.modules()]
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(contracted(x), expanded(x), 1e-10, f"{name}: contracted vs expanded")


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="name must be one of"):
        paper_preset("resnet50")
