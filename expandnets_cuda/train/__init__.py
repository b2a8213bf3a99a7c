"""Training pipeline: the paper's models in every form (compact, CL, CK, FC, CL+FC, CK+FC), "+Init",
knowledge distillation and exact contraction at the end, on the embedded digits or on CIFAR.

    python -m expandnets_cuda.train --model smallnet3 --form cl --rate 4 --dataset digits

or from Python::

    from expandnets_cuda.train import TrainConfig, run
    result = run(TrainConfig(model="smallnet7", form="ck", rate=4, dataset="cifar10", data_dir="data"))
    print(result.summary())

Importing this package loads neither tqdm, matplotlib nor scikit-learn; they load when a run
shows progress, plots its curves, or reads the digits.
"""
from expandnets_cuda.train.checkpoint import load_model
from expandnets_cuda.train.config import TrainConfig
from expandnets_cuda.train.cpu_memory import retain_freed_memory
from expandnets_cuda.train.data import ImageDataset, ImageSplit, load_dataset
from expandnets_cuda.train.distill import kd_loss
from expandnets_cuda.train.evaluate import ContractionCheck, contract_and_check, evaluate
from expandnets_cuda.train.forms import FORMS, MODELS, Architecture, build_model
from expandnets_cuda.train.pipeline import TrainResult, run

__all__ = [
    "TrainConfig", "run", "TrainResult", "Architecture", "build_model", "FORMS", "MODELS", "kd_loss",
    "load_model", "load_dataset", "ImageDataset", "ImageSplit", "evaluate", "contract_and_check",
    "ContractionCheck", "retain_freed_memory",
]
