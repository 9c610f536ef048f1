"""How long a comparison takes on one device, from measured per-step costs.

Two parts:

* :func:`measure_step_costs` times, interleaved on the device a trial would use, one step of
  plain training (``nn.Module`` + ``torch.optim.SGD``, the unit of cost of :mod:`fds_tune.cost`),
  one FDS inner step (the preset's schedule and engine mode, hypergradients included) and one
  greedy forward-mode step (one value per kind, every column active).
* :func:`expected_hours` (pure) turns those costs and a comparison preset into device-hours per
  method and the wall clock on one GPU, counting what :func:`experiments.compare.compare` runs:

  ========================  ========================================================================
  fds                       ``sum(epochs)`` epochs at the FDS step cost, retraining at plain cost
  black-box                 ``budget_epochs`` epochs at plain cost (``num_samples`` x ``max_epochs``
                            where that is less)
  pbt, pb2                  the population (:func:`~experiments.compare.population_size`) x ``max_epochs``
  hd, greedy                a grid of runs (:data:`~experiments.compare.GRID_SIZES`) of ``max_epochs``:
                            HD at plain cost, greedy at the greedy step cost
  lr-free methods           one run of ``max_epochs`` at plain cost
  every method but fds      a hand-over of ``retrain_epochs`` on the full training set at plain cost
  ========================  ========================================================================

  An epoch of a search is the training images less the validation split, in batches; a hand-over
  epoch is all of them.  The estimate leaves out evaluation, Ray's scheduling and checkpoints
  (10-30% more, as a guess) and HD's and the lr-free optimizers' small extra work per step; FDS
  counts every outer step (it may converge and stop sooner).
"""
from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from experiments.bench_engine import interleaved
from experiments.compare import GRID_SIZES, CompareSpec, population_size
from fds_tune import FDSConfig, FDSLearner, Problem, ProblemSpec, Schedule, hypergradients
from fds_tune.data import num_batches, train_val_split
from fds_tune.models import build_model
from fds_tune.optim import resolve_optimizer
from fds_tune.results import GREEDY_METHODS, LR_FREE_METHODS, METHODS, POPULATION_METHODS
from fds_tune.validation import check, check_int, check_number

__all__ = ["StepCosts", "black_box_budget", "estimate_table", "expected_hours", "measure_step_costs", "random_problem", "steps_per_epoch"]

TIMING_VALUES = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}  # the values timed (a step costs the same at any value)
OVERHEAD = "evaluation, Ray's scheduling and checkpoints are left out (add 10-30%, a guess)"


@dataclass(frozen=True)
class StepCosts:
    """Seconds of one training step on one device, by kind of step."""

    plain_s: float  # nn.Module + torch.optim.SGD: black-box trials, PBT members, HD, lr-free runs, every hand-over
    fds_s: float  # one FDS inner step: the preset's schedule and engine mode, hypergradients included
    greedy_s: float  # one greedy forward-mode step: one value per kind, every column active

    def __post_init__(self):
        for key in ("plain_s", "fds_s", "greedy_s"):
            check_number(key, getattr(self, key), low=0, low_open=True)


def steps_per_epoch(config: FDSConfig, n_train: int) -> tuple[int, int]:
    """(search, hand-over) steps per epoch for ``n_train`` training images: the images less the
    validation split (:func:`fds_tune.data.train_val_split`'s size), and all of them, in batches."""
    check_int("n_train", n_train, 2)
    n_val = len(train_val_split(n_train, config.val_fraction, config.seed)[1])  # the split itself, not its formula again
    return num_batches(n_train - n_val, config.batch_size), num_batches(n_train, config.batch_size)


def _fds_seconds(config: FDSConfig, costs: StepCosts, n_train: int) -> float:
    search, handover = steps_per_epoch(config, n_train)
    return sum(config.epochs) * search * costs.fds_s + config.retrain_epochs * handover * costs.plain_s


def black_box_budget(config: FDSConfig, spec: CompareSpec, costs: StepCosts, n_train: int) -> float:
    """Black-box training epochs per method and seed: ``spec.budget_epochs``, or ``budget_ratio``
    times FDS's compute (outer steps and retraining) in plain epochs."""
    if spec.budget_epochs is not None:
        return float(spec.budget_epochs)
    return spec.budget_ratio * _fds_seconds(config, costs, n_train) / (steps_per_epoch(config, n_train)[0] * costs.plain_s)


def _search(method: str, config: FDSConfig, spec: CompareSpec, budget: float) -> tuple[str, float, float, bool]:
    """One seed's search as (step cost, runs, epochs per run, spread): ``spread`` runs share a
    budget (K at once spend it K times as fast); the others are whole runs, K at once."""
    if method == "fds":
        return "fds_s", 1, sum(config.epochs), False
    if method in GREEDY_METHODS:
        return ("greedy_s" if method == "greedy" else "plain_s"), GRID_SIZES[method], spec.max_epochs, False
    if method in LR_FREE_METHODS:
        return "plain_s", 1, spec.max_epochs, False
    if method in POPULATION_METHODS:
        return "plain_s", population_size(spec, budget), spec.max_epochs, False
    total = budget if spec.num_samples is None else min(budget, spec.num_samples * spec.max_epochs)
    return "plain_s", total / spec.max_epochs, spec.max_epochs, True


def expected_hours(
    config: FDSConfig, spec: CompareSpec, costs: StepCosts, n_train: int, *, seeds: int = 1, concurrent: int = 1,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Device-hours per method (all ``seeds``) and wall-clock hours on one device running
    ``concurrent`` trials at once (``gpus_per_trial`` = 1/concurrent), from per-step ``costs``.

    Device-hours count one trial owning the device.  The wall clock assumes that ``concurrent``
    trials sharing it each run as fast as one alone, so that with ``concurrent`` > 1 it is a lower
    bound (a device one trial already keeps busy gives no speedup: then it is the device-hours).
    FDS, each run of a grid and every hand-over run one trial each; seeds run one after another.
    """
    check_int("seeds", seeds, 1)
    check_int("concurrent", concurrent, 1)
    check("methods", methods, bool(methods) and set(methods) <= set(METHODS), f"a non-empty list of names from {list(METHODS)}")
    search_steps, handover_steps = steps_per_epoch(config, n_train)
    budget = black_box_budget(config, spec, costs, n_train)
    handover_s = config.retrain_epochs * handover_steps * costs.plain_s  # FDS's retraining, or a method's hand-over
    rows = {}
    for method in methods:
        cost, runs, epochs, spread = _search(method, config, spec, budget)
        epoch_s = search_steps * getattr(costs, cost)
        wall_epochs = max(min(epochs, runs * epochs), runs * epochs / concurrent) if spread else math.ceil(runs / concurrent) * epochs
        rows[method] = {
            "step": cost, "runs": runs, "epochs_per_run": epochs, "search_epochs": runs * epochs,
            "handover_epochs": config.retrain_epochs,
            "device_hours": seeds * (runs * epochs * epoch_s + handover_s) / 3600,
            "wall_hours": seeds * (wall_epochs * epoch_s + handover_s) / 3600,
        }
    return {
        "n_train": n_train, "steps_per_epoch": search_steps, "handover_steps_per_epoch": handover_steps,
        "budget_epochs": budget, "max_epochs": spec.max_epochs, "seeds": seeds, "concurrent": concurrent,
        "step_costs": dataclasses.asdict(costs), "methods": rows,
        "device_hours": sum(r["device_hours"] for r in rows.values()),
        "wall_hours": sum(r["wall_hours"] for r in rows.values()),
        "left_out": OVERHEAD,
    }


def estimate_table(estimate: dict[str, Any]) -> str:
    """The estimate as a Markdown table, one row per method, then the totals."""
    e, costs = estimate, estimate["step_costs"]
    lines = [
        (
            f"{e['steps_per_epoch']} steps per search epoch, {e['handover_steps_per_epoch']} per hand-over epoch "
            f"({e['n_train']} training images); black-box budget {e['budget_epochs']:g} epochs; {e['seeds']} seed(s); "
            f"{e['concurrent']} trial(s) at once"
        ),
        "",
        "| method | search | step (ms) | hand-over | device-hours | wall-clock hours |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in e["methods"].items():
        lines.append(
            f"| {method} | {r['runs']:g} x {r['epochs_per_run']:g} epochs | {1e3 * costs[r['step']]:.1f} | "
            f"{r['handover_epochs']} epochs | {r['device_hours']:.2f} | {r['wall_hours']:.2f} |"
        )
    lines.append(f"| **total** | | | | **{e['device_hours']:.2f}** | **{e['wall_hours']:.2f}** |")
    return "\n".join(lines + ["", f"An estimate: {e['left_out']}."])


def random_problem(config: FDSConfig, n_images: int) -> Problem:
    """``config``'s problem on random CIFAR-shaped images (3 x side x side, 10 classes), for timing without the data."""
    side = config.image_size or 32
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_images, 3, side, side, generator=gen), torch.randint(0, 10, (n_images,), generator=gen)
    spec = ProblemSpec(
        model=lambda seed: build_model(config.model, (3, side, side), 10, seed=seed), train=(x, y), test=(x[:2], y[:2]),
        num_classes=10, augment=True,
    )
    return Problem(config.problem, spec)


def measure_step_costs(config: FDSConfig, problem: Problem, steps: int, rounds: int) -> dict[str, Any]:
    """Seconds per step of plain training, FDS and greedy forward mode on ``problem``'s device, over
    ``steps`` of its batches (made before the clock starts, the same for all three), interleaved
    (:func:`experiments.bench_engine.interleaved`: one warm-up round, then ``rounds`` timed rounds).

    FDS's per-step cost is the same at every horizon (its chunks stretch with the horizon, so the
    fraction of active columns does not change): a short horizon measures a long run's.  Reverse
    mode's is the same at every horizon while its states fit the checkpoint budget; a longer run
    that stores a state only every ``k`` steps also recomputes about one step per step (and
    ``engine_mode="auto"`` may then choose otherwise), which a short horizon does not show.
    Returns ``costs`` (:class:`StepCosts`), ``fds_mode`` (the engine mode FDS ran) and the device.
    """
    check_int("steps", steps, 1)
    check_int("rounds", rounds, 1)
    device = problem.device
    train_idx, val_idx = problem.split(0)
    batches = list(problem.steps(train_idx, 0, steps))
    val = list(problem.eval_batches(val_idx[: config.batch_size], config.batch_size))  # one batch: paid once per run
    optimizer = resolve_optimizer("sgd", config.grad_clamp)
    shape = FDSLearner(config, problem).group_rows()
    fds = Schedule({k: torch.full(shape[k] + (n,), TIMING_VALUES[k], dtype=torch.float64) for k, n in config.n_values.items()})
    greedy = Schedule({k: [TIMING_VALUES[k]] for k in config.n_values})
    modes = {}

    def engine(name: str, schedule: Schedule, mode: str, groups):
        model = problem.model(0)

        def run(batches, val):
            hg = hypergradients(
                model, schedule, batches, val, loss_fn=problem.loss, optimizer=optimizer, mode=mode, groups=groups,
                group_size=config.group_size,
            )
            modes[name] = hg.mode

        return run

    model = problem.model(0).train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)  # fds_tune.cost's reference loop

    def plain(batches, val):
        for x, y in batches:
            sgd.zero_grad(set_to_none=True)
            problem.loss(model(x), y).backward()
            sgd.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runners = {"plain_s": plain, "fds_s": engine("fds", fds, config.engine_mode, config.param_groups), "greedy_s": engine("greedy", greedy, "forward", None)}
    seconds = interleaved(runners, batches, val, rounds, device)
    return {
        "costs": StepCosts(**seconds),
        "fds_mode": modes["fds"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "device_type": device.type,
        "torch_threads": torch.get_num_threads(),
        "steps": steps,
        "rounds": rounds,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
