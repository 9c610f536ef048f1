"""batch_norm_train: PyTorch's train-mode BatchNorm values and gradients, and an exact
forward-over-reverse derivative, checked against PyTorch's own (float64)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad, jvp, vmap

from fds_tune.batchnorm import batch_norm_train
from fds_tune.functional_model import FunctionalModel

DT = torch.float64


def flat_state(fm):
    """A model's flat parameters and buffers, as a run starts from them."""
    start = fm.start_state(lambda theta: ())
    return fm.flatten(start.params), start.buffers


def native(x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)


def fast(x, w, b):
    return batch_norm_train(x, w, b, 1e-5)


def make_loss(bn, x, y):
    """conv-BN(affine)-tanh-conv-BN(scale only)-pool-BN1d, plus a BN on the raw input
    (no tangent reaches it) without affine parameters."""

    def loss(p):
        cw, w, b, fc = p
        h = bn(x, None, None)
        h = bn(F.conv2d(h, cw, padding=1), w, b)
        h = torch.tanh(bn(F.conv2d(h, cw, padding=1), 1.3 * w, None))
        h = bn(h.mean((2, 3)), w, b)
        return F.cross_entropy(h @ fc.t(), y)

    return loss


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4, generator=g, dtype=DT)
    y = torch.randint(0, 5, (6,), generator=g)
    p = (
        torch.randn(3, 3, 3, 3, generator=g, dtype=DT),
        torch.rand(3, generator=g, dtype=DT) + 0.5,
        torch.randn(3, generator=g, dtype=DT),
        torch.randn(5, 3, generator=g, dtype=DT),
    )
    tangents = tuple(torch.randn(3, *q.shape, generator=g, dtype=DT) for q in p)
    return x, y, p, tangents


def test_values_and_gradients_equal_pytorch(problem):
    x, y, p, _ = problem
    ref, new = make_loss(native, x, y), make_loss(fast, x, y)
    assert torch.allclose(new(p), ref(p), rtol=1e-14, atol=0)
    for a, b in zip(grad(new)(p), grad(ref)(p)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_batched_jvp_of_gradient_equals_pytorch(problem):
    """The Hessian-vector products (vmap over 3 directions of jvp(grad)) agree to rounding."""
    x, y, p, tangents = problem
    ref, new = (vmap(lambda t, f=f: jvp(grad(make_loss(f, x, y)), (p,), (t,))[1])(tangents) for f in (native, fast))
    for a, b in zip(new, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12


def test_double_backward_is_refused(problem):
    x, y, p, _ = problem
    g = torch.autograd.grad(make_loss(fast, x, y)(tuple(q.requires_grad_() for q in p)), p, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(g[0].sum(), p[0])


def test_forward_mode_swaps_batchnorm_and_restores_it():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 1, 5, 5))
    fm = FunctionalModel(model, F.cross_entropy)
    theta, buffers = flat_state(fm)
    x, y = torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0])
    with fm.batch_statistics():
        ref, ref_stats = fm.loss(theta, buffers, x, y)
    with fm.batch_statistics(forward_mode=True):
        assert "forward" in vars(model[1])
        loss, stats = fm.loss(theta, buffers, x, y)
        with pytest.raises(ValueError, match="expected 4D input"):
            model[1](torch.randn(4, 2))
    assert "forward" not in vars(model[1])
    torch.testing.assert_close(loss, ref)
    for name in ref_stats:
        torch.testing.assert_close(stats[name], ref_stats[name])


@pytest.mark.filterwarnings("ignore:var_mean")  # the statistics hook sees the single value first
def test_one_value_per_channel_is_refused_like_pytorch():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    fm = FunctionalModel(model, lambda out, y: out.sum())
    theta, buffers = flat_state(fm)
    with fm.batch_statistics(forward_mode=True), pytest.raises(ValueError, match="more than 1 value per channel"):
        fm.loss(theta, buffers, torch.randn(1, 2), torch.zeros(1))
