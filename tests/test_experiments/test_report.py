"""``fds-tune report``: a comparison rebuilt from its results.csv alone, and the horizon study's report
(hand-made results, tests/support/frames.py; no Ray, no training)."""
import json
import re

import pandas as pd
import pytest
from support.frames import H800, horizon_points, results_frame

import analysis
from experiments.cli import main
from experiments.compare import write_horizon_report, write_report

ONE_LINE_ERROR = re.compile(r"fds-tune: error: [^\n]+\n")


@pytest.fixture
def committed(tmp_path):
    """A comparison directory as committed: results.csv and cluster.json, no ray/."""
    out = tmp_path / "cmp"
    out.mkdir()
    results_frame(H800).to_csv(out / "results.csv", index=False)
    (out / "cluster.json").write_text(json.dumps({"cluster": {"CPU": 4.0, "GPU": 0.0}}))
    return out


def test_report_rebuilds_everything_from_the_csv_alone(committed, capsys):
    csv = (committed / "results.csv").read_bytes()
    assert main(["report", str(committed)]) == 0
    assert (committed / "results.csv").read_bytes() == csv  # read, not rewritten
    frame = pd.read_csv(committed / "results.csv")
    table = analysis.comparison_table(frame)
    assert (committed / "table.md").read_text() == analysis.to_markdown(table) + "\n"
    assert "up to 4 trials could run at once" in (committed / "table.tex").read_text()  # the caption reads cluster.json
    reading = analysis.reading(table, frame)
    assert (committed / "reading.md").read_text() == reading + "\n"
    assert reading.startswith("Level: 94.00% test accuracy") and "2.50 ± 0.71× against bohb" in reading
    for plot in ("regret", "schedules", "hypergradients"):
        assert (committed / f"{plot}.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert printed.index("| fds |") < printed.index("Compute: device-seconds") < printed.index(reading)  # table, caption, reading
    assert f"reading: {committed / 'reading.md'}" in printed


def test_write_report_returns_the_reading_and_the_schedules_from_the_csv(committed):
    report = write_report(committed, log=lambda _: None)
    assert report["reading"] == (committed / "reading.md").read_text().strip()
    assert set(report["plots"]) == {"regret", "schedules", "hypergradients"}
    # the schedule dicts came back from their text: the plot has FDS's lines, not a "no data" note
    df = analysis.read_results_csv(committed / "results.csv")
    assert len(analysis.long_form(df[df["method"] == "fds"], "schedule")) == 4 * 3  # 4 results, 3 values each


def test_a_gzipped_csv_rebuilds_the_same_report(committed, tmp_path):
    """A large comparison is committed as results.csv.gz: the report reads it as it reads results.csv."""
    write_report(committed, log=lambda _: None)
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    pd.read_csv(committed / "results.csv").to_csv(zipped / "results.csv.gz", index=False)
    (zipped / "cluster.json").write_text((committed / "cluster.json").read_text())
    report = write_report(zipped, log=lambda _: None)
    assert report["csv"] == zipped / "results.csv.gz" and not (zipped / "results.csv").exists()
    for name in ("table.md", "reading.md"):
        assert (zipped / name).read_text() == (committed / name).read_text()


def test_report_without_ray_or_csv_says_what_it_needs(tmp_path):
    with pytest.raises(ValueError, match=r"out: got '.*'; must be a comparison directory holding results in .*ray .* or their results.csv"):
        write_report(tmp_path)


@pytest.fixture
def study(tmp_path):
    """A horizon study: h800/results.csv, and the 2000-step point elsewhere (a comparison directory with its CSV)."""
    points = horizon_points()
    (tmp_path / "horizon" / "h800").mkdir(parents=True)
    points[800].to_csv(tmp_path / "horizon" / "h800" / "results.csv", index=False)
    (tmp_path / "wide").mkdir()
    points[2000].to_csv(tmp_path / "wide" / "results.csv", index=False)
    (tmp_path / "horizon" / "h6000").mkdir()  # a horizon still running: no results yet
    return tmp_path


def test_report_horizon_writes_the_csv_table_and_plot(study, capsys):
    root = study / "horizon"
    assert main(["report", "--horizon", str(root), "--point", f"2000={study / 'wide'}"]) == 0
    expected = analysis.horizon_frame(horizon_points())
    frame = pd.read_csv(root / "horizon.csv")
    assert list(zip(frame["steps"], frame["method"])) == list(zip(expected["steps"], expected["method"]))
    assert frame["speedup"].tolist() == pytest.approx([2.5, 4.5, 0.5, 3.0, 0.4, 0.6])  # see tests/support/frames.py
    markdown = (root / "horizon.md").read_text()
    assert markdown == analysis.horizon_to_markdown(expected) and "- Seeds: 0, 1." in markdown
    assert (root / "horizon.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "| 800 | bohb | 94.00 | 2.50 ± 0.71× |" in printed and "h6000: no results.csv or ray/ yet; left out" in printed


def test_report_horizon_with_given_seeds(study):
    report = write_horizon_report(study / "horizon", points={2000: study / "wide"}, seeds=[0], log=lambda _: None)
    assert report["seeds"] == [0] and report["frame"].attrs["seeds"] == [0]
    assert report["frame"].set_index(["steps", "method"]).loc[(800, "bohb"), "speedup"] == pytest.approx(2.0)  # 4 h / 2 h
    assert sorted(report["points"]) == [800, 2000]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--point", "2000=x"], "argument --point: only with --horizon"),
        (["--seeds", "0"], "argument --seeds: only with --horizon"),
        (["--horizon", "--point", "0=x"], "argument --point: got '0=x'; must be STEPS=PATH with STEPS an int >= 1"),
        (["--horizon", "--point", "wide"], "argument --point: got 'wide'; must be STEPS=PATH"),
        (["--horizon", "--point", "2000=a", "--point", "2000=b"], r"argument --point: got horizons \[2000, 2000\]; must be distinct"),
        (["--horizon", "--seeds", "0", "0"], r"argument --seeds: got \[0, 0\]; must be distinct"),
        (["--horizon", "--seeds", "-1"], "argument --seeds: got -1; must be an int >= 0"),
    ],
)
def test_bad_report_options_exit_with_one_line(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert re.search(match, err), err


@pytest.mark.parametrize(
    "setup, argv, match",
    [
        (lambda root: None, [], r"dir: got '.*'; must be a directory holding h<steps>/results.csv"),
        (lambda root: None, ["--point", "2000=/nowhere"], r"points\[2000\]: got '/nowhere'; must be a comparison directory holding results.csv or ray/"),
        (lambda root: (root / "h800").mkdir() or results_frame(H800).to_csv(root / "h800" / "results.csv"),
         ["--point", "800=/nowhere"], r"points\[800\]: got '/nowhere'; must be a horizon not already in"),
    ],
)
def test_bad_horizon_studies_are_one_line_errors(setup, argv, match, tmp_path, capsys):
    setup(tmp_path)
    assert main(["report", "--horizon", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert re.search(match, err), err
    assert main(["report", "--horizon", str(tmp_path / "missing")]) == 2
    assert "dir: got" in capsys.readouterr().err
