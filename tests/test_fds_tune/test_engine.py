"""The FDS engine against independent references: reverse-mode autograd through
the unrolled loop, central finite differences, and torch.optim.SGD."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from fds_tune import Schedule, hypergradients, train
from fds_tune.optim import adamw, sgd
from support.tiny import CASES, DT, batches, rel_err, tiny_lenet, tiny_mlp



def unrolled_val_loss(model, hyper, train_b, val_b, opt, clamp=None, first=0):
    """Plain autograd through the unrolled loop (independent of the engine).

    With ``first > 0`` the first ``first`` steps are taken without gradient
    tracking (a window of a longer run)."""
    model = copy.deepcopy(model).train()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    flat = lambda ps: torch.cat([p.reshape(-1) for p in ps])
    sizes = [p.numel() for p in params]
    theta = flat(params)
    state = opt.init(theta)
    T = len(train_b)
    for t, (x, y) in enumerate(train_b):
        if t <= first:  # cut every dependence on the hyperparameters before the window
            theta = theta.detach().requires_grad_(True)
            state = tuple(s.detach() for s in state)
        ps = [c.view_as(p) for c, p in zip(torch.split(theta, sizes), params)]
        loss = F.cross_entropy(functional_call(model, dict(zip(names, ps)), (x,)), y)
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        if clamp is not None:
            g = g.clamp(-clamp, clamp)
        h = {k: v[(v.numel() * t) // T] for k, v in hyper.items()}
        theta, state = opt.update(theta, state, g, h, t)
    ps = [c.view_as(p) for c, p in zip(torch.split(theta, sizes), params)]
    n = sum(len(y) for _, y in val_b)
    return sum(F.cross_entropy(functional_call(model, dict(zip(names, ps)), (x,)), y) * len(y) for x, y in val_b) / n


def reverse_hypergrads(model, values, train_b, val_b, opt, clamp=None, first=0):
    hyper = {k: torch.tensor(v, dtype=DT, requires_grad=True) for k, v in values.items()}
    loss = unrolled_val_loss(model, hyper, train_b, val_b, opt, clamp, first)
    grads = torch.autograd.grad(loss, list(hyper.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(hyper, grads)), loss.item()


def finite_diff(model, values, train_b, val_b, opt, clamp=None, eps=1e-6):
    out = {}
    for k, vs in values.items():
        g = []
        for i in range(len(vs)):
            def f(delta):
                h = {kk: torch.tensor(vv, dtype=DT) for kk, vv in values.items()}
                h[k] = h[k].clone()
                h[k][i] += delta
                with torch.no_grad():
                    pass
                return unrolled_val_loss(model, h, train_b, val_b, opt, clamp).item()
            g.append((f(eps) - f(-eps)) / (2 * eps))
        out[k] = torch.tensor(g, dtype=DT)
    return out


SGD_VALUES = {"lr": [0.3, 0.2, 0.25], "momentum": [0.5, 0.8], "weight_decay": [1e-2]}


@pytest.mark.parametrize("method", ["vmap", "per_column"])
@pytest.mark.parametrize("clamp", [None, 0.05])
@pytest.mark.parametrize("case", list(CASES))
def test_hypergradients_match_reverse_mode_and_finite_differences(case, clamp, method):
    make, shape = CASES[case]
    model = make()
    train_b, val_b = batches(7, shape, seed=1), batches(2, shape, seed=2)  # 7 steps: 3 and 2 do not divide 7
    hg = hypergradients(model, Schedule(SGD_VALUES), train_b, val_b, grad_clamp=clamp, method=method)
    ref, ref_loss = reverse_hypergrads(model, SGD_VALUES, train_b, val_b, sgd(), clamp)
    fd = finite_diff(model, SGD_VALUES, train_b, val_b, sgd(), clamp)
    assert hg.val_loss == pytest.approx(ref_loss, rel=1e-12)
    for k in SGD_VALUES:
        assert hg[k].shape == (len(SGD_VALUES[k]),)
        assert rel_err(hg[k], ref[k]) < 1e-8, (k, hg[k], ref[k])
        assert rel_err(hg[k], fd[k]) < 1e-4, (k, hg[k], fd[k])


def test_clamp_binds_on_some_entries():
    """The clamp test above is only meaningful if the clamp binds on some but not all entries."""
    model = tiny_lenet()
    (x, y), = batches(1, (1, 8, 8), seed=1)
    loss = F.cross_entropy(model(x), y)
    g = torch.cat([p.reshape(-1) for p in torch.autograd.grad(loss, list(model.parameters()))])
    frac = (g.abs() > 0.05).double().mean().item()
    assert 0.05 < frac < 0.95


def test_group_sizes_agree():
    model = tiny_lenet(bn=True)
    train_b, val_b = batches(5, (1, 8, 8), seed=3), batches(1, (1, 8, 8), seed=4)
    full = hypergradients(model, SGD_VALUES, train_b, val_b)
    for g in (1, 2):
        part = hypergradients(model, SGD_VALUES, train_b, val_b, group_size=g)
        for k in SGD_VALUES:
            torch.testing.assert_close(part[k], full[k], rtol=1e-12, atol=1e-14)
        # BatchNorm statistics are recorded once per step whatever the grouping
        for name, b in full.buffers.items():
            torch.testing.assert_close(part.buffers[name], b, rtol=0, atol=0)


def test_adamw_hypergradients_match_reverse_mode():
    values = {"lr": [0.01, 0.02], "beta1": [0.8], "beta2": [0.9, 0.95], "weight_decay": [0.1]}
    model = tiny_mlp()
    train_b, val_b = batches(5, (12,), seed=5), batches(1, (12,), seed=6)
    hg = hypergradients(model, values, train_b, val_b, optimizer="adamw")
    ref, _ = reverse_hypergrads(model, values, train_b, val_b, adamw())
    for k in values:
        assert rel_err(hg[k], ref[k]) < 1e-8, k


@pytest.mark.parametrize("bn", [False, True])
def test_train_equals_torch_sgd_step_for_step(bn):
    model = tiny_lenet(bn=bn)
    train_b = batches(6, (1, 8, 8), seed=7)
    ref = copy.deepcopy(model).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    start = None
    sched = {"lr": [0.1], "momentum": [0.9], "weight_decay": [5e-3]}
    for x, y in train_b:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
        res = train(model, sched, [(x, y)], start=start)
        start = res.state
        for n, p in ref.named_parameters():
            torch.testing.assert_close(res.params[n], p.detach(), rtol=1e-12, atol=1e-14)
        for n, b in ref.named_buffers():
            torch.testing.assert_close(res.buffers[n], b, rtol=1e-12, atol=1e-14)


class TiedWeights(nn.Module):
    """Two Linear layers sharing one weight Parameter (weight tying across modules)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


def layer_used_twice():
    shared = nn.Linear(12, 12)
    return nn.Sequential(nn.Flatten(), shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(12, 3))


@pytest.mark.parametrize("make", [layer_used_twice, TiedWeights], ids=["layer-used-twice", "tied-weights"])
def test_shared_parameters_train_like_torch_sgd_and_leave_the_module_alone(make):
    """A module used twice, and one Parameter shared by two modules: the same steps as torch.optim.SGD,
    exact forward-mode hypergradients, and the module keeps its own (leaf) parameters."""
    torch.manual_seed(0)
    model = make().to(DT)
    train_b, val_b = batches(4, (12,), seed=3), batches(1, (12,), seed=4)
    ref = copy.deepcopy(model).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    for x, y in train_b:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    res = train(model, {"lr": [0.1], "momentum": [0.9], "weight_decay": [5e-3]}, train_b)
    for n, p in ref.named_parameters():
        torch.testing.assert_close(res.params[n], p.detach(), rtol=1e-12, atol=1e-14)
    hg = hypergradients(model, SGD_VALUES, train_b, val_b)
    assert all(p.is_leaf for p in model.parameters())  # functional_call left the module as it was
    ref_hg, _ = reverse_hypergrads(model, SGD_VALUES, train_b, val_b, sgd())
    for k in SGD_VALUES:
        assert rel_err(hg[k], ref_hg[k]) < 1e-8, k


def test_train_equals_torch_adamw():
    model = tiny_mlp()
    train_b = batches(5, (12,), seed=8)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(ref.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)
    for x, y in train_b:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    res = train(model, {"lr": [0.01], "beta1": [0.8], "beta2": [0.95], "weight_decay": [0.1]}, train_b, optimizer="adamw")
    for n, p in ref.named_parameters():
        torch.testing.assert_close(res.params[n], p.detach(), rtol=1e-10, atol=1e-12)


def test_hypergradients_run_equals_plain_training():
    model = tiny_lenet(bn=True)
    train_b, val_b = batches(5, (1, 8, 8), seed=9), batches(1, (1, 8, 8), seed=10)
    hg = hypergradients(model, SGD_VALUES, train_b, val_b)
    plain = train(model, SGD_VALUES, train_b)
    for n in plain.params:
        torch.testing.assert_close(hg.params[n], plain.params[n], rtol=1e-12, atol=1e-14)
    assert hg.run.train_losses == pytest.approx(plain.train_losses, rel=1e-12)


def test_iterable_batches_need_horizon():
    model = tiny_mlp()
    train_b, val_b = batches(4, (12,)), batches(1, (12,))
    with pytest.raises(ValueError, match="horizon"):
        hypergradients(model, SGD_VALUES, iter(train_b), val_b)
    a = hypergradients(model, SGD_VALUES, iter(train_b), val_b, horizon=4)
    b = hypergradients(model, SGD_VALUES, train_b, val_b)
    for k in SGD_VALUES:
        torch.testing.assert_close(a[k], b[k])
    with pytest.raises(ValueError, match="ran out after 4"):
        hypergradients(model, SGD_VALUES, iter(train_b), val_b, horizon=5)


def test_model_is_not_modified():
    model = tiny_lenet(bn=True)
    before = copy.deepcopy(model.state_dict())
    hypergradients(model, SGD_VALUES, batches(3, (1, 8, 8)), batches(1, (1, 8, 8)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": {"lr": [0.1]}}, "missing"),
        ({"schedule": {**SGD_VALUES, "beta1": [0.9]}}, "unknown"),
        ({"grad_clamp": -1.0}, "grad_clamp"),
        ({"method": "magic"}, "method"),
        ({"group_size": 0}, "group_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"schedule": SGD_VALUES, **kwargs}
    schedule = kwargs.pop("schedule")
    with pytest.raises(ValueError, match=match):
        hypergradients(tiny_mlp(), schedule, batches(2, (12,)), batches(1, (12,)), **kwargs)


def test_divergence_is_reported_not_raised():
    model = tiny_lenet()
    hg = hypergradients(model, {"lr": [1e200], "momentum": [0.0], "weight_decay": [0.0]}, batches(6, (1, 8, 8)), batches(1, (1, 8, 8)))
    assert hg.diverged
    assert len(hg.run.train_losses) < 6
    assert all(torch.isnan(v).all() for v in hg.values())


def test_window_of_a_longer_run():
    """Training in windows equals one run; a window's hypergradients equal reverse mode
    through that window only (earlier steps held fixed), for the shared values it uses."""
    model = tiny_lenet(bn=True)
    train_b, val_b = batches(8, (1, 8, 8), seed=11), batches(1, (1, 8, 8), seed=12)
    full = train(model, SGD_VALUES, train_b)
    first = train(model, SGD_VALUES, train_b[:3], schedule_horizon=8)
    rest = train(model, SGD_VALUES, train_b[3:], start=first.state, schedule_horizon=8)
    for n in full.params:
        torch.testing.assert_close(rest.params[n], full.params[n], rtol=1e-12, atol=1e-14)
    hg = hypergradients(model, SGD_VALUES, train_b[3:], val_b, start=first.state, schedule_horizon=8)
    ref, _ = reverse_hypergrads(model, SGD_VALUES, train_b, val_b, sgd(), first=3)
    for k in SGD_VALUES:
        assert rel_err(hg[k], ref[k]) < 1e-8, (k, hg[k], ref[k])
    assert hg["lr"][0] == 0  # lr value 0 covers steps 0-2 only, before the window
    with pytest.raises(ValueError, match="schedule_horizon"):
        train(model, SGD_VALUES, train_b[3:], start=first.state, schedule_horizon=4)


def test_stalled_marks_a_run_whose_loss_never_drops():
    """A run that does not learn (here lr = 0, like a collapsed network) is ``stalled``; a run
    that learns is not.  Neither is ``diverged``: a stalled run has finite losses."""
    model = tiny_mlp()
    separable = [(x, (x[:, 0] > 0).long()) for x, _ in batches(40, (12,), batch=16, seed=13)]
    zero = train(model, {"lr": [0.0], "momentum": [0.0], "weight_decay": [0.0]}, separable)
    learned = train(model, {"lr": [0.5], "momentum": [0.9], "weight_decay": [0.0]}, separable)
    assert zero.stalled and not zero.diverged
    assert not learned.stalled and not learned.diverged
    assert sum(learned.train_losses[-4:]) / 4 < 0.5 * learned.train_losses[0]  # it really learned
