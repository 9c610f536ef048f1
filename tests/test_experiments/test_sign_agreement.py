"""experiments/sign_agreement.py: sign agreement by hand, and a tiny real float32/float64 measurement."""
import json

import pandas as pd
import pytest
import torch

from experiments.sign_agreement import agreement, main, table


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_agreement_counts_equal_signs_over_every_kind():
    a = {"lr": t(-1.0, 2.0, -3.0), "momentum": t(0.5)}
    b = {"momentum": t(-0.1), "lr": t(-5.0, 1e-9, 3.0)}  # the order of the kinds does not matter
    assert agreement(a, b) == pytest.approx(2 / 4)
    assert agreement(a, a) == 1.0


def test_horizons_must_cover_every_shared_value(tmp_path):
    with pytest.raises(ValueError, match=r"horizons: got 4; must be an int >= 5 \(one inner step per shared lr value\)"):
        main(str(tmp_path), horizons=(100, 4))


def test_table_weights_runs_by_their_components():
    df = pd.DataFrame({"horizon": [100, 100, 1000], "components": [7, 3, 7], "agreement": [1.0, 0.0, 5 / 7]})
    out = table(df).set_index("horizon")
    assert out.loc[100, "components"] == 10 and out.loc[100, "agreement (%)"] == 70.0
    assert out.loc[1000, "agreement (%)"] == pytest.approx(71.4) and out.loc[1000, "runs"] == 1


def test_a_tiny_measurement_agrees_at_a_short_horizon_and_resumes(tmp_path):
    df = main(str(tmp_path), horizons=(5,), orders=2)
    assert df[["horizon", "components", "agreement", "agreement_two_orders"]].values.tolist() == [[5, 7, 1.0, 1.0]]
    assert 0.0 <= df["order_agreement"][0] <= 1.0
    rec = json.loads((tmp_path / "runs" / "decaying_0_5_2.json").read_text())
    for order in (0, 1):  # five steps: float32 is float64 to float32's precision, not bit for bit
        lo, hi = rec["hypergrads"][f"float32_order{order}"], rec["hypergrads"][f"float64_order{order}"]
        assert lo != hi
        for k in lo:
            torch.testing.assert_close(torch.tensor(lo[k], dtype=torch.float64), torch.tensor(hi[k], dtype=torch.float64), rtol=1e-3, atol=1e-7)
    assert rec["hypergrads"]["float32_order0"] != rec["hypergrads"]["float32_order1"]  # another data order
    assert (tmp_path / "sign_agreement.md").read_text().startswith("| horizon | runs | components | agreement (%) |")
    written = (tmp_path / "runs" / "decaying_0_5_2.json").stat().st_mtime_ns
    main(str(tmp_path), horizons=(5,), orders=2, resume=True)
    assert (tmp_path / "runs" / "decaying_0_5_2.json").stat().st_mtime_ns == written
