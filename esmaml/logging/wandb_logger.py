"""Weights & Biases logging that never kills training.

Modes: ``online``; ``offline`` (no network attempt: WANDB_MODE=offline and
WANDB_ERROR_REPORTING=false are set before wandb is imported); ``disabled``; ``auto`` (online
when an API key is configured, else offline). Any wandb failure warns once and local logging
goes on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esmaml.config import WandbConfig


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbLogger:
    """One wandb run per esmaml run; ``run_id`` is kept in checkpoints so a resume continues it."""

    def __init__(
        self,
        config: WandbConfig,
        run_dir: Path,
        run_config: Mapping[str, Any],
        default_name: str,
        resume_id: str | None = None,
    ):
        self.mode = resolve_mode(config.mode)
        self.run: Any = None
        self._failed = False
        if self.mode == "disabled":
            return
        if self.mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self._wandb = wandb
            self.run = wandb.init(
                project=config.project,
                entity=config.entity,
                group=config.group,
                tags=list(config.tags) or None,
                name=config.name or default_name,
                config=dict(run_config),
                dir=str(run_dir),
                mode=self.mode,
                id=resume_id,
                resume="allow" if resume_id else None,
                reinit="finish_previous",
            )
        except Exception as error:
            self._warn("init", error)

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else str(self.run.id)

    @property
    def run_path(self) -> str | None:
        return None if self.run is None else str(Path(self.run.dir).parent)

    def _warn(self, what: str, error: BaseException) -> None:
        if not self._failed:
            warnings.warn(
                f"wandb {what} failed ({type(error).__name__}: {error}); training goes on with "
                "local logging only",
                RuntimeWarning,
                stacklevel=3,
            )
        self._failed = True
        self.run = None

    def log(self, row: Mapping[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(dict(row), step=step)
        except Exception as error:
            self._warn("log", error)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({name: self._wandb.Table(columns=columns, data=rows)}, step=step)
        except Exception as error:
            self._warn("table", error)

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({name: self._wandb.Histogram(values)}, step=step)
        except Exception as error:
            self._warn("histogram", error)

    def log_artifact(self, path: Path, name: str, kind: str = "model") -> None:
        if self.run is None:
            return
        try:
            artifact = self._wandb.Artifact(name, type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        except Exception as error:
            self._warn("artifact", error)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in values.items():
                self.run.summary[key] = value
        except Exception as error:
            self._warn("summary", error)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:
            self._warn("finish", error)
        self.run = None
