"""analysis/notebooks/comparison.ipynb: stored without outputs, and runs headless on real results."""
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "analysis" / "notebooks" / "comparison.ipynb"


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "FDS_TUNE_RESULTS" in code[0].source and "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.e2e
def test_notebook_runs_headless_on_real_results(results, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FDS_TUNE_RESULTS", str(results))
    monkeypatch.setenv("FDS_TUNE_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "| fds | 2 |" in text and r"\\begin{tabular}" in text and "image/png" in text
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert names == {"regret.png", "fds_schedules.png", "fds_hypergradients.png", "greedy_trajectories.png"}
