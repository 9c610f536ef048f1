"""fds_tune.models: functional calls, BatchNorm statistics, seeding and torch.func."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn import functional as F

from fds_tune.functional_model import FunctionalModel
from fds_tune.models import MODELS, LeNet, MLP, WideResNet, build_model

# torch's own jvp decompositions still call torch.jit.script, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")

# Small inputs keep WRN-16-1 fast; every model sees every size class it is used with.
CASES = [
    ("mlp", (1, 8, 8)),
    ("mlp", (3, 4, 4)),
    ("mlp-small", (1, 14, 14)),
    ("lenet", (1, 8, 8)),
    ("lenet", (1, 28, 28)),
    ("lenet", (3, 32, 32)),
    ("wrn-16-1", (3, 16, 16)),
    ("wrn-16-1", (1, 8, 8)),
]
IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape in CASES]


def batch(shape, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def state(model: nn.Module):
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    return params, buffers


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def logits_of(model: nn.Module) -> FunctionalModel:
    """The engine's pure view of ``model``, with the logits as its "loss" (so they can be compared)."""
    return FunctionalModel(model, lambda out, y: out)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_functional_call_equals_module_call(name, shape, train):
    model = build_model(name, shape, 10, seed=0)
    if train is False:  # non-trivial running statistics to use
        model.train()
        model(batch(shape, seed=1)[0])
    model.train(train)
    params, buffers = state(model)
    x, _ = batch(shape)
    out_func = functional_call(model, (params, buffers), (x,))
    out_module = model(x)  # updates the module's own buffers in train mode
    assert out_module.shape == (6, 10)
    torch.testing.assert_close(out_func, out_module, rtol=0, atol=0)
    for key, value in model.named_buffers():  # same statistics, updated the same way
        torch.testing.assert_close(buffers[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_engines_calls_are_pure(train):
    """Train mode as the engine trains (FunctionalModel: batch statistics, running statistics updated
    out of place), eval mode as it evaluates (functional_call): the caller's buffers stay untouched."""
    model = build_model("wrn-16-1", (3, 8, 8), 10).train(train)
    params, buffers = state(model)
    before = {k: v.clone() for k, v in buffers.items()}
    x, _ = batch((3, 8, 8))
    if train:
        fm = logits_of(model)
        with fm.batch_statistics():
            out, stats = fm.loss(fm.flatten(params), buffers, x, None)
        new_buffers = fm.update_buffers(buffers, stats)
    else:
        out, new_buffers = functional_call(model, (params, buffers), (x,)), buffers
    for key in buffers:
        assert torch.equal(buffers[key], before[key])  # inputs untouched
    reference = copy.deepcopy(model)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    for key, value in reference.named_buffers():  # PyTorch's own update (lerp rounds differently: ~1 ulp)
        torch.testing.assert_close(new_buffers[key], value, rtol=1e-6, atol=1e-7)
    assert int(new_buffers["bn.num_batches_tracked"]) == (1 if train else 0)


def test_batchnorm_running_statistics_by_hand():
    """running = (1 - 0.1) * running + 0.1 * batch statistic, variance unbiased."""
    model = build_model("wrn-16-1", (3, 8, 8), 10).train()
    bns = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 13 and all(m.momentum == 0.1 for m in bns.values())  # 6 blocks x 2 + final
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: inputs.__setitem__(name, a[0].detach()))
             for name, m in bns.items()]
    for step in range(3):
        old = {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in bns.items()}
        model(batch((3, 8, 8), n=5, seed=step)[0] * (step + 1) + step)
        for name, m in bns.items():
            inp = inputs[name]
            mean = inp.mean(dim=(0, 2, 3))
            var = inp.var(dim=(0, 2, 3), correction=1)
            torch.testing.assert_close(m.running_mean, 0.9 * old[name][0] + 0.1 * mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(m.running_var, 0.9 * old[name][1] + 0.1 * var, rtol=1e-5, atol=1e-6)
            assert int(m.num_batches_tracked) == step + 1
    for hook in hooks:
        hook.remove()

    # Eval mode normalises with the running statistics and leaves them alone.
    model.eval()
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, (a[0], out)))
             for name, m in bns.items()]
    frozen = copy.deepcopy(model.state_dict())
    x = batch((3, 8, 8), n=4, seed=9)[0]
    logits = model(x)
    for name, m in bns.items():
        inp, out = outputs[name]
        shape = (1, -1, 1, 1)
        expected = (inp - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
        expected = expected * m.weight.view(shape) + m.bias.view(shape)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, frozen[key])
    torch.testing.assert_close(model(x[:1]), logits[:1], rtol=1e-5, atol=1e-5)  # no batch coupling
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("name", MODELS)
def test_seeded_build_reproduces_and_spares_global_rng(name):
    rng = torch.random.get_rng_state()
    a = build_model(name, (3, 32, 32), 10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng)
    b = build_model(name, (3, 32, 32), 10, seed=4)
    c = build_model(name, (3, 32, 32), 10, seed=5)
    for (key, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), key
    assert any(not torch.equal(va, vc) for va, vc in zip(a.parameters(), c.parameters()))


def test_models_are_the_documented_classes():
    assert MODELS == ("mlp", "mlp-small", "lenet", "wrn-16-1")
    assert isinstance(build_model("mlp", (1, 8, 8), 10), MLP)
    small = build_model("mlp-small", (1, 14, 14), 10)  # the CPU benchmarks' network: one hidden layer of 64
    assert isinstance(small, MLP) and [p.shape for p in small.parameters()] == [(64, 196), (64,), (10, 64), (10,)]
    assert isinstance(build_model("lenet", (1, 8, 8), 10), LeNet)
    wrn = build_model("wrn-16-1", (3, 32, 32), 10)
    assert isinstance(wrn, WideResNet)
    convs = [m for m in wrn.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 13  # 16 layers = stem + 6 blocks x 2 convs + classifier (shortcuts are 1x1)
    assert sum(p.numel() for p in wrn.parameters()) == 175_066  # WRN-16-1 on CIFAR-10: 0.17M


@pytest.mark.parametrize(("shape", "flat"), [((1, 8, 8), 64), ((1, 28, 28), 256), ((3, 32, 32), 400), ((1, 16, 20), 32)])
def test_lenet_flatten_size_follows_input_shape(shape, flat):
    model = LeNet(shape, 10)
    assert model.classifier[0].in_features == flat
    assert model.features(torch.zeros(2, *shape)).shape == (2, flat)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "resnet"}, r"model: got 'resnet'; must be one of \['mlp', 'mlp-small', 'lenet', 'wrn-16-1'\]"),
    ({"input_shape": (28, 28)}, r"input_shape: got \(28, 28\); must be \(C, H, W\)"),
    ({"input_shape": (1, 0, 8)}, r"input_shape: got \(1, 0, 8\); must be \(C, H, W\): ints with C >= 1 and H, W >= 4"),
    ({"input_shape": (1, 2, 2)}, r"input_shape: got \(1, 2, 2\); must be .*H, W >= 4"),
    ({"input_shape": (1, 8.0, 8)}, r"input_shape: got \(1, 8.0, 8\); must be \(C, H, W\): ints"),
    ({"num_classes": 0}, "num_classes: got 0; must be an int >= 1"),
    ({"num_classes": True}, "num_classes: got True; must be an int >= 1"),
    ({"seed": "1"}, "seed: got '1'; must be an int"),
    ({"seed": False}, "seed: got False; must be an int"),
])
def test_build_model_rejects(kwargs, match):
    args = {"name": "lenet", "input_shape": (1, 8, 8), "num_classes": 10, **kwargs}
    seed = args.pop("seed", 0)
    with pytest.raises(ValueError, match=match):
        build_model(args["name"], args["input_shape"], args["num_classes"], seed=seed)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match=r"depth: got 15; must be an int 6n \+ 4 with n >= 1"):
        WideResNet((3, 32, 32), 10, depth=15)
    with pytest.raises(ValueError, match=r"depth: got 16.0; must be an int 6n \+ 4"):
        WideResNet((3, 32, 32), 10, depth=16.0)
    with pytest.raises(ValueError, match="widen_factor: got 0; must be an int >= 1"):
        WideResNet((3, 32, 32), 10, widen_factor=0)
    with pytest.raises(ValueError, match=r"input_shape: got \(3, 0, 32\); must be \(C, H, W\): ints with C >= 1 and H, W >= 1"):
        WideResNet((3, 0, 32), 10)


def test_mlp_rejects_bad_shapes_and_widths():
    with pytest.raises(ValueError, match=r"input_shape: got \(\); must be a non-empty shape of ints >= 1"):
        MLP((), 10)
    with pytest.raises(ValueError, match=r"input_shape: got \(1, -8\); must be a non-empty shape of ints >= 1"):
        MLP((1, -8), 10)
    with pytest.raises(ValueError, match=r"hidden\[1\]: got 0; must be an int >= 1"):
        MLP((1, 8, 8), 10, hidden=(16, 0))
    assert MLP((64,), 10).net[1].in_features == 64  # any shape, flattened


@pytest.mark.parametrize(("name", "shape"), CASES[:-1], ids=IDS[:-1])  # one WRN case: they are slow
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_torch_func_grad_and_jvp(name, shape, train):
    model = build_model(name, shape, 10, seed=0).train(train)
    params, buffers = state(model)
    x, y = batch(shape)
    fm = FunctionalModel(model, F.cross_entropy)

    def loss(p):  # (loss, BatchNorm batch statistics): train mode as the engine trains, eval mode as it evaluates
        if train:
            return fm.loss(fm.flatten(p), buffers, x, y)
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y), {}

    tangents = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in params.items()}
    with fm.batch_statistics() if train else contextlib.nullcontext():
        g, stats = grad(loss, has_aux=True)(params)
        value, directional, _ = jvp(loss, (params,), (tangents,), has_aux=True)
        # forward-over-reverse (a Hessian-vector product), as FDS composes them
        hvp = jvp(lambda p: grad(loss, has_aux=True)(p)[0], (params,), (tangents,))[1]
    new_buffers = fm.update_buffers(buffers, stats)

    # grad against reverse-mode autograd through the module itself
    reference = copy.deepcopy(model)
    reference_loss = F.cross_entropy(reference(x), y)
    reference_loss.backward()
    for key, p in reference.named_parameters():
        torch.testing.assert_close(g[key], p.grad, rtol=1e-4, atol=1e-6)
    for key, b in reference.named_buffers():  # PyTorch's own update (lerp rounds differently: ~1 ulp)
        torch.testing.assert_close(new_buffers[key], b, rtol=1e-6, atol=1e-7)

    # jvp: the directional derivative equals <grad, tangent>
    torch.testing.assert_close(value, reference_loss.detach(), rtol=1e-5, atol=1e-6)
    expected = sum((g[k] * tangents[k]).sum() for k in params)
    torch.testing.assert_close(directional, expected, rtol=1e-4, atol=1e-5)
    assert set(hvp) == set(params) and all(torch.isfinite(v).all() for v in hvp.values())


@pytest.mark.parametrize("name", MODELS)
def test_vmap_over_a_population_of_models(name):
    """Several models (stacked parameters and buffers) evaluated in one vmap call."""
    shape = (3, 8, 8)
    models = [build_model(name, shape, 10, seed=s).train() for s in range(3)]
    stacked = [state(m) for m in models]
    params = {k: torch.stack([p[k] for p, _ in stacked]) for k in stacked[0][0]}
    buffers = {k: torch.stack([b[k] for _, b in stacked]) for k in stacked[0][1]}
    x, _ = batch(shape)
    fm = logits_of(models[0])
    with fm.batch_statistics():
        out, stats = vmap(lambda p, b: fm.loss(fm.flatten(p), b, x, None))(params, buffers)
    new_buffers = fm.update_buffers(buffers, stats)  # elementwise: each model's statistics update its own buffers
    for i, model in enumerate(models):
        torch.testing.assert_close(out[i], model(x), rtol=1e-5, atol=1e-5)
        for key, b in model.named_buffers():
            torch.testing.assert_close(new_buffers[key][i], b, rtol=1e-5, atol=1e-6)
