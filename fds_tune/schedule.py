"""Shared hyperparameter schedules.

A schedule maps each hyperparameter kind (``lr``, ``momentum``, ...) to a 1-D
tensor of *shared values*.  Over a horizon of ``T`` inner steps, step ``t``
(0-based) uses value ``floor(n_k * t / T)`` of kind ``k``, so each value covers
one contiguous chunk of steps; the same schedule can be stretched to any
horizon.

A kind may also hold one row of values per parameter group, a ``(groups, values)``
tensor (see :mod:`fds_tune.groups`): each row is shared over chunks the same way.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from .validation import check, fail

__all__ = ["Schedule", "value_index", "chunk_start", "steps_per_value"]


def value_index(n_values: int, step: int, horizon: int) -> int:
    """Index of the shared value used at ``step`` of ``horizon``: floor(n * t / T)."""
    return (n_values * step) // horizon


def chunk_start(n_values: int, index: int, horizon: int) -> int:
    """First step that uses shared value ``index`` (inverse of :func:`value_index`)."""
    return -((-index * horizon) // n_values)  # ceil(i * T / n)


def steps_per_value(n_values: int, horizon: int) -> torch.Tensor:
    """Number of inner steps each shared value covers (sums to ``horizon``)."""
    starts = [chunk_start(n_values, i, horizon) for i in range(n_values + 1)]
    return torch.tensor([b - a for a, b in zip(starts[:-1], starts[1:])], dtype=torch.float64)


class Schedule(Mapping[str, torch.Tensor]):
    """Name-keyed shared values, e.g. ``Schedule(lr=[0.1, 0.05], momentum=[0.9], weight_decay=[5e-4])``.

    Values are stored as 1-D tensors, or 2-D ``(groups, values)`` tensors for a kind
    given per parameter group (float64 unless a tensor of another floating dtype is
    given).  A schedule is immutable: methods return new ones.
    """

    def __init__(self, values: Mapping[str, Sequence[float] | torch.Tensor] | None = None, /, **kwargs):
        merged = dict(values or {})
        twice = sorted(set(merged) & set(kwargs))
        check("schedule kinds given twice", twice, not twice, "none: give each kind in the mapping or as a keyword")
        merged.update(kwargs)
        check("schedule", merged, bool(merged), "at least one hyperparameter kind, e.g. Schedule(lr=[0.1])")
        self._values: dict[str, torch.Tensor] = {}
        for name, raw in merged.items():
            t = raw.detach().clone() if isinstance(raw, torch.Tensor) else torch.as_tensor(raw, dtype=torch.float64)
            if not t.is_floating_point():
                t = t.to(torch.float64)
            if t.dim() == 0:
                t = t.reshape(1)
            if not (t.dim() in (1, 2) and t.numel() > 0 and torch.isfinite(t).all()):  # .tolist() only for the message
                fail(f"schedule[{name!r}]", t.tolist(), "a non-empty 1-D sequence (or groups x values table) of finite values")
            self._values[name] = t

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_rounded(t.tolist())}" for k, t in self._values.items())
        return f"Schedule({inner})"

    @property
    def sizes(self) -> dict[str, int]:
        """Number of shared values per kind (per group, for a kind given per group)."""
        return {k: t.shape[-1] for k, t in self._values.items()}

    @property
    def group_counts(self) -> dict[str, int]:
        """Rows of values per kind: 1, or the number of parameter groups for a kind given per group."""
        return {k: t.shape[0] if t.dim() == 2 else 1 for k, t in self._values.items()}

    def rows(self, kind: str) -> torch.Tensor:
        """The values of ``kind`` as a ``(rows, values)`` table (one row unless given per group)."""
        t = self._values[kind]
        return t if t.dim() == 2 else t.reshape(1, -1)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Schedule":
        return Schedule({k: t.to(dtype=dtype or t.dtype, device=device) for k, t in self._values.items()})

    def at(self, step: int, horizon: int) -> dict[str, torch.Tensor]:
        """The hyperparameter values used at ``step`` of a ``horizon``-step run (a row per group for a grouped kind)."""
        return {k: t[..., value_index(t.shape[-1], step, horizon)] for k, t in self._values.items()}

    def table(self, kinds: Sequence[str], steps: Sequence[int], horizon: int) -> torch.Tensor:
        """The values used at each of ``steps`` of a ``horizon``-step run: ``len(steps) x slots``, where
        the slots are the kinds in order, a grouped kind taking one slot per group."""
        cols = []
        for k in kinds:
            rows = self.rows(k)
            idx = [value_index(rows.shape[1], t, horizon) for t in steps]
            cols.append(rows[:, idx].T)
        return torch.cat(cols, 1)

    def as_lists(self) -> dict[str, list]:
        """Kind -> list of values (a list of rows for a kind given per group): JSON-safe."""
        return {k: t.tolist() for k, t in self._values.items()}


def _rounded(values):
    return [_rounded(v) for v in values] if isinstance(values, list) else round(values, 6)
