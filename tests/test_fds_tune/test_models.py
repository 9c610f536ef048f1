"""fds_tune.models: functional calls, BatchNorm statistics, seeding and torch.func."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn import functional as F

from fds_tune.models import MODELS, LeNet, MLP, WideResNet, build_model, functional_forward

# torch's own jvp decompositions still call torch.jit.script, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")

# Small inputs keep WRN-16-1 fast; every model sees every size class it is used with.
CASES = [
    ("mlp", (1, 8, 8)),
    ("mlp", (3, 4, 4)),
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
def test_functional_forward_is_pure(train):
    model = build_model("wrn-16-1", (3, 8, 8), 10).train(train)
    params, buffers = state(model)
    before = {k: v.clone() for k, v in buffers.items()}
    x, _ = batch((3, 8, 8))
    out, new_buffers = functional_forward(model, params, buffers, x)
    for key in buffers:
        assert torch.equal(buffers[key], before[key])  # inputs untouched
    reference = copy.deepcopy(model)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    for key, value in reference.named_buffers():
        torch.testing.assert_close(new_buffers[key], value, rtol=0, atol=0)
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
    assert MODELS == ("mlp", "lenet", "wrn-16-1")
    assert isinstance(build_model("mlp", (1, 8, 8), 10), MLP)
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
    ({"name": "resnet"}, r"model='resnet' is not known; expected one of \('mlp', 'lenet', 'wrn-16-1'\)"),
    ({"input_shape": (28, 28)}, r"input_shape=\(28, 28\) must be \(C, H, W\)"),
    ({"input_shape": (1, 0, 8)}, "must hold positive integers"),
    ({"input_shape": (1, 2, 2)}, "height and width must be >= 4"),
    ({"num_classes": 0}, "num_classes=0 must be a positive integer"),
    ({"seed": "1"}, "seed='1' must be an integer"),
])
def test_build_model_rejects(kwargs, match):
    args = {"name": "lenet", "input_shape": (1, 8, 8), "num_classes": 10, **kwargs}
    seed = args.pop("seed", 0)
    with pytest.raises(ValueError, match=match):
        build_model(args["name"], args["input_shape"], args["num_classes"], seed=seed)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth=15 must be 6n \\+ 4"):
        WideResNet((3, 32, 32), 10, depth=15)


@pytest.mark.parametrize(("name", "shape"), CASES[:-1], ids=IDS[:-1])  # one WRN case: they are slow
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_torch_func_grad_and_jvp(name, shape, train):
    model = build_model(name, shape, 10, seed=0).train(train)
    params, buffers = state(model)
    x, y = batch(shape)

    def loss(p):
        logits, new_buffers = functional_forward(model, p, buffers, x)
        return F.cross_entropy(logits, y), new_buffers

    # grad against reverse-mode autograd through the module itself
    g, new_buffers = grad(loss, has_aux=True)(params)
    reference = copy.deepcopy(model)
    reference_loss = F.cross_entropy(reference(x), y)
    reference_loss.backward()
    for key, p in reference.named_parameters():
        torch.testing.assert_close(g[key], p.grad, rtol=1e-4, atol=1e-6)
    for key, b in reference.named_buffers():
        torch.testing.assert_close(new_buffers[key], b, rtol=0, atol=0)

    # jvp: the directional derivative equals <grad, tangent>
    tangents = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in params.items()}
    value, directional, _ = jvp(loss, (params,), (tangents,), has_aux=True)
    torch.testing.assert_close(value, reference_loss.detach(), rtol=1e-5, atol=1e-6)
    expected = sum((g[k] * tangents[k]).sum() for k in params)
    torch.testing.assert_close(directional, expected, rtol=1e-4, atol=1e-5)

    # forward-over-reverse (a Hessian-vector product), as FDS composes them
    hvp = jvp(lambda p: grad(loss, has_aux=True)(p)[0], (params,), (tangents,))[1]
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
    out, new_buffers = vmap(functional_forward, in_dims=(None, 0, 0, None))(models[0], params, buffers, x)
    for i, model in enumerate(models):
        torch.testing.assert_close(out[i], model(x), rtol=1e-5, atol=1e-5)
        for key, b in model.named_buffers():
            torch.testing.assert_close(new_buffers[key][i], b, rtol=1e-5, atol=1e-6)
