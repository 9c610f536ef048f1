"""HyperLayout: hypers_vjp is the transpose of hypers (autograd's VJP of the indexing)."""
import torch

from fds_tune.groups import HyperLayout


def test_hypers_vjp_equals_autograds_vjp_of_hypers():
    gen = torch.Generator().manual_seed(0)
    index = torch.tensor([0, 0, 1, 2, 2, 2, 1])  # 7 parameters in 3 groups
    layout = HyperLayout(("lr", "momentum", "weight_decay"), {"lr": 3, "momentum": 1, "weight_decay": 3}, index)
    hvec = torch.randn(layout.n_slots, dtype=torch.float64, generator=gen, requires_grad=True)
    values = layout.hypers(hvec)
    cotangents = {k: torch.randn(v.shape, dtype=torch.float64, generator=gen) for k, v in values.items()}
    (expected,) = torch.autograd.grad(list(values.values()), hvec, list(cotangents.values()))
    assert torch.allclose(layout.hypers_vjp(cotangents), expected, rtol=1e-14, atol=0)
    assert layout.hypers_vjp(cotangents)[layout.slot("momentum")] == cotangents["momentum"]
