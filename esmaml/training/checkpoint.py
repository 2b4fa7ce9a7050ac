"""Atomic checkpoints: write a temporary file, fsync, rename; keep the previous one.

Layout in a run directory:

- ``checkpoint.pt``: the latest complete checkpoint. It exists at every instant once the first
  checkpoint is written: the previous file is hard-linked to ``checkpoint.prev.pt`` *before* the
  new one is renamed over it, so a kill between the two steps leaves both names valid.
- ``checkpoint.prev.pt``: the one before (``keep_previous``), the fallback when the latest is
  corrupt or truncated (a disk filling up, a copy cut short, a bad sync).

Checkpoints are pickles (``torch.save``): load only run directories you trust.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
#: Keys every esmaml checkpoint holds; a file without them is not one.
REQUIRED_KEYS: tuple[str, ...] = ("iteration", "learner", "generator", "sampler")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


class NoCheckpointError(CheckpointError):
    """The run directory holds no checkpoint at all (a run killed before its first one)."""


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable: a rename is only on disk once its directory is synced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically; returns the path.

    The bytes go to a hidden temporary file that is fsynced and then renamed over
    ``checkpoint.pt`` (a rename is atomic on POSIX), so a reader never sees a half-written
    checkpoint, whenever the writer is killed.
    """
    directory = Path(run_dir)
    path = directory / CHECKPOINT
    tmp = directory / f".{CHECKPOINT}.tmp"
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    if keep_previous and path.exists():
        # Link, not rename: checkpoint.pt must stay valid until the new one replaces it.
        previous_tmp = directory / f".{PREVIOUS}.tmp"
        previous_tmp.unlink(missing_ok=True)
        try:
            os.link(path, previous_tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(path, previous_tmp)
        os.replace(previous_tmp, directory / PREVIOUS)
    os.replace(tmp, path)
    _fsync_directory(directory)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint file; CheckpointError naming it if it is unreadable or foreign."""
    file = Path(path)
    if not file.exists():
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist")
    try:
        # weights_only=False: the state holds numpy/python RNG states, which the safe loader
        # rejects. Checkpoints are the run's own files.
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {str(file)!r} is corrupt or truncated ({type(error).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {str(file)!r} is not an esmaml checkpoint (it holds a "
            f"{type(state).__name__}, not a dict)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(file)!r} is not an esmaml checkpoint (missing {', '.join(missing)})"
        )
    return state


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    """The latest readable checkpoint of ``run_dir`` and its path.

    Falls back to ``checkpoint.prev.pt`` with a RuntimeWarning when ``checkpoint.pt`` is missing
    or unreadable. Raises :class:`NoCheckpointError` when there is no checkpoint at all, and
    :class:`CheckpointError` naming the file(s) when none is readable.
    """
    directory = Path(run_dir)
    path, previous = directory / CHECKPOINT, directory / PREVIOUS
    if not path.exists() and not previous.exists():
        raise NoCheckpointError(
            f"no checkpoint in {str(directory)!r} (looked for {CHECKPOINT} and {PREVIOUS})"
        )
    try:
        return read_checkpoint(path), path
    except CheckpointError as error:
        if not previous.exists():
            raise
        try:
            state = read_checkpoint(previous)
        except CheckpointError as previous_error:
            raise CheckpointError(
                f"no readable checkpoint in {str(directory)!r}: {error}; {previous_error}"
            ) from None
        warnings.warn(
            f"{error}; using the previous checkpoint {str(previous)!r} "
            f"(iteration {state['iteration']}) instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return state, previous
