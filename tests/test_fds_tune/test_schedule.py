"""fds_tune.schedule: shared values over a horizon, and Schedule's checks."""
import math

import pytest
import torch

from fds_tune.schedule import Schedule, chunk_start, steps_per_value, value_index


def test_values_cover_contiguous_chunks_of_the_horizon():
    assert [value_index(3, t, 10) for t in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [chunk_start(3, i, 10) for i in range(4)] == [0, 4, 7, 10]
    assert steps_per_value(3, 10).tolist() == [4.0, 3.0, 3.0]


def test_schedule_holds_1d_float_tensors():
    s = Schedule({"lr": [0.1, 0.05]}, momentum=0.9, weight_decay=torch.tensor([5e-4], dtype=torch.float32))
    assert s.sizes == {"lr": 2, "momentum": 1, "weight_decay": 1}
    assert s["lr"].dtype == torch.float64 and s["weight_decay"].dtype == torch.float32
    assert s.as_lists() == {"lr": [0.1, 0.05], "momentum": [0.9], "weight_decay": [pytest.approx(5e-4)]}
    assert Schedule(lr=[1, 2])["lr"].dtype == torch.float64  # integers become floats
    assert {k: float(v) for k, v in s.at(5, 10).items()} == {"lr": 0.05, "momentum": 0.9, "weight_decay": pytest.approx(5e-4)}


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (({"lr": [0.1]},), {"lr": [0.2]}, r"schedule kinds given twice: got \['lr'\]; must be none"),
    ((), {}, r"schedule: got \{\}; must be at least one hyperparameter kind"),
    ((), {"lr": []}, r"schedule\['lr'\]: got \[\]; must be a non-empty 1-D sequence \(or groups x values table\) of finite values"),
    ((), {"lr": [[[0.1, 0.2]]]}, r"schedule\['lr'\]: got \[\[\[0.1, 0.2\]\]\]; must be a non-empty 1-D sequence \(or groups x values"),
    ((), {"lr": [0.1, math.nan]}, r"schedule\['lr'\]: got \[0.1, nan\]; must be a non-empty 1-D sequence \(or groups x values table\) of finite"),
    ((), {"momentum": torch.tensor([math.inf])}, r"schedule\['momentum'\]: got \[inf\]; must be .* finite values"),
])
def test_bad_schedules_name_kind_value_and_rule(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(*args, **kwargs)


def test_a_kind_per_group_is_a_table_of_rows():
    s = Schedule(lr=[[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], momentum=[0.9])
    assert s.sizes == {"lr": 3, "momentum": 1} and s.group_counts == {"lr": 2, "momentum": 1}
    torch.testing.assert_close(s.at(4, 6)["lr"], torch.tensor([0.3, 3.0], dtype=torch.float64))
    table = s.table(["lr", "momentum"], [0, 2, 5], 6)  # slots: lr of group 0, lr of group 1, momentum
    expected = [[0.1, 1.0, 0.9], [0.2, 2.0, 0.9], [0.3, 3.0, 0.9]]
    torch.testing.assert_close(table, torch.tensor(expected, dtype=torch.float64))
    assert s.as_lists()["lr"] == [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]
