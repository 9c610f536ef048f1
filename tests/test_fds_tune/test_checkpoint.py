"""Checkpoint files: JSON or tensors-only, atomic, versioned; malicious files refused."""
import json
import os
import pickle

import pytest
import torch

from fds_tune.checkpoint import CheckpointError, atomic_write_bytes, load_json, load_tensors, save_json, save_tensors


class Boom:
    """Unpickling this object would run code (writes a marker file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_json_round_trip_and_refusals(tmp_path):
    save_json(tmp_path, "fds", 1, {"seed": 0}, {"x": [1.5, float("inf")]})
    assert load_json(tmp_path, "fds", 1, {"seed": 0}) == {"x": [1.5, float("inf")]}
    with pytest.raises(CheckpointError, match="format version 1; this fds-tune reads version 2"):
        load_json(tmp_path, "fds", 2)
    with pytest.raises(CheckpointError, match="is not a schedule checkpoint"):
        load_json(tmp_path, "schedule", 1)
    with pytest.raises(CheckpointError, match=r"different config \(keys differ: \['seed'\]\)"):
        load_json(tmp_path, "fds", 1, {"seed": 1})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_json(tmp_path / "missing", "fds", 1)


def test_a_pickle_in_place_of_json_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "state.json").write_bytes(pickle.dumps(Boom(marker)))
    with pytest.raises(CheckpointError, match="JSON expected"):
        load_json(tmp_path, "fds", 1)
    assert not marker.exists()


def test_malicious_tensor_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": Boom(marker)}, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_tensors(tmp_path / "t.pt")
    assert not marker.exists()


def test_tensors_round_trip(tmp_path):
    save_tensors(tmp_path / "t.pt", {"w": torch.arange(3.0), "nested": {"b": torch.ones(1)}, "step": 4})
    out = load_tensors(tmp_path / "t.pt")
    assert torch.equal(out["w"], torch.arange(3.0)) and out["step"] == 4 and torch.equal(out["nested"]["b"], torch.ones(1))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b'{"a": 1}')

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # the write fails midway
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left behind
