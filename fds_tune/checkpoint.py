"""Safe, atomic checkpoint files.

Checkpoints are one plain JSON file; tensors travel inside it as base64 of
their raw bytes (:func:`encode_tensors`): loading one can never run code.  Every file is written to a temporary name and renamed into
place, so a crash never leaves a half-written checkpoint.  Each checkpoint
carries a format version and the config it belongs to; a mismatch is refused
with a clear message.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write_bytes", "save_json", "load_json", "saved_config", "encode_tensors", "decode_tensors", "CheckpointError", "FORMAT_VERSION"]

STATE_FILE = "state.json"
FORMAT_VERSION = 2  # of every run's checkpoint (2: one JSON file, tensors inside as base64)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: wrong kind, version or config, or unreadable."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(directory: str | os.PathLike, kind: str, version: int, config: Mapping, state: Mapping) -> None:
    """Write ``{kind, version, config, state}`` to ``directory/state.json`` atomically."""
    payload = {"kind": kind, "version": version, "config": config, "state": state}
    atomic_write_bytes(Path(directory) / STATE_FILE, json.dumps(payload, allow_nan=True).encode())


def load_json(directory: str | os.PathLike, kind: str, version: int, config: Mapping | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_json`, refusing a wrong kind, version or config."""
    path = Path(directory) / STATE_FILE
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint: {path} is not a valid {kind} checkpoint (JSON expected): {err}") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise CheckpointError(f"checkpoint: {path} is not a {kind} checkpoint (found kind {payload.get('kind') if isinstance(payload, dict) else None!r})")
    if payload.get("version") != version:
        raise CheckpointError(
            f"checkpoint: {path} has format version {payload.get('version')!r}; this fds-tune reads version {version} only"
        )
    if config is not None and payload.get("config") != json.loads(json.dumps(config, allow_nan=True)):
        diff = sorted(k for k in set(config) | set(payload.get("config", {})) if payload["config"].get(k) != json.loads(json.dumps({k: config.get(k)}, allow_nan=True))[k])
        raise CheckpointError(f"checkpoint: {path} was written for a different config (keys differ: {diff})")
    return payload["state"]


def saved_config(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The config a checkpoint in ``directory`` was written for; None when there is no readable one
    (:func:`load_json` then says why)."""
    try:
        payload = json.loads((Path(directory) / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    config = payload.get("config") if isinstance(payload, dict) else None
    return config if isinstance(config, dict) else None


def encode_tensors(tree: Any) -> Any:
    """Tensors inside dicts/lists/tuples as JSON-safe ``{"__tensor__": dtype, "shape": [...], "data": base64}``.

    Exact (the raw bytes), compact (4/3 of the raw size) and safe: decoding builds
    tensors from bytes and never runs code.
    """
    if isinstance(tree, torch.Tensor):
        t = tree.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"__tensor__": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": base64.b64encode(raw).decode()}
    if isinstance(tree, Mapping):
        return {k: encode_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [encode_tensors(v) for v in tree]
    return tree


def decode_tensors(tree: Any, device: torch.device | str | None = None) -> Any:
    """Inverse of :func:`encode_tensors` (lists stay lists), tensors moved to ``device``."""
    if isinstance(tree, Mapping) and "__tensor__" in tree:
        dtype = getattr(torch, str(tree["__tensor__"]), None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"checkpoint: unknown tensor dtype {tree['__tensor__']!r}")
        raw = bytearray(base64.b64decode(tree["data"]))
        flat = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)
        return flat.reshape(tree["shape"]).to(device)
    if isinstance(tree, Mapping):
        return {k: decode_tensors(v, device) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode_tensors(v, device) for v in tree]
    return tree
