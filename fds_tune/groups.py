"""Per-parameter-group hyperparameters: which parameters each shared value applies to.

A schedule may give a kind one row of shared values for the whole network (a 1-D
tensor) or one row per *parameter group* (a ``(groups, values)`` tensor).  Groups
are chosen by parameter-name patterns (``fnmatch``), e.g.::

    groups = {"features": ["conv*", "features.*"], "classifier": ["fc*", "classifier.*"]}

or ``"layers"``: one group per module that owns parameters, in model order.  A
parameter belongs to the first group whose pattern matches its name.

At every inner step the engine builds one *hyperparameter vector* (one entry per
slot: a kind, or a kind in one group) and :meth:`HyperLayout.hypers` turns it into
what the optimizer's ``update`` reads: a scalar for a kind shared by the whole
network, or a per-element vector (the group's value at each flat parameter) for a
grouped kind.  Forward mode, reverse mode and plain training all go through it,
so every kind and every group is handled by the same code, and ``jvp``/``vjp``
differentiate the gather exactly.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch

from .validation import check, fail

__all__ = ["GroupSpec", "param_groups", "HyperLayout", "columns_by_kind"]

GroupSpec = Mapping[str, Sequence[str]] | str | None


def param_groups(names: Sequence[str], numels: Sequence[int], spec: GroupSpec) -> tuple[list[str], torch.Tensor | None]:
    """Group names and, for every flat parameter element, its group index.

    Args:
        names, numels: the parameters in flat order (:class:`~fds_tune.functional_model.FunctionalModel`).
        spec: ``None`` (one group), ``"layers"`` (one group per owning module) or a mapping
            group name -> name patterns.

    Returns ``([], None)`` for ``spec=None``.
    """
    if spec is None:
        return [], None
    if isinstance(spec, str):
        check("groups", spec, spec == "layers", "None, 'layers' or a mapping group name -> parameter-name patterns")
        owners = [n.rpartition(".")[0] or n for n in names]
        groups = list(dict.fromkeys(owners))
        member = [groups.index(o) for o in owners]
    else:
        check("groups", spec, isinstance(spec, Mapping) and len(spec) > 0, "None, 'layers' or a non-empty mapping group name -> patterns")
        groups = list(spec)
        for g, patterns in spec.items():
            ok = isinstance(patterns, (list, tuple)) and len(patterns) > 0 and all(isinstance(p, str) for p in patterns)
            check(f"groups[{g!r}]", patterns, ok, "a non-empty list of parameter-name patterns (fnmatch), e.g. ['conv*']")
        member = []
        for n in names:
            hit = next((i for i, g in enumerate(groups) if any(fnmatch.fnmatchcase(n, p) for p in spec[g])), None)
            if hit is None:
                fail("groups", dict(spec), f"patterns that match every parameter; {n!r} matches none (add a group with ['*'])")
            member.append(hit)
        empty = [g for i, g in enumerate(groups) if i not in member]
        check("groups", dict(spec), not empty, f"groups that each match a parameter; {empty} match none")
    index = torch.repeat_interleave(torch.tensor(member), torch.tensor(list(numels)))
    return groups, index


class HyperLayout:
    """The slots of a step's hyperparameter vector and how each reaches the parameters.

    ``counts[kind]`` is 1 (one value for the whole network) or the number of groups;
    slots are laid out kind by kind, group by group.
    """

    def __init__(self, kinds: Sequence[str], counts: Mapping[str, int], group_index: torch.Tensor | None):
        self.kinds = tuple(kinds)
        self.counts = {k: int(counts[k]) for k in self.kinds}
        self.offsets = {}
        off = 0
        for k in self.kinds:
            self.offsets[k] = off
            off += self.counts[k]
        self.n_slots = off
        self.group_index = group_index
        grouped = [k for k in self.kinds if self.counts[k] > 1]
        if grouped and group_index is None:
            fail("groups", None, f"a group spec: kinds {grouped} have one row of values per group")

    def slot(self, kind: str, group: int = 0) -> int:
        return self.offsets[kind] + group

    def to(self, device: torch.device) -> "HyperLayout":
        index = None if self.group_index is None else self.group_index.to(device)
        return HyperLayout(self.kinds, self.counts, index)

    def hypers(self, hvec: torch.Tensor) -> dict[str, torch.Tensor]:
        """What an optimizer's ``update`` reads: kind -> scalar, or a per-element vector for a grouped kind."""
        out = {}
        for k in self.kinds:
            off, n = self.offsets[k], self.counts[k]
            out[k] = hvec[off] if n == 1 else hvec[off : off + n][self.group_index]
        return out

    def hypers_vjp(self, cotangents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The transpose of :meth:`hypers`: the cotangent of ``hvec`` from those of its values
        (a grouped kind's per-element cotangents summed per group by ``index_add``; on CPU, several
        times faster than autograd's backward of the indexing)."""
        parts = []
        for k in self.kinds:
            c = cotangents[k]
            parts.append(c.reshape(1) if self.counts[k] == 1 else c.new_zeros(self.counts[k]).index_add_(0, self.group_index, c))
        return torch.cat(parts)


def columns_by_kind(flat: torch.Tensor, layout: HyperLayout, sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Split per-column values (kind by kind, group row by row, ``sizes[kind]`` values per row)
    into kind -> 1-D tensor (a kind shared by the whole network) or ``(groups, values)`` tensor."""
    out, off = {}, 0
    for k in layout.kinds:
        rows, n = layout.counts[k], sizes[k]
        block = flat[..., off : off + rows * n]
        out[k] = block if rows == 1 else block.reshape(*block.shape[:-1], rows, n)
        off += rows * n
    return out
