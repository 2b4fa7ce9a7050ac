"""metrics.jsonl: one JSON object per iteration, appended and flushed as it is written.

A flushed line is in the kernel's page cache, so it survives the process being killed (SIGKILL
included); only a line cut mid-write can be torn, and readers skip it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

#: Fields that measure wall-clock time: the only ones a resumed run cannot reproduce exactly.
WALL_CLOCK_FIELDS: tuple[str, ...] = ("time_s", "iteration_time_s")


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: NaN becomes null, +-inf the largest finite double."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsWriter:
    """Appends rows to ``path``; on resume, rows from ``start_iteration`` on are dropped first,
    so recomputed iterations are neither lost nor duplicated."""

    def __init__(self, path: str | Path, start_iteration: int = 0):
        self.path = Path(path)
        if self.path.exists():
            kept = [
                row
                for row in read_metrics(self.path)
                if isinstance(row.get("iteration"), int) and row["iteration"] < start_iteration
            ]
            # Rewrite through a temporary file: a kill here must not lose the kept rows.
            tmp = self.path.with_suffix(".jsonl.tmp")
            try:
                with tmp.open("w") as file:
                    file.write("".join(json.dumps(row) + "\n" for row in kept))
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, self.path)
            except OSError as error:  # e.g. a full disk: the old file stays, no .tmp is left
                tmp.unlink(missing_ok=True)
                raise OSError(error.errno, error.strerror, str(self.path)) from None
        # Unbuffered: a write that fails (full disk) fails in write(), not later in close().
        self._file = self.path.open("ab", buffering=0)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (one ``write`` call, so a kill tears at most this line). A failed
        write raises OSError naming the file."""
        line = json.dumps({key: _clean(value) for key, value in row.items()}) + "\n"
        data = memoryview(line.encode())
        try:
            while data:  # a raw write may be partial (e.g. up to a file-size limit)
                data = data[self._file.write(data) or 0 :]
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(self.path)) from None

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
