"""What a resume may change, and the record of every resume (``RUN_DIR/resumes.jsonl``).

A run directory's ``config.yaml`` must describe every row of its ``metrics.jsonl``. A resume
therefore compares its config (``config.yaml`` plus the command line's overrides) with the
config stored in the checkpoint it continues from:

- keys that cannot change the numbers (:data:`MUTABLE_KEYS`: logging, progress, evaluation
  cadence, checkpoint cadence, where the population is evaluated, a larger ``iterations``) may
  change; each change is recorded;
- any other change (seed, task, adaptation, meta-learner, optimizer, evaluation tasks, device)
  is refused with one line listing the changed keys.

Every resume appends one JSON line to ``resumes.jsonl``: the iteration it continued from, the
time, the checkpoint, and each changed key with its old and new value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from esmaml.config import ConfigError, ExperimentConfig

RESUME_LOG = "resumes.jsonl"

#: Dotted keys (or prefixes, ending in ".") a resume may change: none of them changes what a
#: row computes. ``iterations`` may only grow (checked separately).
MUTABLE_KEYS: tuple[str, ...] = (
    "name",
    "iterations",
    "progress",
    "run_dir",
    "evaluation.every",
    "checkpoint.",
    "wandb.",
    # The Ray backend gives the local backend's numbers (same seeds, same meta-gradient);
    # resuming on another cluster needs another address or worker count.
    "evaluator.",
)

_UNSET = "<unset>"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_mutable(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MUTABLE_KEYS)


def config_changes(
    stored: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, tuple]:
    """Every dotted key whose value differs, as ``key: (stored, current)``; a key missing on
    one side reads ``<unset>``. A key the stored config lacks because it was written by an
    older esmaml (a schema key added since) counts as its schema default from ``defaults``, so
    such a run still resumes when the new key keeps its default."""
    old, new = flatten(stored), flatten(current)
    known = flatten(defaults) if defaults is not None else {}
    changes: dict[str, tuple] = {}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, _UNSET), new.get(key, _UNSET)
        if before == _UNSET and key in known:
            before = known[key]
        if not _same(before, after):
            changes[key] = (before, after)
    return changes


def schema_defaults() -> dict[str, Any]:
    """The config every key defaults to (what an older checkpoint's missing keys meant)."""
    return OmegaConf.to_container(OmegaConf.structured(ExperimentConfig))  # type: ignore[return-value]


def _same(a: Any, b: Any) -> bool:
    # YAML round trips may turn 1.0 into 1 and tuples into lists: compare as JSON values.
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return not isinstance(b, bool) and float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    return value if value == _UNSET else json.dumps(value)


def check_resume(
    stored: Mapping[str, Any], current: Mapping[str, Any], iteration: int, checkpoint: Path
) -> dict[str, tuple]:
    """The allowed changes of a resume from ``checkpoint`` (after ``iteration`` iterations);
    :class:`ConfigError` listing every key that would change the experiment."""
    changes = config_changes(stored, current, schema_defaults())
    new_iterations = current.get("iterations")
    if isinstance(new_iterations, int) and new_iterations < iteration:
        raise ConfigError(
            f"cannot resume with iterations={new_iterations}: checkpoint {str(checkpoint)!r} "
            f"has already completed {iteration}; give iterations >= {iteration} (more to "
            "extend the run)"
        )
    refused = {key: change for key, change in changes.items() if not is_mutable(key)}
    if refused:
        asked = ", ".join(f"{key}={_show(new)}" for key, (_, new) in refused.items())
        kept = ", ".join(f"{key}={_show(old)}" for key, (old, _) in refused.items())
        allowed = ", ".join(m + "*" if m.endswith(".") else m for m in MUTABLE_KEYS)
        raise ConfigError(
            f"cannot resume with {asked}: checkpoint {str(checkpoint)!r} holds {kept}; changed "
            f"experiment keys: {', '.join(refused)} (a resume may change only {allowed}); "
            "resume with the checkpoint's values or start a new run"
        )
    return changes


def record_resume(
    run_dir: Path, iteration: int, checkpoint: Path | None, changes: Mapping[str, tuple]
) -> dict[str, Any]:
    """Append one line to ``run_dir/resumes.jsonl`` (fsynced: it is the run's record)."""
    entry = {
        "iteration": iteration,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": None if checkpoint is None else checkpoint.name,
        "changed": {key: {"from": old, "to": new} for key, (old, new) in changes.items()},
    }
    with (run_dir / RESUME_LOG).open("a") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return entry


def read_resumes(run_dir: str | Path) -> list[dict[str, Any]]:
    """The resume log of a run (empty for a run never resumed); torn lines are skipped."""
    path = Path(run_dir) / RESUME_LOG
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
