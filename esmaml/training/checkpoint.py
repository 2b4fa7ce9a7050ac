"""Atomic checkpoints: write to a temporary file, fsync, rename; keep the previous one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep_previous: bool = True) -> Path:
    path = run_dir / CHECKPOINT
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    if keep_previous and path.exists():
        os.replace(path, run_dir / PREVIOUS)
    os.replace(tmp, path)
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({error})"
        ) from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an esmaml checkpoint")
    return state


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The latest readable checkpoint of ``run_dir``; falls back to the previous one (warning)
    when the latest is corrupt. Raises CheckpointError naming the file(s) otherwise."""
    import warnings

    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not path.exists() and not previous.exists():
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} (looked for {CHECKPOINT})")
    try:
        return _read(path), path
    except CheckpointError as error:
        if not previous.exists():
            raise
        warnings.warn(
            f"{error}; resuming from the previous checkpoint {str(previous)!r}",
            RuntimeWarning,
            stacklevel=2,
        )
        return _read(previous), previous
