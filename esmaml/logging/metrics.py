"""metrics.jsonl: one JSON object per iteration, appended and flushed as it is written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsWriter:
    """Appends rows to ``path``; on resume, rows from ``start_iteration`` on are dropped first,
    so recomputed iterations are neither lost nor duplicated."""

    def __init__(self, path: str | Path, start_iteration: int = 0):
        self.path = Path(path)
        if self.path.exists():
            kept = [row for row in read_metrics(self.path) if row["iteration"] < start_iteration]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            os.replace(tmp, self.path)
        self._file = self.path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({key: _clean(value) for key, value in row.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
