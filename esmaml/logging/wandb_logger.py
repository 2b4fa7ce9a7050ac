"""Weights & Biases logging that never kills training.

Modes (``config.wandb.mode``):

- ``online``: log to the server (needs ``wandb login`` or ``WANDB_API_KEY``).
- ``offline``: write the run under ``RUN_DIR/wandb/offline-run-*`` for a later ``wandb sync``.
  ``WANDB_MODE=offline`` and ``WANDB_ERROR_REPORTING=false`` are put in the environment before
  wandb starts: without the latter, wandb 0.31 makes a network call (error reporting) at exit.
- ``disabled``: wandb is not imported at all.
- ``auto``: ``WANDB_MODE`` from the environment when it names a mode; else online when an API
  key is configured (no network check), offline otherwise.

Any wandb failure (import, init, a log call, finish) warns once and turns the logger into a
no-op: local logging (metrics.jsonl, checkpoints) goes on.
"""

from __future__ import annotations

import contextlib
import math
import netrc
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from esmaml.config import WandbConfig

MODES: tuple[str, ...] = ("online", "offline", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"


def has_api_key() -> bool:
    """Whether wandb would find credentials without asking: ``WANDB_API_KEY``, an identity
    token file, or a netrc entry for the server (``WANDB_BASE_URL``, default api.wandb.ai).
    Reads local files only: deciding the mode must not touch the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    candidates = [os.environ.get("NETRC"), str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]
    for candidate in candidates:
        if not candidate or not Path(candidate).is_file():
            continue
        try:
            if netrc.netrc(candidate).authenticators(host):
                return True
        except (netrc.NetrcParseError, OSError):
            continue
    return False


def resolve_mode(mode: str) -> str:
    """The concrete mode for ``mode`` (``auto`` resolved; other values returned unchanged)."""
    if mode != "auto":
        return mode
    from_env = os.environ.get("WANDB_MODE", "").strip().lower()
    if from_env == "dryrun":  # wandb's old name for offline
        from_env = "offline"
    if from_env in MODES:
        return from_env
    return "online" if has_api_key() else "offline"


def artifact_name(name: str) -> str:
    """A valid wandb artifact name (alphanumerics, dashes, underscores, dots)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "checkpoint"


class WandbLogger:
    """One wandb run per esmaml run; ``run_id`` is kept in checkpoints (and in the run
    directory) so a resumed esmaml run continues the same wandb run."""

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
        self.failed = False
        self._wandb: Any = None
        self._offline_dir: str | None = None
        if self.mode == "disabled":
            return
        if self.mode == "offline":
            # Forced, not setdefault: an inherited WANDB_ERROR_REPORTING=true would make the
            # process call home at exit, which offline must never do.
            os.environ["WANDB_MODE"] = "offline"
            os.environ["WANDB_ERROR_REPORTING"] = "false"
        else:
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self._wandb = wandb
            # dir= rather than WANDB_DIR: wandb reads the environment once per process.
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
            if self.mode == "offline" and self.run is not None:
                self._offline_dir = str(Path(self.run.dir).parent)
        except Exception as error:
            self._warn("init", error)

    @property
    def active(self) -> bool:
        """Whether calls reach a wandb run."""
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else str(self.run.id)

    @property
    def run_path(self) -> str | None:
        """The local directory of the run's files (``.../wandb/<offline->run-...``)."""
        return None if self.run is None else str(Path(self.run.dir).parent)

    def _warn(self, what: str, error: BaseException) -> None:
        if not self.failed:
            warnings.warn(
                f"wandb {what} failed ({type(error).__name__}: {error}); training goes on with "
                "local logging only (metrics.jsonl, checkpoints)",
                RuntimeWarning,
                stacklevel=3,
            )
        self.failed = True
        run, self.run = self.run, None
        if run is not None and what != "finish":
            # Close the half-working run so wandb's exit hook does not retry it; best effort.
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        """Scalars of one iteration at wandb step ``step`` (the esmaml iteration)."""
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

    def log_histograms(self, values: Mapping[str, Any], step: int) -> None:
        """``name -> 1-D array`` as wandb histograms; non-finite entries are dropped (a
        histogram of NaN fails) and empty arrays skipped."""
        if self.run is None:
            return
        try:
            logged = {}
            for name, array in values.items():
                finite = [float(v) for v in array if math.isfinite(float(v))]
                if finite:
                    logged[name] = self._wandb.Histogram(finite)
            if logged:
                self.run.log(logged, step=step)
        except Exception as error:
            self._warn("histogram", error)

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        self.log_histograms({name: values}, step)

    def log_artifact(self, path: Path, name: str, kind: str = "model") -> None:
        """Log the file at ``path`` as artifact ``name`` (its name made valid for wandb)."""
        if self.run is None:
            return
        try:
            artifact = self._wandb.Artifact(artifact_name(name), type=kind)
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

    def mark_preempting(self) -> None:
        """Tell wandb the run was stopped to be resumed (SIGTERM/Ctrl-C), not crashed."""
        if self.run is None:
            return
        try:
            self.run.mark_preempting()
        except Exception as error:
            self._warn("mark_preempting", error)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; an offline run prints how to sync it."""
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:
            self._warn("finish", error)
        self.run = None
        if self._offline_dir is not None and not self.failed:
            print(
                f"wandb: offline run saved in {self._offline_dir}; upload it with "
                f"`wandb sync {self._offline_dir}`",
                file=sys.stderr,
            )
