"""HD (fds_tune.hd) against independent references: reverse-mode autograd of the
next-step minibatch loss, hand-written SGD derivatives, and torch.optim.SGD."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from fds_tune.hd import HDState, hd_init, hd_train, hd_update, hypergradient, step_direction
from fds_tune.optim import get_optimizer, sgd

DT = torch.float64
KINDS = ("lr", "momentum", "weight_decay")
INIT = {"lr": 0.2, "momentum": 0.5, "weight_decay": 0.01}  # non-zero, so that every kind has a hypergradient
BETA = {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.05}  # large enough that the values move visibly
BOUNDS = {"lr": (0.0, math.inf), "momentum": (0.0, 0.99), "weight_decay": (0.0, math.inf)}


def tiny_model(bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(12, 7)] + ([nn.BatchNorm1d(7)] if bn else []) + [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers).to(DT)


def batches(n, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 12, generator=g, dtype=DT), torch.randint(0, 3, (batch,), generator=g)) for _ in range(n)]


def loss_at(model, theta, x, y):
    """Train-mode loss of ``model`` with flat parameters ``theta`` (differentiable in theta)."""
    names = [n for n, _ in model.named_parameters()]
    chunks = torch.split(theta, [p.numel() for p in model.parameters()])
    params = {n: c.view_as(p) for n, c, p in zip(names, chunks, model.parameters())}
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("clamp", [None, 0.05])
@pytest.mark.parametrize("bn", [False, True])
def test_hypergradient_is_autograd_derivative_of_next_step_loss(bn, clamp):
    """At every step t, HD's hypergradient dL_{t+1}/dh_t equals autograd through a hand-written
    SGD step from torch.optim.SGD's state at t, and h_{t+1} = clip(h_t - beta * it)."""
    model, train_b = tiny_model(bn), batches(6)
    res = hd_train(model, hd_init(INIT), train_b, hyper_lr=BETA, bounds=BOUNDS, grad_clamp=clamp)
    assert not res.diverged and res.values.shape == res.hypergrads.shape == (6, 3)
    assert torch.isnan(res.hypergrads[0]).all()  # nothing to adapt before the first step

    ref = copy.deepcopy(model).train()
    probe = copy.deepcopy(model).train()  # evaluates losses at given weights; its BN buffers are never read
    opt = torch.optim.SGD(ref.parameters(), lr=0.0)
    for t, (x, y) in enumerate(train_b):
        h = dict(zip(KINDS, res.values[t].tolist()))
        theta = flat(ref)
        v = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in ref.parameters()]) if t else torch.zeros_like(theta)
        if t + 1 < len(train_b):  # reference hypergradient of step t: derivative of the loss on batch t+1
            hyper = torch.tensor([h[k] for k in KINDS], dtype=DT, requires_grad=True)
            lr, mu, wd = hyper
            th = theta.clone().requires_grad_(True)
            g = torch.autograd.grad(loss_at(probe, th, x, y), th)[0]
            g = g if clamp is None else g.clamp(-clamp, clamp)
            v_next = mu * v + g + wd * theta
            next_loss = loss_at(probe, theta - lr * v_next, *train_b[t + 1])
            expected = torch.autograd.grad(next_loss, hyper)[0]
            torch.testing.assert_close(res.hypergrads[t + 1], expected, rtol=1e-9, atol=1e-13)
            stepped = torch.tensor([min(max(h[k] - BETA[k] * e, BOUNDS[k][0]), BOUNDS[k][1]) for k, e in zip(KINDS, expected.tolist())], dtype=DT)
            torch.testing.assert_close(res.values[t + 1], stepped, rtol=1e-12, atol=1e-15)
        # the inner step itself is torch.optim.SGD with this step's values
        for group in opt.param_groups:
            group.update(lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        if clamp is not None:
            for p in ref.parameters():
                p.grad.clamp_(-clamp, clamp)
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(res.state.params[n], p.detach(), rtol=1e-10, atol=1e-13)
    for n, b in ref.named_buffers():
        torch.testing.assert_close(res.state.buffers[n], b, rtol=1e-10, atol=1e-13)
    assert (res.values[-1] != res.values[0]).all()  # every kind was adapted


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_nesterov", "adamw"])
def test_generic_over_optimizers_matches_reverse_mode(optimizer):
    """One code path for every kind of every optimizer: jvp directions against reverse mode."""
    opt = get_optimizer(optimizer)
    init = {"lr": 0.05, "momentum": 0.6, "beta1": 0.8, "beta2": 0.95, "weight_decay": 0.02}
    init = {k: init[k] for k in opt.hyper_names}
    beta = {k: 1e-3 for k in opt.hyper_names}
    model, train_b = tiny_model(), batches(4, seed=3)
    pieces, used, state, hd = [], [], None, hd_init(init)
    for b in train_b:  # one step at a time, to read theta_t, the optimizer state and h_t
        pieces.append((state, hd))
        r = hd_train(model, hd, [b], hyper_lr=beta, optimizer=optimizer, start=state)
        state, hd = r.state, r.hd
        used.append(r.values[0])
    for t in range(len(train_b) - 1):
        start = pieces[t][0]
        theta = flat(model) if start is None else torch.cat([p.reshape(-1) for p in start.params.values()])
        opt_state = opt.init(theta) if start is None else start.opt_state
        hyper = used[t].clone().requires_grad_(True)
        th = theta.clone().requires_grad_(True)
        g = torch.autograd.grad(loss_at(model, th, *train_b[t]), th)[0]
        new_theta, _ = opt.update(theta, opt_state, g, dict(zip(opt.hyper_names, hyper.unbind(0))), t)
        expected = torch.autograd.grad(loss_at(model, new_theta, *train_b[t + 1]), hyper)[0]
        got = hd_train(model, pieces[t + 1][1], [train_b[t + 1]], hyper_lr=beta, optimizer=optimizer, start=pieces[t + 1][0])
        torch.testing.assert_close(got.hypergrads[0], expected, rtol=1e-9, atol=1e-13)


def test_sgd_directions_in_closed_form():
    """d theta'/d(lr, momentum, wd) = (-v', -lr v, -lr theta) for SGD."""
    g = torch.Generator().manual_seed(0)
    theta, v, grad = (torch.randn(10, generator=g, dtype=DT) for _ in range(3))
    h = {"lr": torch.tensor(0.3, dtype=DT), "momentum": torch.tensor(0.7, dtype=DT), "weight_decay": torch.tensor(0.1, dtype=DT)}
    (new_theta, (new_v,)), d = step_direction(sgd(), theta, (v,), grad, h, 0)
    torch.testing.assert_close(new_v, 0.7 * v + grad + 0.1 * theta)
    torch.testing.assert_close(new_theta, theta - 0.3 * new_v)
    torch.testing.assert_close(d, torch.stack([-new_v, -0.3 * v, -0.3 * theta]))
    a = hypergradient(d, grad, KINDS)
    assert set(a) == set(KINDS) and a["lr"] == pytest.approx(float(-(new_v @ grad)))


def test_pieces_equal_one_run():
    model, train_b = tiny_model(bn=True), batches(7, seed=4)
    whole = hd_train(model, hd_init(INIT), train_b, hyper_lr=BETA, bounds=BOUNDS, grad_clamp=0.1)
    first = hd_train(model, hd_init(INIT), train_b[:3], hyper_lr=BETA, bounds=BOUNDS, grad_clamp=0.1)
    rest = hd_train(model, first.hd, train_b[3:], hyper_lr=BETA, bounds=BOUNDS, grad_clamp=0.1, start=first.state)
    assert rest.state.step == whole.state.step == 7
    for n in whole.state.params:
        assert torch.equal(rest.state.params[n], whole.state.params[n])
    assert torch.equal(torch.cat([first.values, rest.values]), whole.values)
    for k in KINDS:
        assert torch.equal(rest.hd.hypers[k], whole.hd.hypers[k])


def test_update_clips_to_bounds_and_zero_rate_freezes_a_kind():
    h = {k: torch.tensor(v, dtype=DT) for k, v in {"lr": 0.1, "momentum": 0.98, "weight_decay": 0.5}.items()}
    a = {k: torch.tensor(v, dtype=DT) for k, v in {"lr": 10.0, "momentum": -10.0, "weight_decay": 3.0}.items()}
    new = hd_update(h, a, {"lr": 0.1, "momentum": 0.1, "weight_decay": 0.0}, BOUNDS)
    assert new["lr"].item() == 0.0 and new["momentum"].item() == 0.99 and new["weight_decay"].item() == 0.5
    unbounded = hd_update(h, a, {"lr": 0.1, "momentum": 0.1, "weight_decay": 0.0}, {})
    assert unbounded["lr"].item() == pytest.approx(-0.9)


def test_from_zero_only_the_learning_rate_moves_first():
    """From FDS's zero init the momentum and weight-decay directions are -lr v and -lr theta = 0."""
    same = batches(1) * 3  # the same batch: dL_1/dlr_0 = -|g|^2 < 0, so the learning rate must grow
    res = hd_train(tiny_model(), hd_init({k: 0.0 for k in KINDS}), same, hyper_lr=BETA, bounds=BOUNDS)
    assert res.values[1, 0] > 0 and res.values[1, 1] == 0 and res.values[1, 2] == 0


def test_divergence_is_reported_not_raised():
    res = hd_train(tiny_model(), hd_init({"lr": 1e200, "momentum": 0.0, "weight_decay": 0.0}), batches(5), hyper_lr=BETA)
    assert res.diverged and res.state.step < 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hyper_lr": {"lr": 0.1}}, "hyper_lr"),
        ({"hd": HDState({"lr": torch.tensor(0.1)}, None)}, "hd.hypers"),
        ({"horizon": 0}, "horizon"),
        ({"grad_clamp": -1.0}, "grad_clamp"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"horizon": 9}, "ran out after 3"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"hd": hd_init(INIT), "hyper_lr": BETA, **kwargs}
    with pytest.raises(ValueError, match=match):
        hd_train(tiny_model(), args.pop("hd"), batches(3), **args)


def test_iterable_batches_need_horizon():
    with pytest.raises(ValueError, match="horizon"):
        hd_train(tiny_model(), hd_init(INIT), iter(batches(3)), hyper_lr=BETA)
    a = hd_train(tiny_model(), hd_init(INIT), iter(batches(3)), hyper_lr=BETA, horizon=3)
    b = hd_train(tiny_model(), hd_init(INIT), batches(3), hyper_lr=BETA)
    assert torch.equal(a.values, b.values)


def test_model_is_not_modified():
    model = tiny_model(bn=True)
    before = copy.deepcopy(model.state_dict())
    hd_train(model, hd_init(INIT), batches(3), hyper_lr=BETA)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
