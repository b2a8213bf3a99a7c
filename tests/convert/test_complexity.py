"""complexity() reproduces the rebuttal's Table 1 parameter counts exactly."""
import json
import pathlib

import pytest

import expandnets_cuda as ec
from expandnets_cuda.models import mobilenet_v2_cifar, smallnet7

PAPER = json.loads((pathlib.Path(__file__).resolve().parents[2] / "bench" / "paper_tables.json").read_text())

EXPECTED_PARAMS = {
    ("cl", 2): 562_954, ("cl", 4): 2_171_554, ("cl", 8): 8_578_066,
    ("ck", 2): 237_722, ("ck", 4): 653_250, ("ck", 8): 2_070_098,
    ("fc", 2): 339_402, ("fc", 4): 675_914, ("fc", 8): 1_742_154,
}


def _expand(strategy, rate):
    if strategy == "fc":  # Arora18: only the first FC layer
        return ec.expand_model(smallnet7(), None, rate, layers=["fc1"], fc=True)
    return ec.expand_model(smallnet7(), strategy, rate)


def test_compact_smallnet7():
    c = ec.complexity(smallnet7(), (3, 32, 32))
    assert c["train"] == c["test"] == {"params": 150_346, "macs": 6_038_144}


@pytest.mark.parametrize("strategy,rate", sorted(EXPECTED_PARAMS))
def test_table1_params(strategy, rate):
    c = ec.complexity(_expand(strategy, rate), (1, 3, 32, 32))
    assert c["train"]["params"] == EXPECTED_PARAMS[strategy, rate]
    assert c["test"] == {"params": 150_346, "macs": 6_038_144}
    paper_key = {"cl": "CL", "ck": "CK", "fc": "FC_Arora18"}[strategy]
    # The paper's table (bench/paper_tables.json) agrees too.
    assert PAPER["table1_smallnet_k7_cifar10"][paper_key][str(rate)]["params"] == EXPECTED_PARAMS[strategy, rate]
    # Our MACs (conv/linear multiply-adds only) land within 2% of the paper's.
    paper_macs = PAPER["table1_smallnet_k7_cifar10"][paper_key][str(rate)]["macs"]
    assert abs(c["train"]["macs"] / paper_macs - 1) < 0.02


def test_macs_of_an_expanded_unit_count_the_chain():
    c = ec.complexity(_expand("cl", 2), (3, 32, 32))
    assert c["train"]["macs"] == 25_018_888


def test_mobilenet_v2_cifar():
    c = ec.complexity(mobilenet_v2_cifar(), (3, 32, 32))
    assert c["train"]["params"] == 2_296_922  # the paper's Table 2: 2.30M
    nonlinear = ec.complexity(ec.expand_model(mobilenet_v2_cifar(), "cl", 2, nonlinear=True), (3, 32, 32))
    assert nonlinear["test"] is None
