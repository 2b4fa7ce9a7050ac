"""One writer per run directory: an exclusive OS lock held for the life of the writer.

``esmaml train`` (fresh or ``--resume``) takes ``RUN_DIR/.esmaml.lock`` with ``flock`` before it
writes anything. The kernel drops the lock when the process ends, however it ends (SIGKILL
included), so a killed run leaves no stale lock and its directory can be resumed at once. The
lock file itself stays; it holds the last writer's pid, host and start time, which a refused
second writer reports. Readers (``esmaml evaluate``, ``esmaml plot``) take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

LOCK_FILE = ".esmaml.lock"


class RunDirLockedError(RuntimeError):
    """Another process is writing the run directory; the message names its pid and host."""


class RunDirLock:
    """An exclusive, non-blocking lock on ``run_dir`` (see the module docstring).

    Acquire with :meth:`acquire` (raises :class:`RunDirLockedError` at once when another writer
    holds it); :meth:`release` or closing the process frees it.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, *, record: bool = True) -> RunDirLock:
        """Take the lock; with ``record``, write this process's pid/host into the lock file
        (a probe that releases at once leaves the last writer's record)."""
        if self._file is not None:
            return self
        # Opened without truncating: the holder's pid/host must stay readable until we own it.
        file = open(self.path, "a+")  # noqa: SIM115 (kept open for the life of the lock)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(self.path))
            file.close()
            raise RunDirLockedError(
                f"run directory {str(self.run_dir)!r} is in use by another esmaml writer "
                f"({holder}); wait for it to finish or stop it (`esmaml evaluate` and "
                "`esmaml plot` may run beside it)"
            ) from None
        except OSError as error:  # e.g. ENOLCK: a file system without locks
            file.close()
            raise RunDirLockedError(
                f"cannot lock run directory {str(self.run_dir)!r}: {error.strerror or error} (its "
                "file system may not support locks; use a local --run-dir)"
            ) from None
        except BaseException:
            file.close()
            raise
        if record:
            file.seek(0)
            file.truncate()
            file.write(json.dumps(_holder_record()) + "\n")
            file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Free the lock (the file stays: unlinking it would race a writer that just opened
        it and lock a file no one else sees)."""
        if self._file is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a writer dropped without release() must not keep the dir
        self.release()


def _holder_record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    if "pid" not in record:
        return "pid unknown: it has not written its lock record yet"
    text = f"pid {record['pid']} on host {record.get('host', '?')}"
    if record.get("since"):
        text += f", since {record['since']}"
    return text


def check_not_locked(run_dir: Path) -> None:
    """:class:`RunDirLockedError` if a live writer holds ``run_dir`` (probed without keeping
    the lock), so a user learns that first rather than that the directory holds a run."""
    if not (run_dir / LOCK_FILE).is_file():
        return
    try:
        RunDirLock(run_dir).acquire(record=False).release()
    except PermissionError:  # cannot even open the lock file: reported when writing
        return


def open_run_dir(run_dir: Path, *, fresh: bool, run_files: tuple[str, ...]) -> RunDirLock:
    """Create ``run_dir`` if needed and lock it for one writer; returns the held lock.

    Raises :class:`esmaml.config.ConfigError` for a path that is a file or not writable, and
    for a ``fresh`` run whose directory holds a run (any of ``run_files``): checked again under
    the lock, since two fresh runs may both have seen an empty directory before.
    """
    from esmaml.config import ConfigError

    shown = str(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {shown!r} is a file, not a directory; choose a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        parent = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
        raise ConfigError(
            f"--run-dir {shown!r} cannot be created: its parent {str(parent)!r} is a file"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"--run-dir {shown!r} cannot be created: {error.strerror or error}"
        ) from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"run directory {shown!r} is not writable; choose a writable --run-dir")
    lock = RunDirLock(run_dir)
    try:
        lock.acquire()
    except PermissionError:
        raise ConfigError(
            f"run directory {shown!r} is not writable; choose a writable --run-dir"
        ) from None
    if fresh and any((run_dir / name).exists() for name in run_files):
        lock.release()
        raise ConfigError(
            f"run directory {shown!r} already holds a run; continue it with "
            f"`esmaml train --resume {run_dir}` or choose another --run-dir"
        )
    return lock


def check_output_file(path: Path, argument: str) -> None:
    """:class:`esmaml.config.ConfigError` naming ``argument`` unless ``path`` can be written as
    a file: checked before the work, so a bad path costs nothing and leaves nothing behind."""
    from esmaml.config import ConfigError

    if path.is_dir():
        raise ConfigError(
            f"{argument} {str(path)!r} is a directory; give a file path (e.g. {path / 'eval.json'})"
        )
    parent = path.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise ConfigError(f"{argument} {str(path)!r}: its directory {str(parent)!r} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{argument} {str(path)!r}: its directory {str(parent)!r} is not writable"
        )
