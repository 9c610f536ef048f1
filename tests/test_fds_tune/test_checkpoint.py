"""Checkpoint files: one JSON file (tensors inside, exact), atomic, versioned; malicious files refused."""
import json
import os
import pickle

import pytest
import torch

from fds_tune.checkpoint import CheckpointError, atomic_write_bytes, decode_tensors, encode_tensors, load_json, save_json


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


# No tensor file exists any more (tensors travel inside the JSON, as base64 of raw bytes), so
# there is no pickle to refuse: the JSON path above is the only way in.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bfloat16, torch.bool])
def test_tensors_round_trip_exactly_through_json(dtype):
    gen = torch.Generator().manual_seed(0)
    tree = {"w": (torch.randn(3, 4, generator=gen) * 1e3).to(dtype), "nested": [torch.ones(0, dtype=dtype), None], "step": 4}
    out = decode_tensors(json.loads(json.dumps(encode_tensors(tree))))
    assert out["w"].dtype == dtype and out["w"].shape == (3, 4) and torch.equal(out["w"], tree["w"])
    assert out["nested"][0].shape == (0,) and out["nested"][1] is None and out["step"] == 4


def test_an_unknown_tensor_dtype_is_refused():
    with pytest.raises(CheckpointError, match="unknown tensor dtype 'evil'"):
        decode_tensors({"__tensor__": "evil", "shape": [1], "data": ""})


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b'{"a": 1}')

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # the write fails midway
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left behind
