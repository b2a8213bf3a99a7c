"""The paper's compact networks and the expansions it trains them in.

CIFAR: ``smallnet3``, ``smallnet7``, ``mobilenet_v1_cifar``, ``mobilenet_v2_cifar``.
ImageNet: ``mobilenet_v1``, ``mobilenet_v2``, ``shufflenet_v2_x0_5``, ``alexnet_compact``.
``expand_paper(name)`` / ``PAPER_PRESETS`` expand them the way the paper does (``presets.py``).
"""
from expandnets_cuda.models.alexnet import CompactAlexNet, alexnet_compact
from expandnets_cuda.models.mobilenet_v1 import MobileNetV1, mobilenet_v1, mobilenet_v1_cifar
from expandnets_cuda.models.mobilenet_v2 import (MOBILENET_V2_CIFAR_STAGES, MOBILENET_V2_STAGES, InvertedResidual, MobileNetV2,
                           MobileNetV2Cifar, mobilenet_v2, mobilenet_v2_cifar)
from expandnets_cuda.models.presets import PAPER_PRESETS, PaperPreset, expand_paper, paper_preset
from expandnets_cuda.models.shufflenet_v2 import ShuffleNetV2, shufflenet_v2_x0_5
from expandnets_cuda.models.smallnet import ConvBlock, SmallNet, smallnet3, smallnet7

__all__ = [
    "smallnet3", "smallnet7", "mobilenet_v1_cifar", "mobilenet_v2_cifar", "mobilenet_v1", "mobilenet_v2",
    "shufflenet_v2_x0_5", "alexnet_compact", "SmallNet", "ConvBlock", "MobileNetV1", "MobileNetV2",
    "MobileNetV2Cifar", "InvertedResidual", "ShuffleNetV2", "CompactAlexNet", "MOBILENET_V2_STAGES",
    "MOBILENET_V2_CIFAR_STAGES", "PAPER_PRESETS", "PaperPreset", "expand_paper", "paper_preset",
]
