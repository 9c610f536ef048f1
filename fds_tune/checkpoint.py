"""Safe, atomic checkpoint files.

Checkpoints are plain JSON (and, where tensors are needed, ``torch.save`` of
tensors only, read back with ``torch.load(weights_only=True)``): loading one can
never run code.  Every file is written to a temporary name and renamed into
place, so a crash never leaves a half-written checkpoint.  Each checkpoint
carries a format version and the config it belongs to; a mismatch is refused
with a clear message.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write_bytes", "save_json", "load_json", "save_tensors", "load_tensors", "CheckpointError"]

STATE_FILE = "state.json"


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


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """``torch.save`` of tensors (or nested dicts/lists of tensors and numbers), atomically."""
    import io

    buf = io.BytesIO()
    torch.save(dict(tensors), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_tensors(path: str | os.PathLike) -> dict[str, Any]:
    """Load with ``weights_only=True``: a file that would run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends
        raise CheckpointError(f"checkpoint: refused to load {path}: not a tensors-only file ({type(err).__name__}: {err})") from None
