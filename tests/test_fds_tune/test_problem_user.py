"""A user's own problem (fds_tune.spec, fds_tune.problems): a small residual network with GroupNorm, dropout
and a block used twice (shared parameters), on tensors, through Ray Tune by `tune.with_parameters` and by a
registered name; its hypergradients against autograd through the unrolled loop; a Dataset read from .npy files
giving the same batches and results as the same samples in tensors; every bad input refused before training.

This module is also the importable factory of `fds-tune compare --problem` in tests/test_experiments/test_own_problem.py
(`tests.test_fds_tune.test_problem_user:make_problem`): it imports nothing from tests/support."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from fds_tune import FDSRun, Problem, ProblemConfig, ProblemSpec, Schedule, hypergradients, register_problem
from fds_tune.loop import step_seed
from fds_tune.optim import sgd
from fds_tune.run import run_to_end

CLASSES = 3
TINY = {"preset": "digits", "epochs": [1, 1], "retrain_epochs": 1, "batch_size": 16, "device": "cpu",
        "n_values": {"lr": 2, "momentum": 1, "weight_decay": 1}}


class Block(nn.Module):
    """conv-GroupNorm-ReLU-dropout-conv-GroupNorm plus the identity."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(2, c)
        self.conv2, self.gn2 = nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(2, c)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        return F.relu(x + self.gn2(self.conv2(self.drop(F.relu(self.gn1(self.conv1(x)))))))


class TinyResNet(nn.Module):
    """A stem, one residual block applied twice (its parameters shared by both uses), pooling, a linear head."""

    def __init__(self, c=4):
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(1, c, 3, padding=1), Block(c), nn.Linear(c, CLASSES)

    def forward(self, x):
        return self.head(self.block(self.block(self.stem(x))).mean(dim=(2, 3)))


def tiny_resnet(seed):
    return TinyResNet()


def tensors(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean(dim=(1, 2)) > 0).long() + (x[:, 0, 3:].mean(dim=(1, 2)) > 0.2).long()  # 3 learnable classes
    return x, y


def make_problem():
    """The problem of this module: TinyResNet on 120 + 48 tensors (the --problem factory)."""
    return ProblemSpec(model=tiny_resnet, train=tensors(120, 0), test=tensors(48, 1), num_classes=CLASSES)


class NpyDataset(torch.utils.data.Dataset):
    """Reads each sample from its own .npy file (nothing held in memory)."""

    def __init__(self, root, n):
        self.root, self.n = root, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.from_numpy(np.load(self.root / f"x{i}.npy")), int(np.load(self.root / f"y{i}.npy"))


def write_npy(root, x, y):
    root.mkdir(parents=True)
    for i in range(len(x)):
        np.save(root / f"x{i}.npy", x[i].numpy())
        np.save(root / f"y{i}.npy", y[i].numpy())
    return NpyDataset(root, len(x))


def comparable(results):
    keys = ("val_acc", "val_loss", "test_acc", "schedule", "hypergrads", "retrain_test_acc")
    return [{k: r[k] for k in keys if k in r} for r in results]


# --------------------------------------------------------------------------- through Ray Tune


def tune_results(tmp_path, trainable, config, name):
    """The results of one trial of ``trainable`` run through ``tune.run``, as its driver received them."""
    from ray import tune

    class Collect(tune.Callback):
        def __init__(self):
            self.results = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append(result)

    collect = Collect()
    analysis = tune.run(trainable, config=config, storage_path=str(tmp_path), name=name, verbose=0, callbacks=[collect])
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED", trial.error_file
    return collect.results, trial


@pytest.mark.e2e
def test_the_users_network_trains_through_tune_with_parameters_and_by_registered_name(ray_session, tmp_path, one_torch_thread):
    from ray import tune

    from baselines import ScheduleTrainable
    from baselines.schedule_run import ScheduleRun, base_config
    from fds_tune import FDSTrainable

    expected = run_to_end(FDSRun(TINY, problem=make_problem()))  # in this process: the reference
    assert expected[-1]["retrain_test_acc"] > 1 / CLASSES  # the user's network learned something
    rows, _ = tune_results(tmp_path, tune.with_parameters(FDSTrainable, problem=make_problem()), TINY, "with_parameters")
    register_problem("tiny-resnet", make_problem)  # after ray.init(): published to the cluster
    by_name, trial = tune_results(tmp_path, FDSTrainable, {**TINY, "user_problem": "tiny-resnet"}, "by_name")
    assert trial.config["user_problem"] == "tiny-resnet"
    for got in (rows, by_name):
        assert len(got) == len(expected)
        for r, e in zip(got, expected):
            assert r["val_acc"] == e["val_acc"] and r["test_acc"] == e["test_acc"]
            assert r["schedule"] == e["schedule"] and r["hypergrads"] == e["hypergrads"]
        assert got[-1]["retrain_test_acc"] == expected[-1]["retrain_test_acc"]
    # a baseline by name: the same problem, its own run
    config = {**base_config(ProblemConfig(batch_size=16, device="cpu", user_problem="tiny-resnet"), max_epochs=2), "lr_0": 0.1, "momentum_0": 0.0, "weight_decay_0": 0.0}
    baseline, _ = tune_results(tmp_path, ScheduleTrainable, config, "baseline")
    reference = run_to_end(ScheduleRun(config, problem=make_problem()))
    assert [r["val_acc"] for r in baseline] == [r["val_acc"] for r in reference]


# --------------------------------------------------------------------------- exact hypergradients


def unrolled_val_loss(model, hyper, train_b, val_b):
    """Autograd through the unrolled SGD loop, dropout masks drawn from each step's seed (fds_tune.loop.step_seed)."""
    model = copy.deepcopy(model).train()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    sizes = [p.numel() for p in params]
    theta = torch.cat([p.reshape(-1) for p in params]).requires_grad_(True)
    opt = sgd()
    state = opt.init(theta)

    def loss(theta, x, y, seed):
        torch.manual_seed(seed)
        ps = [c.view_as(p) for c, p in zip(torch.split(theta, sizes), params)]
        return F.cross_entropy(functional_call(model, dict(zip(names, ps)), (x,)), y)

    for t, (x, y) in enumerate(train_b):
        (g,) = torch.autograd.grad(loss(theta, x, y, step_seed(t)), theta, create_graph=True)
        h = {k: v[(v.numel() * t) // len(train_b)] for k, v in hyper.items()}
        theta, state = opt.update(theta, state, g, h, t)
    n = sum(len(y) for _, y in val_b)
    return sum(loss(theta, x, y, step_seed(-1 - i)) * len(y) for i, (x, y) in enumerate(val_b)) / n


@pytest.mark.parametrize("mode, group_size, every", [("forward", 1, None), ("forward", None, None), ("reverse", None, 1), ("reverse", None, 3)])
def test_hypergradients_on_the_users_network_match_autograd_through_the_unrolled_loop(mode, group_size, every):
    """Both engines (reverse mode with every state stored, and recomputing segments) draw each step's dropout masks."""
    torch.manual_seed(0)
    model = TinyResNet().double()
    x, y = tensors(40, 3)
    batches = [(x[i : i + 8].double(), y[i : i + 8]) for i in range(0, 40, 8)]
    train_b, val_b = batches[:4], batches[4:]
    values = {"lr": [0.2, 0.1], "momentum": [0.5], "weight_decay": [1e-2]}
    hg = hypergradients(model, Schedule(values), train_b, val_b, group_size=group_size, mode=mode, checkpoint_every=every)
    hyper = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    ref_loss = unrolled_val_loss(model, hyper, train_b, val_b)
    ref = dict(zip(hyper, torch.autograd.grad(ref_loss, list(hyper.values()))))
    assert hg.val_loss == pytest.approx(ref_loss.item(), rel=1e-12)
    for k in values:
        assert ((hg[k] - ref[k]).norm() / ref[k].norm()).item() < 1e-10, (k, hg[k], ref[k])
    without_dropout = copy.deepcopy(model)
    without_dropout.block.drop.p = 0.0
    assert hypergradients(without_dropout, Schedule(values), train_b, val_b).val_loss != hg.val_loss  # the masks mattered


# --------------------------------------------------------------------------- data not in memory


def test_a_dataset_read_from_npy_files_gives_the_batches_and_results_of_the_same_tensors(tmp_path, one_torch_thread):
    x, y = tensors(120, 0)
    on_disk = ProblemSpec(model=tiny_resnet, train=write_npy(tmp_path / "train", x, y), test=tensors(48, 1), num_classes=CLASSES)
    config = ProblemConfig(batch_size=16, device="cpu", seed=2)
    disk, memory = Problem(config, on_disk), Problem(config, make_problem())
    idx, _ = disk.split(0)
    for first, n, handover in ((0, 3, False), (5, 9, False), (2, 4, True)):  # across an epoch boundary; a hand-over
        a, b = list(disk.steps(idx, first, n, handover)), list(memory.steps(idx, first, n, handover))
        assert len(a) == n and all(torch.equal(p, q) for (xa, ya), (xb, yb) in zip(a, b) for p, q in ((xa, xb), (ya, yb)))
        again = list(disk.replayable(idx, handover)(first, n))  # a replay of the same steps
        assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, again))
    fds = {**TINY, "seed": 2}
    assert comparable(run_to_end(FDSRun(fds, problem=on_disk))) == comparable(run_to_end(FDSRun(fds, problem=make_problem())))
    from baselines.schedule_run import ScheduleRun, base_config

    trial = {**base_config(config, max_epochs=2), "lr_0": 0.1, "momentum_0": 0.5, "weight_decay_0": 0.0}
    a, b = run_to_end(ScheduleRun(trial, problem=on_disk)), run_to_end(ScheduleRun(trial, problem=make_problem()))
    assert [r["val_acc"] for r in a] == [r["val_acc"] for r in b] and not a[-1]["diverged"]


def mse(out, target):
    return ((out - target) ** 2).mean()


def test_an_augmented_dataset_gives_the_batches_of_the_same_tensors_from_any_step():
    x, y = tensors(64, 6)
    config = ProblemConfig(batch_size=8, device="cpu", seed=1)
    samples = Problem(config, ProblemSpec(model=tiny_resnet, train=list(zip(x, y)), test=(x, y), num_classes=CLASSES, augment=True))
    memory = Problem(config, ProblemSpec(model=tiny_resnet, train=(x, y), test=(x, y), num_classes=CLASSES, augment=True))
    for first, n in ((0, 7), (3, 2), (6, 5)):  # from the start, within an epoch (skipped batches' draws taken), across epochs
        a, b = list(samples.steps(None, first, n)), list(memory.steps(None, first, n))
        assert len(a) == n and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], x[: len(a[0][0])])  # augmented


def test_a_regression_problem_reports_the_negated_loss_as_its_metric(one_torch_thread):
    x, _ = tensors(64, 4)
    target = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
    spec = ProblemSpec(model=lambda seed: nn.Sequential(nn.Flatten(), nn.Linear(36, 1)), train=(x, target), test=(x[:16], target[:16]),
                       loss=mse, metric="loss")
    results = run_to_end(FDSRun({**TINY, "n_values": {"lr": 1}}, problem=spec))
    assert all(r["val_acc"] == pytest.approx(-r["val_loss"]) for r in results)
    assert math.isfinite(results[-1]["retrain_test_acc"]) and results[-1]["retrain_test_acc"] <= 0


# --------------------------------------------------------------------------- bad inputs, refused before any training


class NoFloatParams(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)

    def forward(self, x):
        return x.flatten(1)[:, :3] + self.table


class CountsCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.fc = nn.Linear(36, CLASSES)

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1))


class KeepsLastInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(36, CLASSES)

    def forward(self, x):
        self.last = x
        return self.fc(x.flatten(1))


X, Y = tensors(32, 5)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"train": (X.long(), Y)}, r"train inputs dtype: got torch.int64; must be a floating-point dtype"),
        ({"train": (X, Y + 1)}, r"train labels: got \(1, 3\); must be within \[0, num_classes=3\)"),
        ({"test": (X, -Y)}, r"test labels: got \(-2, 0\); must be within \[0, num_classes=3\)"),
        ({"train": (X, Y.float())}, r"train labels dtype: got torch.float32; must be an integer dtype"),
        ({"train": (X[:0], Y[:0])}, r"train size: got 0; must be at least one sample \(the dataset is empty\)"),
        ({"test": []}, r"test size: got 0; must be at least one sample"),
        ({"train": (X, Y[:31])}, r"train targets: got \(31,\); must be one target per input: 32 of them"),
        ({"test": (X[:, :, :4], Y)}, r"test input shape: got \(1, 4, 6\); must be \(1, 6, 6\), the training inputs' shape"),
        ({"train": 3}, r"train: got 'int'; must be a pair of tensors \(inputs, targets\) or a map-style Dataset"),
        ({"train": [(X[0].long(), 1)]}, r"train\[0\] input dtype: got torch.int64; must be a floating-point dtype"),
        ({"train": [X[0]]}, r"train\[0\]: got 'Tensor'; must be a pair \(input, target\)"),
        ({"train": list(zip(X, Y)), "num_classes": None}, r"num_classes: got None; must be an int >= 2 for a Dataset"),
        ({"num_classes": 1}, r"num_classes: got 1; must be an int >= 2"),
        ({"metric": "f1"}, r"metric: got 'f1'; must be one of \['accuracy', 'loss'\]"),
        ({"model": "TinyResNet"}, r"model: got 'TinyResNet'; must be a callable seed -> nn.Module"),
        ({"loss": None}, r"loss: got None; must be a callable"),
        ({"augment": 1}, r"augment: got 1; must be a bool"),
    ],
)
def test_bad_data_is_refused_naming_what_to_change(change, match):
    with pytest.raises(ValueError, match=match):
        ProblemSpec(**{"model": tiny_resnet, "train": (X, Y), "test": (X, Y), "num_classes": CLASSES, **change})


@pytest.mark.parametrize(
    "model, match",
    [
        (lambda seed: "a net", r"model\(seed\): got 'str'; must be an nn.Module"),
        (lambda seed: nn.Flatten(), r"model: got 'Flatten'; must be a network with parameters to train \(it has none\)"),
        (lambda seed: NoFloatParams(), r"model parameter 'table': got torch.int64; must be a floating-point dtype .*make it a buffer"),
        (lambda seed: CountsCalls(), r"model CountsCalls: got \"forward changes \['buffer calls'\]\"; must be a forward that changes no state"),
        (lambda seed: nn.Sequential(KeepsLastInput()), r"model 0 \(KeepsLastInput\): got \"forward changes \['last'\]\"; must be .*compute it"),
    ],
)
def test_a_network_the_functional_step_cannot_train_is_refused_naming_the_module(model, match):
    with pytest.raises(ValueError, match=match):
        Problem(ProblemConfig(device="cpu", batch_size=8), ProblemSpec(model=model, train=(X, Y), test=(X, Y)))


def mse_spec():
    """A regression problem whose loss (``F.mse_loss``) backward mode differentiates but forward mode cannot."""
    x, _ = tensors(8, 4)
    return ProblemSpec(model=lambda seed: nn.Sequential(nn.Flatten(), nn.Linear(36, 1)), train=(x, x[:, 0, 0, :1]), test=(x, x[:, 0, 0, :1]),
                       loss=F.mse_loss, metric="loss")


NOT_FORWARD_MODE = r"loss: got 'mse_loss'; must be a loss forward mode can differentiate .* \(\(out - y\) \*\* 2\).mean\(\)"


def test_a_loss_forward_mode_cannot_differentiate_is_refused_with_the_way_round_by_fds_before_any_step():
    problem = Problem(ProblemConfig(device="cpu", batch_size=4), mse_spec())  # loading it asks nothing of forward mode
    with pytest.raises(ValueError, match=NOT_FORWARD_MODE):
        problem.check_forward_mode()
    with pytest.raises(ValueError, match=NOT_FORWARD_MODE):
        FDSRun({**TINY, "batch_size": 4}, problem=mse_spec())


def test_a_dataset_label_outside_the_classes_is_named_when_its_batch_is_read():
    labels = [int(v) for v in Y]
    labels[7] = 5
    problem = Problem(ProblemConfig(device="cpu", batch_size=30), ProblemSpec(model=tiny_resnet, train=list(zip(X, labels)), test=(X, Y), num_classes=3))
    with pytest.raises(ValueError, match=r"train\[7\] label: got 5; must be within \[0, num_classes=3\)"):
        list(problem.steps(None, 0, 1))


@pytest.mark.parametrize(
    "name, match",
    [
        ("nobody-registered-this", r"user_problem: got 'nobody-registered-this'; must be a registered problem name"),
        ("fds_tune.nowhere:make", r"user_problem: got 'fds_tune.nowhere:make'; must be 'module:function' importable here \(ModuleNotFoundError"),
        ("fds_tune.config:PRESETS", r"user_problem: got 'fds_tune.config:PRESETS'; must be 'module:function' naming a callable"),
        ("fds_tune.config:fds_config", r"user_problem 'fds_tune.config:fds_config': got 'FDSConfig'; must be a factory returning a fds_tune.ProblemSpec"),
    ],
)
def test_an_unknown_problem_is_refused(name, match):
    with pytest.raises(ValueError, match=match):
        Problem(ProblemConfig(device="cpu", user_problem=name))


@pytest.mark.parametrize(
    "args, match",
    [
        (("", make_problem), r"name: got ''; must be a non-empty string without ':'"),
        (("a:b", make_problem), r"name: got 'a:b'; must be a non-empty string without ':'"),
        (("mine", "no_colon"), r"factory: got 'no_colon'; must be a callable returning a ProblemSpec, or 'module:function'"),
    ],
)
def test_register_problem_refuses_bad_names_and_factories(args, match):
    with pytest.raises(ValueError, match=match):
        register_problem(*args)


def test_a_problem_is_a_spec_or_a_problem():
    from fds_tune.problem import problem_for

    with pytest.raises(ValueError, match=r"problem: got 'tuple'; must be a Problem, a ProblemSpec or None"):
        problem_for(ProblemConfig(device="cpu"), (X, Y))
    with pytest.raises(ValueError, match=r"spec: got 'tuple'; must be a ProblemSpec or None"):
        Problem(ProblemConfig(device="cpu"), (X, Y))


@pytest.mark.parametrize("train", [(X, Y), list(zip(X, Y))])
def test_a_batch_larger_than_the_training_split_is_refused(train):
    with pytest.raises(ValueError, match=r"batch_size: got 31; must be <= the 30 training samples left after the validation split"):
        Problem(ProblemConfig(device="cpu", batch_size=31), ProblemSpec(model=tiny_resnet, train=train, test=(X, Y), num_classes=3))


def test_problem_config_refuses_an_empty_user_problem():
    with pytest.raises(ValueError, match=r"user_problem: got ''; must be None, a registered problem name or 'module:function'"):
        ProblemConfig(user_problem="")
