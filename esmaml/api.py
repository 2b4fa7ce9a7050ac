"""The Python API for notebooks and scripts: :func:`train` (and :func:`esmaml.register`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def train(
    config: str | Path | Mapping[str, Any],
    /,
    *,
    run_dir: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Meta-train as ``esmaml train`` does; returns the summary (also in summary.json).

    ``config`` is a YAML file or a dict in the same schema. ``overrides`` are config keys, with
    ``__`` for the dots of nested ones (``train("sine.yaml", iterations=5,
    meta__params__sigma=0.05)``; ``**{"meta.params.sigma": 0.05}`` works too). Components
    registered with :func:`esmaml.register` in this process may be named by the config.
    """
    from esmaml.config import load_config
    from esmaml.training.trainer import Trainer

    items = [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in overrides.items()]
    experiment = load_config(config, items)
    return Trainer(experiment, run_dir).train()
