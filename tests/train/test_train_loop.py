"""Training side of the pipeline: tiny end-to-end runs on the embedded digits and on a fake CIFAR
archive, exact contraction after training, +Init, distillation, repeatability, resumption, CLI."""
from __future__ import annotations

import copy
import csv
import json
import math
import os

import pytest
import torch
from helpers import REL_TOL, assert_rel_close

from expandnets_cuda import FusedExpandConv2d, FusedExpandLinear
from expandnets_cuda.train import (Architecture, TrainConfig, build_model, evaluate, kd_loss, load_dataset, load_model,
                                   run)
from expandnets_cuda.train import checkpoint, pipeline
from expandnets_cuda.train.__main__ import main
from expandnets_cuda.train.loader import BatchLoader, channel_stats
from test_train_data import one_thread, write_archive  # noqa: F401 (one_thread: autouse fixture)

# A few steps on a few images: every run below takes well under a second.
TINY = dict(dataset="digits", train_limit=48, test_limit=40, batch_size=16, epochs=2, milestones=(1,),
            lr=0.05, progress=False, verbose=False)


def tiny(tmp_path, name="run", **options) -> TrainConfig:
    return TrainConfig(**{**TINY, "out_dir": str(tmp_path / name), **options})


def _metrics(history):
    """Everything but the wall time."""
    return [(r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in history]


def _digits_test_loader():
    """The test images of a TINY run, normalised as the run normalises them."""
    data = load_dataset("digits")
    mean, std = channel_stats(data.train.head(TINY["train_limit"]).images)
    return BatchLoader(data.test.head(TINY["test_limit"]), 64, mean, std, device="cpu")


# --- end to end and contraction ------------------------------------------------------------------------

@pytest.mark.parametrize("model,form", [("smallnet3", "cl"), ("smallnet3", "fc"), ("smallnet3", "cl+fc"),
                                        ("smallnet7", "ck+fc")])
def test_trained_expandnet_contracts_to_the_same_function(tmp_path, model, form):
    result = run(tiny(tmp_path, model=model, form=form, rate=2))
    assert any(isinstance(m, (FusedExpandConv2d, FusedExpandLinear)) for m in result.model.modules())
    assert not any(isinstance(m, (FusedExpandConv2d, FusedExpandLinear)) for m in result.compact_model.modules())
    check = result.contraction
    assert check.ok and check.differing_predictions == 0
    assert check.expanded_accuracy == check.contracted_accuracy
    assert check.max_abs_logit_diff < 1e-3

    # Independently: logits of both networks, and of the saved compact model rebuilt from its file.
    loader = _digits_test_loader()
    expanded = evaluate(result.model, loader)
    assert_rel_close(evaluate(result.compact_model, loader).logits, expanded.logits, REL_TOL[torch.float32],
                     "contracted logits")
    reloaded, arch = load_model(os.path.join(result.out_dir, "model_compact.pt"))
    assert arch.form == "compact"
    reloaded_eval = evaluate(reloaded, loader)
    assert_rel_close(reloaded_eval.logits, expanded.logits, REL_TOL[torch.float32], "reloaded compact logits")
    assert reloaded_eval.accuracy == expanded.accuracy

    summary = json.load(open(os.path.join(result.out_dir, "summary.json")))
    assert summary["contraction"]["ok"] and summary["architecture"]["form"] == form
    with open(os.path.join(result.out_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s"}
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.005])  # divided by 10 at milestone 1
    assert os.path.getsize(os.path.join(result.out_dir, "curves.png")) > 1000


def test_compact_form_has_nothing_to_contract(tmp_path):
    result = run(tiny(tmp_path, form="compact"))
    assert result.contraction is None and result.compact_model is result.model
    assert "nothing to contract" in result.summary()
    assert not os.path.exists(os.path.join(result.out_dir, "model_compact.pt"))


def test_default_digits_run_learns(tmp_path):
    """A short run on all of digits gets far above chance (10%)."""
    result = run(TrainConfig(dataset="digits", form="compact", epochs=3, lr=0.05, out_dir=str(tmp_path / "r"),
                             progress=False, verbose=False))
    assert result.history[-1].test_acc > 0.6


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_end_to_end_on_fake_cifar_archive(tmp_path, name):
    archive = write_archive(tmp_path / "data", name)
    result = run(TrainConfig(dataset=name, data_dir=archive, form="cl", rate=2, epochs=1, batch_size=8,
                             out_dir=str(tmp_path / "run"), progress=False, verbose=False))
    assert result.config.hflip and result.config.milestones == ()
    assert result.arch.num_classes == (10 if name == "cifar10" else 100) and result.arch.in_channels == 3
    assert result.contraction.ok and result.contraction.expanded_accuracy == result.contraction.contracted_accuracy


def test_config_defaults_follow_the_paper_for_cifar():
    config = TrainConfig(dataset="cifar10", data_dir="x").resolved()
    assert (config.epochs, config.milestones, config.lr, config.momentum, config.batch_size) == (150, (50, 100), 0.01,
                                                                                                  0.9, 128)
    assert config.crop_padding == 4 and config.hflip and config.weight_decay == 0
    digits = TrainConfig().resolved()
    assert (digits.dataset, digits.epochs, digits.milestones, digits.hflip) == ("digits", 30, (10, 20), False)
    assert digits.out_dir == os.path.join("runs", "digits-smallnet3-cl4")


@pytest.mark.parametrize("options,message", [
    (dict(form="bogus"), "form must be one of"),
    (dict(init=True, form="compact"), "init"),
    (dict(epochs=0), "epochs must be a positive int"),
    (dict(milestones=(5, 3)), "milestones must be increasing"),
    (dict(rate=0.5), "rate must be a number >= 1"),
    (dict(teacher="t.pt", teacher_model="smallnet7"), "either teacher"),
    (dict(kd_alpha=1.5), "kd_alpha"),
    (dict(resume=True, overwrite=True), "exclude each other"),
])
def test_config_errors_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, **options}).resolved()


def test_ck_on_a_net_without_large_kernels_is_refused():
    arch = Architecture("smallnet3", "ck", 4, 10, 1, 32)
    with pytest.raises(ValueError, match="expands no layer"), pytest.warns(UserWarning):
        build_model(arch)
    assert Architecture.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="unknown architecture field"):
        Architecture.from_dict({**arch.to_dict(), "depth": 3})


# --- +Init ----------------------------------------------------------------------------------------------

def test_plus_init_starts_the_expandnet_from_the_trained_nonlinear_weights(tmp_path, monkeypatch):
    started = {}
    real_fit = pipeline.fit

    def recording_fit(model, arch, *args, phase, **kwargs):
        started[phase] = copy.deepcopy(model.state_dict())
        return real_fit(model, arch, *args, phase=phase, **kwargs)

    monkeypatch.setattr(pipeline, "fit", recording_fit)
    result = run(tiny(tmp_path, form="cl+fc", rate=2, init=True))
    assert set(started) == {"nonlinear", "main"}

    nonlinear, arch = load_model(os.path.join(result.out_dir, "nonlinear", "model.pt"))
    assert arch.nonlinear
    trained = nonlinear.state_dict()
    assert started["main"].keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(started["main"][key], value), f"{key} was not transferred"
    # The nonlinear phase really trained (its weights left their initial values), so the equality
    # above is the transfer's doing.
    assert any(not torch.equal(started["nonlinear"][k], trained[k]) for k in trained if k.endswith("weight"))
    assert result.contraction.ok


# --- knowledge distillation -------------------------------------------------------------------------------

def test_kd_loss_matches_a_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    targets = [1, 2]
    temperature, alpha = 2.0, 0.7

    def softmax(row, t):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    ce = sum(-math.log(softmax(s, 1.0)[y]) for s, y in zip(student, targets)) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(t, temperature), softmax(s, temperature)))
             for s, t in zip(student, teacher)) / 2
    expected = (1 - alpha) * ce + alpha * temperature ** 2 * kl
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), 3.0, 0.0).item() == \
        pytest.approx(ce, rel=1e-6)
    with pytest.raises(ValueError, match="kd_temperature"):
        kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), 0.0, 0.5)


def test_distillation_from_a_trained_teacher_and_from_its_file(tmp_path):
    first = run(tiny(tmp_path, "trained", form="cl", rate=2, teacher_model="smallnet3", teacher_form="cl+fc",
                     teacher_rate=2))
    teacher_file = os.path.join(first.out_dir, "teacher", "model.pt")
    teacher, arch = load_model(teacher_file)
    assert (arch.model, arch.form, arch.rate) == ("smallnet3", "cl+fc", 2.0)
    assert first.contraction.ok

    second = run(tiny(tmp_path, "from_file", form="compact", teacher=teacher_file))
    assert second.history[-1].train_loss != run(tiny(tmp_path, "no_kd", form="compact")).history[-1].train_loss

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run(tiny(tmp_path, "bad", teacher=str(tmp_path / "missing.pt")))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt.*not an expandnets_cuda.train file"):
        run(tiny(tmp_path, "bad2", teacher=str(tmp_path / "plain.pt")))
    with pytest.raises(ValueError, match="in_channels=1, this dataset needs 3"):
        run(tiny(tmp_path, "bad3", teacher=teacher_file, dataset="cifar10",
                 data_dir=write_archive(tmp_path / "data", "cifar10"), train_limit=None, test_limit=None))


# --- repeatability and resumption ----------------------------------------------------------------------------

def test_same_seed_same_run_other_seed_other_run(tmp_path):
    a = run(tiny(tmp_path, "a", seed=3))
    b = run(tiny(tmp_path, "b", seed=3))
    c = run(tiny(tmp_path, "c", seed=4))
    assert _metrics(a.history) == _metrics(b.history)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert _metrics(a.history) != _metrics(c.history)


class _Interrupted(Exception):
    pass


def test_resume_after_an_interruption_ends_exactly_where_an_uninterrupted_run_does(tmp_path, monkeypatch):
    options = dict(form="cl+fc", rate=2, epochs=3, milestones=(2,), weight_decay=1e-3)
    whole = run(tiny(tmp_path, "whole", **options))

    real_save = checkpoint.save_state

    def save_then_stop(path, **kwargs):
        real_save(path, **kwargs)
        if kwargs["epoch"] == 2:
            raise _Interrupted

    monkeypatch.setattr(checkpoint, "save_state", save_then_stop)
    with pytest.raises(_Interrupted):
        run(tiny(tmp_path, "parts", **options))
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    saved = checkpoint.load_state(str(tmp_path / "parts" / "checkpoint.pt"))
    assert saved["epoch"] == 2 and saved["optimizer"]["state"]  # momentum buffers are saved

    with pytest.raises(ValueError, match="already exists: pass resume=True"):
        run(tiny(tmp_path, "parts", **options))
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        run(tiny(tmp_path, "parts", resume=True, **{**options, "lr": 0.1}))

    resumed = run(tiny(tmp_path, "parts", resume=True, **options))
    assert _metrics(resumed.history) == _metrics(whole.history)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


# --- command line ------------------------------------------------------------------------------------------

def test_cli_prints_expanded_and_contracted_results(tmp_path, capsys):
    code = main(["--model", "smallnet3", "--form", "cl", "--rate", "2", "--dataset", "digits", "--epochs", "1",
                 "--train-limit", "32", "--test-limit", "32", "--batch-size", "16", "--no-progress", "--quiet",
                 "--out-dir", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0
    assert "expanded" in out and "contracted" in out and "max |diff|" in out and "OK" in out
    assert os.path.exists(tmp_path / "cli" / "model_compact.pt")


def test_cli_reports_bad_data_dir(tmp_path, capsys):
    code = main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "absent"), "--no-progress",
                 "--out-dir", str(tmp_path / "cli")])
    assert code == 2
    assert "absent" in capsys.readouterr().err


def test_the_help_prints_each_default_once():
    from expandnets_cuda.train.__main__ import build_parser
    text = build_parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: epochs/3, 2*epochs/3)") == 1
    assert "(default: 4.0)" in text  # a real default is still shown (--rate)
