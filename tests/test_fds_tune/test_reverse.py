"""Reverse mode against forward mode and an independent unrolled reference (float64).

The reference here is written per parameter tensor with plain autograd (its own SGD
and AdamW, its own per-group expansion), sharing no code with the engine."""
import fnmatch
import math
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fds_tune import Schedule, hypergradients, train
from fds_tune import reverse
from fds_tune.engine import choose_mode
from fds_tune.functional_model import FunctionalModel
from fds_tune.optim import Optimizer
from fds_tune.reverse import build_ahead, builds_ahead, default_checkpoint_every, saved_bytes

from support.tiny import CASES, batches, rel_err, tiny_lenet, tiny_mlp

DT = torch.float64
T = 9  # 4 and 2 values do not divide 9: uneven chunks
SGD = {"lr": [0.3, 0.2, 0.25, 0.15], "momentum": [0.5, 0.8], "weight_decay": [1e-2]}
ADAMW = {"lr": [0.01, 0.02], "beta1": [0.8], "beta2": [0.9, 0.95], "weight_decay": [0.1]}
TOL = 1e-10


def reference(model, values, train_b, val_b, *, optimizer="sgd", clamp=None, groups=None, first=0):
    """Hypergradients by autograd through the unrolled loop, one tensor per parameter."""
    model = model.train()
    names = [n for n, _ in model.named_parameters()]
    hyper = {k: torch.tensor(v, dtype=DT, requires_grad=True) for k, v in values.items()}
    params = [p.detach().clone() for p in model.parameters()]
    state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    group_of = [next(i for i, pats in enumerate(groups.values()) if any(fnmatch.fnmatchcase(n, q) for q in pats)) for n in names] if groups else None
    n_steps = len(train_b)
    for t, (x, y) in enumerate(train_b):
        if t <= first:
            params = [p.detach().requires_grad_(True) for p in params]
            state = [[s.detach() for s in row] for row in state]
        loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (x,)), y)
        gs = torch.autograd.grad(loss, params, create_graph=True)
        new_params, new_state = [], [[], []]
        for i, (p, g) in enumerate(zip(params, gs)):
            h = {}
            for k, v in hyper.items():
                row = v[group_of[i]] if v.dim() == 2 else v
                h[k] = row[(row.numel() * t) // n_steps]
            g = g if clamp is None else g.clamp(-clamp, clamp)
            if optimizer == "sgd":
                vel = h["momentum"] * state[0][i] + g + h["weight_decay"] * p
                new_params.append(p - h["lr"] * vel)
                new_state[0].append(vel)
                new_state[1].append(state[1][i])
            else:
                step = t + 1
                p = p * (1 - h["lr"] * h["weight_decay"])
                m = h["beta1"] * state[0][i] + (1 - h["beta1"]) * g
                v2 = h["beta2"] * state[1][i] + (1 - h["beta2"]) * g * g
                denom = (v2 / (1 - h["beta2"] ** step)).clamp_min(torch.finfo(DT).tiny).sqrt() + 1e-8
                new_params.append(p - h["lr"] * (m / (1 - h["beta1"] ** step)) / denom)
                new_state[0].append(m)
                new_state[1].append(v2)
        params, state = new_params, new_state
    n = sum(len(y) for _, y in val_b)
    val = sum(F.cross_entropy(functional_call(model, dict(zip(names, params)), (x,)), y) * len(y) for x, y in val_b) / n
    grads = torch.autograd.grad(val, list(hyper.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(hyper, grads))


def assert_close(hg, ref):
    for k in ref:
        assert hg[k].shape == ref[k].shape, k
        assert rel_err(hg[k], ref[k]) < TOL, (k, hg[k], ref[k])


def per_step_sums_are_chunks(hg, horizon, first=0, span=None):
    span = span or first + horizon
    for k, steps in hg.per_step.items():
        n = hg[k].shape[-1]
        idx = torch.tensor([(n * (first + t)) // span for t in range(horizon)])
        sums = torch.zeros(*steps.shape[1:][::-1], n, dtype=DT) if steps.dim() == 2 else torch.zeros(n, dtype=DT)
        sums = sums.index_add_(-1, idx, steps.T if steps.dim() == 2 else steps)
        torch.testing.assert_close(sums, hg[k], rtol=1e-12, atol=1e-15)


EVERY_CASES = [(case, clamp, 3) for case in CASES for clamp in (None, 0.05)]  # 3 = round(sqrt(9))
EVERY_CASES += [("lenet_bn", 0.05, every) for every in (1, 7)]


@pytest.mark.parametrize("case, clamp, every", EVERY_CASES)
def test_reverse_equals_forward_and_unrolled_autograd(case, clamp, every):
    make, shape = CASES[case]
    model = make()
    train_b, val_b = batches(T, shape, seed=1), batches(2, shape, seed=2)
    rev = hypergradients(model, SGD, train_b, val_b, grad_clamp=clamp, mode="reverse", checkpoint_every=every)
    fwd = hypergradients(model, SGD, train_b, val_b, grad_clamp=clamp, mode="forward")
    assert rev.mode == "reverse" and fwd.mode == "forward" and rev.checkpoint_every == every
    assert_close(rev, reference(model, SGD, train_b, val_b, clamp=clamp))
    assert_close(rev, fwd.grads)
    assert rev.val_loss == pytest.approx(fwd.val_loss, rel=1e-13)
    per_step_sums_are_chunks(rev, T)
    for n, p in fwd.params.items():  # the same trained state, BatchNorm buffers included
        torch.testing.assert_close(rev.params[n], p, rtol=1e-13, atol=1e-15)
    for n, b in fwd.buffers.items():
        torch.testing.assert_close(rev.buffers[n], b, rtol=1e-13, atol=1e-15)


def test_recomputation_changes_nothing():
    """Every checkpoint interval gives bit-identical hypergradients: segments are recomputed exactly."""
    model = tiny_lenet(bn=True)
    train_b, val_b = batches(T, (1, 8, 8), seed=3), batches(1, (1, 8, 8), seed=4)
    base = hypergradients(model, SGD, train_b, val_b, mode="reverse", checkpoint_every=1)
    for every in (2, 3, 7, 9):
        other = hypergradients(model, SGD, train_b, val_b, mode="reverse", checkpoint_every=every)
        for k in SGD:
            assert torch.equal(other[k], base[k]), (every, k)


def test_clamp_binds_in_the_reverse_cases():
    """The clamped cases above differ from the unclamped ones: the clamp binds during the run."""
    make, shape = CASES["lenet"]
    train_b, val_b = batches(T, shape, seed=1), batches(2, shape, seed=2)
    free = hypergradients(make(), SGD, train_b, val_b, mode="reverse")
    bound = hypergradients(make(), SGD, train_b, val_b, grad_clamp=0.05, mode="reverse")
    assert rel_err(bound["lr"], free["lr"]) > 1e-3


def test_adamw_reverse_matches_reference():
    model = tiny_mlp()
    train_b, val_b = batches(6, (12,), seed=5), batches(1, (12,), seed=6)
    for every in (1, 4):
        rev = hypergradients(model, ADAMW, train_b, val_b, optimizer="adamw", mode="reverse", checkpoint_every=every)
        assert_close(rev, reference(model, ADAMW, train_b, val_b, optimizer="adamw"))
        per_step_sums_are_chunks(rev, 6)


def test_a_users_optimizer_with_a_state_entry_no_gradient_reaches():
    """A user's optimizer whose state holds an entry rebuilt from the step alone (a counter):
    the step back skips that output, and the result is still the reference's SGD."""

    def init(theta):
        return torch.zeros_like(theta), theta.new_zeros(())

    def update(params, state, grad, hypers, step):
        velocity = hypers["momentum"] * state[0] + grad + hypers["weight_decay"] * params
        return params - hypers["lr"] * velocity, (velocity, torch.tensor(step + 1.0, dtype=params.dtype))

    counting = Optimizer("counting_sgd", ("lr", "momentum", "weight_decay"), init, update)
    model = tiny_mlp()
    train_b, val_b = batches(T, (12,), seed=5), batches(1, (12,), seed=6)
    rev = hypergradients(model, SGD, train_b, val_b, optimizer=counting, mode="reverse")
    assert_close(rev, reference(model, SGD, train_b, val_b))


def test_window_of_a_longer_run():
    """A window (``start``) of a longer run: the same as forward mode and as autograd through the window only."""
    model = tiny_lenet(bn=True)
    train_b, val_b = batches(8, (1, 8, 8), seed=11), batches(1, (1, 8, 8), seed=12)
    first = train(model, SGD, train_b[:3], schedule_horizon=8)
    kw = dict(start=first.state, schedule_horizon=8)
    rev = hypergradients(model, SGD, train_b[3:], val_b, mode="reverse", checkpoint_every=2, **kw)
    fwd = hypergradients(model, SGD, train_b[3:], val_b, **kw)
    assert_close(rev, reference(model, SGD, train_b, val_b, first=3))
    assert_close(rev, fwd.grads)
    assert rev["lr"][0] == 0  # lr value 0 covers steps 0-1 only, before the window
    per_step_sums_are_chunks(rev, 5, first=3, span=8)


GROUPS = {"convs": ["0.*", "3.*"], "head": ["*"]}  # tiny_lenet: Conv2d at 0 and 3, Linear last


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_per_group_schedules(mode):
    """lr per parameter group (2 groups x 3 values), momentum shared: both modes equal the reference."""
    model = tiny_lenet()
    values = {"lr": [[0.3, 0.2, 0.1], [0.05, 0.4, 0.2]], "momentum": [0.5, 0.8], "weight_decay": [1e-2]}
    train_b, val_b = batches(T, (1, 8, 8), seed=7), batches(2, (1, 8, 8), seed=8)
    hg = hypergradients(model, values, train_b, val_b, groups=GROUPS, mode=mode, grad_clamp=0.05)
    assert hg["lr"].shape == (2, 3) and hg["momentum"].shape == (2,)
    assert_close(hg, reference(model, values, train_b, val_b, clamp=0.05, groups=GROUPS))
    if mode == "reverse":
        assert hg.per_step["lr"].shape == (T, 2) and hg.per_step["momentum"].shape == (T,)
        per_step_sums_are_chunks(hg, T)


def test_per_group_training_equals_torch_sgd_param_groups():
    """Plain training with one lr per group equals torch.optim.SGD with those param groups."""
    import copy

    model = tiny_lenet()
    train_b = batches(5, (1, 8, 8), seed=9)
    values = {"lr": [[0.3], [0.05]], "momentum": [0.5], "weight_decay": [1e-2]}
    run = train(model, values, train_b, groups=GROUPS)
    ref = copy.deepcopy(model)
    convs = [p for n, p in ref.named_parameters() if n.startswith(("0.", "3."))]
    head = [p for n, p in ref.named_parameters() if not n.startswith(("0.", "3."))]
    opt = torch.optim.SGD([{"params": convs, "lr": 0.3}, {"params": head, "lr": 0.05}], momentum=0.5, weight_decay=1e-2)
    for x, y in train_b:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(run.params[n], p.detach(), rtol=1e-12, atol=1e-14)


def test_layers_groups_one_per_module():
    model = tiny_lenet()
    values = {"lr": [[0.1]] * 3, "momentum": [0.5], "weight_decay": [0.0]}
    train_b, val_b = batches(4, (1, 8, 8), seed=1), batches(1, (1, 8, 8), seed=2)
    hg = hypergradients(model, values, train_b, val_b, groups="layers", mode="reverse")
    assert hg["lr"].shape == (3, 1)  # two convolutions and the classifier
    assert_close(hg, reference(model, values, train_b, val_b, groups={"a": ["0.*"], "b": ["3.*"], "c": ["*"]}))


def test_replayable_source_equals_a_list_and_a_one_shot_iterator_is_refused():
    model = tiny_mlp()
    train_b, val_b = batches(T, (12,), seed=1), batches(1, (12,), seed=2)
    calls = []

    def source(first, n):
        calls.append((first, n))
        return iter(train_b[first : first + n])

    from_source = hypergradients(model, SGD, source, val_b, horizon=T, mode="reverse", checkpoint_every=4)
    from_list = hypergradients(model, SGD, train_b, val_b, mode="reverse", checkpoint_every=4)
    for k in SGD:
        assert torch.equal(from_source[k], from_list[k])
    assert calls[0] == (0, T) and (8, 1) in calls  # the forward pass, then segments replayed backward
    with pytest.raises(ValueError, match=r"train_batches: got 'generator'; must be replayable in reverse mode.*callable source"):
        hypergradients(model, SGD, (b for b in train_b), val_b, horizon=T, mode="reverse")
    with pytest.raises(ValueError, match="horizon"):
        hypergradients(model, SGD, source, val_b, mode="reverse")
    # forward mode takes a source too
    fwd = hypergradients(model, SGD, source, val_b, horizon=T)
    assert_close(fwd, from_list.grads)


def test_auto_picks_by_columns_and_says_which():
    model = tiny_mlp()
    train_b, val_b = batches(T, (12,), seed=1), batches(1, (12,), seed=2)
    few = {"lr": [0.1], "momentum": [0.5], "weight_decay": [0.0]}
    many = {"lr": [0.1] * 9, "momentum": [0.5], "weight_decay": [0.0]}
    expected = choose_mode(Schedule(few), T, T, 0, True, 1)
    assert hypergradients(model, few, train_b, val_b, mode="auto").mode == expected
    hg = hypergradients(model, many, train_b, val_b, mode="auto")
    assert hg.mode == "reverse" and hg.per_step is not None
    assert hypergradients(model, many, (b for b in train_b), val_b, horizon=T, mode="auto").mode == "forward"
    assert choose_mode(Schedule(many), T, T, 0, True, 1) == "reverse"


def test_default_checkpointing_from_the_budget():
    model = tiny_mlp()
    from fds_tune.functional_model import FunctionalModel
    from fds_tune.optim import sgd

    fm = FunctionalModel(model, F.cross_entropy)
    state = fm.start_state(sgd().init)
    step_bytes = 2 * fm.numel * 8  # weights and velocity (a checkpoint holds the same)
    assert default_checkpoint_every(fm, state, 100, 100 * step_bytes) == 1
    assert default_checkpoint_every(fm, state, 101, 100 * step_bytes) == 10  # sqrt(T) minimises (T/s + s) states
    assert default_checkpoint_every(fm, state, 10_000, 100 * step_bytes) == round(math.sqrt(10_000))
    train_b, val_b = batches(T, (12,), seed=1), batches(1, (12,), seed=2)
    hg = hypergradients(model, SGD, train_b, val_b, mode="reverse", checkpoint_budget=2 * step_bytes)
    assert hg.checkpoint_every > 1


def test_divergence_is_reported_not_raised():
    model = tiny_lenet()
    hg = hypergradients(model, {"lr": [1e200], "momentum": [0.0], "weight_decay": [0.0]}, batches(6, (1, 8, 8)), batches(1, (1, 8, 8)), mode="reverse")
    assert hg.diverged and len(hg.run.train_losses) < 6
    assert all(torch.isnan(v).all() for v in hg.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "backward"}, r"mode: got 'backward'"),
        ({"method": "reverse"}, r"method: got 'reverse'; must be 'vmap' or 'per_column'.*mode='reverse'"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"checkpoint_budget": 0}, "checkpoint_budget"),
        ({"build_ahead": "yes"}, r"build_ahead: got 'yes'; must be True, False or None"),
        ({"groups": "modules"}, "groups: got 'modules'"),
        ({"groups": {"a": ["nothing*"]}}, "matches none"),
        ({"groups": {"a": "0.*"}}, r"groups\['a'\]"),
        ({"schedule": {**SGD, "lr": [[0.1], [0.2]]}}, r"schedule\['lr'\] rows: got 2; must be 1, or one per group with groups="),
        ({"schedule": {**SGD, "lr": [[0.1], [0.2], [0.3]]}, "groups": {"a": ["1.*"], "b": ["*"]}}, r"rows: got 3; must be one per parameter group: 2 groups \['a', 'b'\]"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    schedule = kwargs.pop("schedule", SGD)
    with pytest.raises(ValueError, match=match):
        hypergradients(tiny_mlp(), schedule, batches(2, (12,)), batches(1, (12,)), **kwargs)


# ---- the sweep with each step's graph built ahead on a second thread -------------------------
def tiny_dropout_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(7, 3)).to(DT)


@pytest.mark.parametrize("case", ["lenet_bn", "dropout"])
@pytest.mark.parametrize("every", [1, 4])
def test_built_ahead_equals_built_in_turn_and_forward_mode(case, every, monkeypatch):
    make, shape = (tiny_dropout_mlp, (12,)) if case == "dropout" else CASES[case]
    train_b, val_b = batches(T, shape), batches(2, shape, seed=5)
    threads, segments = torch.get_num_threads(), []

    def spy(build, items):
        segments.append(1)
        return build_ahead(build, items)

    monkeypatch.setattr(reverse, "build_ahead", spy)
    runs = {}
    for ahead in (False, True):
        runs[ahead] = hypergradients(make(), SGD, train_b, val_b, mode="reverse", checkpoint_every=every, build_ahead=ahead, grad_clamp=0.05)
        assert len(segments) == (-(-T // every) if ahead and every > 1 else int(ahead))  # each segment swept built ahead, or none
    assert torch.get_num_threads() == threads  # the builder's one-thread setting is undone
    forward = hypergradients(make(), SGD, train_b, val_b, mode="forward", grad_clamp=0.05)
    for k in SGD:
        assert rel_err(runs[True][k], runs[False][k]) < 1e-12, k
        assert rel_err(runs[True][k], forward[k]) < TOL, k
        torch.testing.assert_close(runs[True].per_step[k], runs[False].per_step[k], rtol=1e-12, atol=1e-15)


def test_by_default_small_convolutional_steps_are_built_ahead_and_others_in_turn(monkeypatch):
    model, shape = tiny_lenet(), CASES["lenet"][1]
    fm = FunctionalModel(model, F.cross_entropy)
    theta, buffers = fm.flatten(dict(model.named_parameters())), dict(model.named_buffers())
    with fm.batch_statistics():
        sizes = [saved_bytes(fm, theta, buffers, *batches(1, shape, batch=b)[0]) for b in (6, 12, 18)]
    assert 0 < sizes[0] < sizes[1] < sizes[2] and sizes[1] - sizes[0] == sizes[2] - sizes[1]  # activations grow with the batch
    x, y = batches(1, shape, batch=12)[0]
    threads = torch.get_num_threads()
    try:
        with fm.batch_statistics():
            torch.set_num_threads(2)
            monkeypatch.setattr(reverse, "BUILD_AHEAD_MAX_BYTES", sizes[1])
            assert builds_ahead(fm, theta, buffers, x, y)
            monkeypatch.setattr(reverse, "BUILD_AHEAD_MAX_BYTES", sizes[1] - 1)
            assert not builds_ahead(fm, theta, buffers, x, y)
            monkeypatch.setattr(reverse, "BUILD_AHEAD_MAX_BYTES", sizes[1])
            torch.set_num_threads(1)
            assert not builds_ahead(fm, theta, buffers, x, y)  # one thread: nothing to run side by side
            torch.set_num_threads(2)
            mlp = FunctionalModel(tiny_mlp(), F.cross_entropy)
            with mlp.batch_statistics():
                xm, ym = batches(1, CASES["mlp"][1], batch=12)[0]
                theta_m = mlp.flatten(dict(mlp.model.named_parameters()))
                assert 0 < saved_bytes(mlp, theta_m, {}, xm, ym) <= sizes[1]
                assert not builds_ahead(mlp, theta_m, {}, xm, ym)  # no convolution: matrix products use both threads well
    finally:
        torch.set_num_threads(threads)


def test_build_ahead_keeps_order_and_builds_at_most_one_ahead():
    alive, most, log = [0], [0], []

    def build(i):
        alive[0] += 1
        most[0] = max(most[0], alive[0])
        log.append(("built", i, threading.current_thread().name, torch.get_num_threads()))
        return i

    threads = torch.get_num_threads()
    for i in build_ahead(build, range(6)):
        assert torch.get_num_threads() == 1  # the caller's step runs on one thread too
        time.sleep(0.01)  # the caller's work: the builder runs ahead meanwhile
        log.append(("used", i))
        alive[0] -= 1
    assert torch.get_num_threads() == threads
    assert [e[1] for e in log if e[0] == "used"] == list(range(6))
    assert most[0] <= 2  # the one the caller holds and the next
    assert {e[2:] for e in log if e[0] == "built"} == {("fds-reverse-builder", 1)}


def test_build_ahead_raises_the_builders_error_at_its_item_and_stops_when_closed():
    def build(i):
        if i == 3:
            raise ArithmeticError("step 3")
        return i

    got = []
    with pytest.raises(ArithmeticError, match="step 3"):
        for i in build_ahead(build, range(6)):
            got.append(i)
    assert got == [0, 1, 2]
    built = []
    gen = build_ahead(built.append, range(100))
    next(gen)
    gen.close()  # e.g. an error in the caller's step: the builder stops and is joined
    assert len(built) <= 2 and not any(t.name == "fds-reverse-builder" for t in threading.enumerate())
