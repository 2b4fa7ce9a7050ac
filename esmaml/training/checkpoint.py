"""Atomic checkpoints: write a temporary file, fsync, rename; keep the previous one.

Layout in a run directory:

- ``checkpoint.pt``: the latest complete checkpoint. It exists at every instant once the first
  checkpoint is written: the previous file is hard-linked to ``checkpoint.prev.pt`` *before* the
  new one is renamed over it, so a kill between the two steps leaves both names valid.
- ``checkpoint.prev.pt``: the one before (``keep_previous``), the fallback when the latest is
  corrupt or truncated (a disk filling up, a copy cut short, a bad sync). Rotation never
  replaces it with an unreadable file: a corrupt ``checkpoint.pt`` found by a resume is moved
  aside to ``checkpoint.pt.corrupt`` (reported), so the last readable checkpoint survives.

Loading never runs code. A checkpoint holds tensors and plain Python values only (dicts, lists,
tuples, str, int, float, bool, None); numpy arrays (numpy's RNG state) are stored as tensors and
rebuilt on load. Files are read with ``torch.load(..., weights_only=True)``: a file that needs
anything else to unpickle (a crafted payload) is refused with :class:`UnsafeCheckpointError`,
never retried unsafely. Checkpoints of older esmaml versions, which pickled numpy's RNG state as a
uint32 array, still load: that array type alone is allow-listed.

A failed write (full disk, file-size limit) raises :class:`CheckpointWriteError` naming the file;
the temporary file is removed and the previous checkpoint is untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
#: Keys every esmaml checkpoint holds; a file without them is not one.
REQUIRED_KEYS: tuple[str, ...] = ("iteration", "learner", "generator", "sampler")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


class NoCheckpointError(CheckpointError):
    """The run directory holds no checkpoint at all (a run killed before its first one)."""


class UnsafeCheckpointError(CheckpointError):
    """A file that needs more than tensors and plain values to unpickle: refused, never loaded
    unsafely, and never skipped silently in favour of the previous checkpoint."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (e.g. a full disk); the previous checkpoint is intact."""


#: What checkpoints of esmaml before safe loading need beyond plain values: numpy's RNG key
#: array (uint32). numpy rebuilds such an array from raw bytes; object arrays, whose items
#: would be arbitrary pickles, stay refused (their dtype is not listed).
_LEGACY_NUMPY: list[Any] = [
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # numpy 1 files
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]

#: The tag of a numpy array stored as a tensor (numpy's RNG state is one).
_NDARRAY = "__esmaml_ndarray__"
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def encode_state(value: Any, where: str = "state") -> Any:
    """``value`` with numpy arrays and scalars turned into tensors and Python numbers, so that
    ``torch.load(weights_only=True)`` reads it back; TypeError naming ``where`` for anything
    else that is not a tensor or a plain value (it could only be read back unsafely)."""
    if isinstance(value, (torch.Tensor, *_PLAIN)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where} is a numpy array of dtype {value.dtype}; not storable safely")
        wide = np.int64 if value.dtype.kind in "biu" else np.float64
        return {_NDARRAY: torch.from_numpy(value.astype(wide)), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dict, OrderedDict)):
        encoded = {key: encode_state(item, f"{where}[{key!r}]") for key, item in value.items()}
        return OrderedDict(encoded) if isinstance(value, OrderedDict) else encoded
    if isinstance(value, (list, tuple)):
        items = [encode_state(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"{where} holds a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds "
        "tensors and plain values only (dict, list, tuple, str, int, float, bool, None)"
    )


def decode_state(value: Any) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(value, dict):
        if _NDARRAY in value and set(value) == {_NDARRAY, "dtype"}:
            return value[_NDARRAY].numpy().astype(np.dtype(value["dtype"]))
        decoded = {key: decode_state(item) for key, item in value.items()}
        return OrderedDict(decoded) if isinstance(value, OrderedDict) else decoded
    if isinstance(value, list):
        return [decode_state(item) for item in value]
    if isinstance(value, tuple):
        return tuple(decode_state(item) for item in value)
    return value


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


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # the error being reported matters more
        path.unlink(missing_ok=True)


def _write_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def is_readable(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint :func:`read_checkpoint` accepts."""
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def move_aside(path: Path) -> Path:
    """Rename a corrupt checkpoint to ``<name>.corrupt`` (``.corrupt-2``, ... if taken), so it
    is kept for inspection but never rotated over the last readable one; returns the new path."""
    target = path.with_name(f"{path.name}.corrupt")
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.corrupt-{count}")
    os.replace(path, target)
    return target


def save_checkpoint(
    run_dir: str | Path,
    state: dict[str, Any],
    keep_previous: bool = True,
    *,
    verify_current: bool = True,
) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically; returns the path.

    The bytes go to a hidden temporary file that is fsynced and then renamed over
    ``checkpoint.pt`` (a rename is atomic on POSIX), so a reader never sees a half-written
    checkpoint, whenever the writer is killed. With ``keep_previous`` the current
    ``checkpoint.pt`` becomes ``checkpoint.prev.pt`` first, but only if it is readable (checked
    unless ``verify_current=False``, for a caller that wrote or read it itself); an unreadable
    one is moved aside (:func:`move_aside`) with a RuntimeWarning and the previous one is kept.
    A failed write raises :class:`CheckpointWriteError` and leaves no temporary file.
    """
    directory = Path(run_dir)
    path = directory / CHECKPOINT
    tmp = directory / f".{CHECKPOINT}.tmp"
    buffer = io.BytesIO()
    torch.save(encode_state(state), buffer)  # in memory: a write error is then a plain OSError
    try:
        with tmp.open("wb") as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
    except BaseException as error:
        _remove(tmp)
        if isinstance(error, OSError):
            raise CheckpointWriteError(
                f"cannot write checkpoint {str(path)!r}: {_write_reason(error)} (the previous "
                "checkpoint is intact)"
            ) from None
        raise
    try:
        if keep_previous and path.exists():
            if verify_current and not is_readable(path):
                moved = move_aside(path)
                warnings.warn(
                    f"checkpoint {str(path)!r} is unreadable; moved it aside to "
                    f"{str(moved)!r} and kept {PREVIOUS} as the previous checkpoint",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                # Link, not rename: checkpoint.pt must stay valid until the new one replaces it.
                previous_tmp = directory / f".{PREVIOUS}.tmp"
                previous_tmp.unlink(missing_ok=True)
                try:
                    try:
                        os.link(path, previous_tmp)
                    except OSError:  # file systems without hard links
                        shutil.copyfile(path, previous_tmp)
                    os.replace(previous_tmp, directory / PREVIOUS)
                except BaseException:
                    _remove(previous_tmp)
                    raise
        os.replace(tmp, path)
    except OSError as error:
        _remove(tmp)
        raise CheckpointWriteError(
            f"cannot write checkpoint {str(path)!r}: {_write_reason(error)} (the previous "
            "checkpoint is intact)"
        ) from None
    except BaseException:
        _remove(tmp)
        raise
    _fsync_directory(directory)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint file; CheckpointError naming it if it is unreadable or foreign."""
    file = Path(path)
    if not file.exists():
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist")
    if file.is_dir():
        raise CheckpointError(f"checkpoint {str(file)!r} is a directory, not a checkpoint file")
    try:
        # weights_only=True: unpickling anything but tensors and plain values could run code.
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported operand" in text or "invalid load key" in text:  # garbage bytes
            raise CheckpointError(
                f"checkpoint {str(file)!r} is corrupt or truncated (UnpicklingError: "
                f"{_unpickling_reason(error)})"
            ) from None
        blocked = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", text)
        what = next((g for g in blocked.groups() if g), "object") if blocked else "object"
        raise UnsafeCheckpointError(
            f"checkpoint {str(file)!r} holds a pickled {what}, not only tensors and plain "
            "values: refused, since loading it could run code (a crafted or foreign file). "
            "Nothing of it was executed; delete or replace it"
        ) from None
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
    return decode_state(state)


def _unpickling_reason(error: BaseException) -> str:
    """The one informative line of torch's long weights-only error."""
    for line in str(error).splitlines():
        if line.strip().startswith(("Unsupported", "Trying")):
            return line.strip()
    return type(error).__name__


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
    except UnsafeCheckpointError:
        raise  # a crafted file is reported, not skipped over
    except CheckpointError as error:
        if not previous.exists():
            raise
        try:
            state = read_checkpoint(previous)
        except UnsafeCheckpointError:
            raise
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
