"""analysis/horizon.py and plots.plot_horizon: FDS's speedup at each horizon, on frames worked out by hand
(tests/support/frames.py)."""
import math

import pandas as pd
import pytest
from support.frames import H800, horizon_points, results_frame

from analysis import HORIZON_METHODS, horizon_frame, horizon_seeds, horizon_to_markdown, plot_horizon

SD2 = math.sqrt(2) / 2  # the std (ddof 1) of two values one apart


def test_horizon_frame_by_hand():
    frame = horizon_frame(horizon_points())
    assert frame.attrs["seeds"] == [0, 1]  # seed 2 is at 2000 only; tpe is not one of the methods
    assert list(zip(frame["steps"], frame["method"])) == [(s, m) for s in (800, 2000) for m in HORIZON_METHODS]
    rows = frame.set_index(["steps", "method"])
    assert rows["level"].tolist() == pytest.approx([0.94] * 3 + [0.95] * 3)
    expected = {  # speedup, std, bound, pairs
        (800, "bohb"): (2.5, SD2, ""), (800, "hyperband"): (4.5, math.nan, ">"), (800, "random"): (0.5, 0.0, ""),
        (2000, "bohb"): (3.0, 2 * SD2, ""), (2000, "hyperband"): (0.4, 0.0, ""), (2000, "random"): (0.6, math.nan, ">"),
    }
    for key, (speedup, std, bound) in expected.items():
        r = rows.loc[key]
        assert (r["speedup"], r["speedup_std"]) == (pytest.approx(speedup), pytest.approx(std, nan_ok=True)), key
        assert (r["speedup_bound"], r["speedup_pairs"], r["speedup_seeds"]) == (bound, 2, 2), key
    assert rows["fds_hours_to"].tolist() == pytest.approx([2.0] * 3 + [5.0] * 3)
    assert rows["hours_to"].tolist() == pytest.approx([5.0, math.nan, 1.0, 15.0, 2.0, math.nan], nan_ok=True)
    assert rows["reached"].tolist() == [2, 0, 2, 2, 2, 0] and rows["fds_reached"].tolist() == [2] * 6
    assert rows["test_acc"].tolist() == pytest.approx([0.95, 0.93, 0.95, 0.96, 0.96, 0.90])
    assert rows["fds_test_acc"].tolist() == pytest.approx([0.95] * 3 + [0.96] * 3)
    assert rows.loc[(2000, "bohb"), "hours_to_std"] == pytest.approx(10 * SD2)  # 10 h and 20 h


def test_the_seeds_and_the_margin_change_the_level():
    points = horizon_points()
    # seed 0 alone: at 800 FDS 2 h against bohb 4 h
    assert horizon_frame(points, seeds=[0]).set_index(["steps", "method"]).loc[(800, "bohb"), "speedup"] == pytest.approx(2.0)
    # a margin of 6 points at 800: level .89, which FDS reaches at 1 h and hyperband (seed 0) at 2 h
    wide = horizon_frame({800: points[800]}, within=6.0).set_index("method")
    assert wide.loc["hyperband", ["speedup", "speedup_bound", "speedup_pairs"]].tolist() == [pytest.approx(6.0), "", 2]  # 2/1 and 10/1
    assert wide["level"].iloc[0] == pytest.approx(0.89)
    one = horizon_frame(points, methods=["random"])
    assert one["method"].tolist() == ["random", "random"] and one.attrs["within"] == 1.0


def test_horizon_seeds_are_those_of_every_method_at_every_horizon():
    points = horizon_points()
    assert horizon_seeds(points) == [0, 1]
    assert horizon_seeds({2000: points[2000]}, methods=["bohb"]) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"seeds: got \[\]; must be at least one seed with runs of fds and every method"):
        horizon_seeds({800: points[800], 2000: results_frame({("fds", 5): [(1, 0.9)], **{(m, 5): [(1, 0.9)] for m in HORIZON_METHODS}})})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"points": {}}, r"points: got \{\}; must be a non-empty mapping"),
        ({"points": {0: None}}, r"points: got 0; must be keyed by horizons, ints >= 1"),
        ({"methods": ["fds", "bohb"]}, r"methods: got \['fds', 'bohb'\]; must be distinct method names other than 'fds'"),
        ({"methods": []}, r"methods: got \[\]; must be distinct method names"),
        ({"within": -1.0}, r"within: got -1.0; must be a finite number >= 0 \(accuracy points"),
        ({"seeds": []}, r"seeds: got \[\]; must be a non-empty sequence of seeds"),
        ({"seeds": [0, 0]}, r"seeds: got \[0, 0\]; must be distinct seeds"),
        ({"seeds": [0, 2]}, r"points\[800\]: got \{'fds': \[0\], .*must be results with a run of fds .*\(missing: fds seed 2, bohb seed 2"),
        ({"methods": ["tpe"]}, r"seeds: got \[\]; must be at least one seed"),  # tpe only at 2000
        ({"methods": ["tpe"], "seeds": [0]}, r"points\[800\]: .*\(missing: tpe seed 0\)"),
    ],
)
def test_horizon_frame_rejects_bad_arguments(kwargs, match):
    args = {"points": horizon_points(), **kwargs}
    with pytest.raises(ValueError, match=match):
        horizon_frame(args.pop("points"), **args)


def test_horizon_markdown_by_hand():
    md = horizon_to_markdown(horizon_frame(horizon_points())).splitlines()
    assert md[0] == "| Inner steps | Method | Level (%) | FDS speedup | FDS hours to level | Hours to level | FDS test acc. (%) | Test acc. (%) |"
    assert md[2] == "| 800 | bohb | 94.00 | 2.50 ± 0.71× | 2 ± 0 | 5 ± 1.41 | 95.00 ± 0.00 | 95.00 ± 0.00 |"
    assert md[3] == "| 800 | hyperband | 94.00 | > 4.50× | 2 ± 0 | not reached | 95.00 ± 0.00 | 93.00 ± 0.00 |"
    assert md[7] == "| 2,000 | random | 95.00 | > 0.60× | 5 ± 0 | not reached | 96.00 ± 0.00 | 90.00 ± 0.00 |"
    assert md[8:10] == ["", "Notes:"]
    assert md[10].startswith("- Level: each horizon's best mean final test accuracy (FDS and these methods) less 1 point;")
    assert md[11:] == [
        "- Seeds: 0, 1.", "- > s×: the method never reaches the level (in some seeds); s is a lower bound, with its total compute.",
    ]


def test_horizon_markdown_marks_partial_seeds_and_disagreeing_bounds():
    runs = {**H800, ("fds", 1): [(1, 0.90)], ("bohb", 1): [(6, 0.90)], ("hyperband", 0): [(3, 0.95)]}
    # best: random's .95, level .94.  FDS reaches it in seed 0 only (2 h; seed 1 ends at .90 after 1 h).
    # bohb: seed 0 4 h / 2 h, in seed 1 neither reaches it: 2 from 1/2 seeds; hyperband likewise 3 h / 2 h
    frame = horizon_frame({800: results_frame(runs)}).set_index("method")
    assert frame.loc["bohb", ["speedup", "speedup_bound", "speedup_pairs", "speedup_seeds"]].tolist() == [pytest.approx(2.0), "", 1, 2]
    assert frame.loc["hyperband", ["speedup", "speedup_bound", "speedup_pairs"]].tolist() == [pytest.approx(1.5), "", 1]
    # random reaches it in both seeds at 1 h, FDS in seed 0 only: seed 0 exact .5, seed 1 an upper bound 1/1
    assert frame.loc["random", ["speedup", "speedup_bound"]].tolist() == [pytest.approx(0.75), "<"]
    md = horizon_to_markdown(horizon_frame({800: results_frame(runs)}))
    assert "| 800 | bohb | 94.00 | 2.00× (1/2 seeds) | 2 (1/2 reached) | 4 (1/2 reached) |" in md
    assert "- (k/n seeds): the speedup comes from k of the n seeds both methods ran." in md
    assert "- < s×: FDS never reaches the level (in some seeds)" in md and "- (k/n reached):" in md
    crossed = {**H800, ("fds", 1): [(1, 0.90)], ("random", 0): [(1, 0.90)]}  # FDS reaches in seed 0 only, random in seed 1 only
    md = horizon_to_markdown(horizon_frame({800: results_frame(crossed)}))
    assert "| 800 | random | 94.00 | — |" in md and "- —: no seed pair gives a ratio" in md


def test_plot_horizon_writes_a_png(tmp_path):
    frame = horizon_frame(horizon_points())
    path = plot_horizon(frame, tmp_path / "sub" / "horizon.png")
    assert path == tmp_path / "sub" / "horizon.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    # a frame read back from its CSV (bounds "" become NaN) and a frame whose speedups are all missing still plot
    frame.to_csv(tmp_path / "horizon.csv", index=False)
    assert plot_horizon(pd.read_csv(tmp_path / "horizon.csv"), tmp_path / "again.png").stat().st_size > 5000
    assert plot_horizon(frame.assign(speedup=math.nan), tmp_path / "empty.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"frame columns: got .*must be the columns of horizon_frame \(missing: \['speedup'"):
        plot_horizon(frame.drop(columns="speedup"), tmp_path / "bad.png")
