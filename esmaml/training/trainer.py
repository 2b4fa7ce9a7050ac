"""The meta-training loop: config -> tasks -> adaptation -> meta-step -> logging, one way.

Every random draw comes from one torch.Generator seeded by ``config.seed`` (evaluation uses its
own fixed seed), and its state is checkpointed together with torch's, numpy's and Python's
global RNG states, the optimizer, the family's state (normalisation statistics) and the task
pools. A run resumed from a checkpoint therefore recomputes exactly the iterations an
uninterrupted run would: metrics.jsonl matches row for row except the wall-clock fields
(``time_s``, ``iteration_time_s``).

Files of a run directory: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one row per
iteration), ``checkpoint.pt`` / ``checkpoint.prev.pt``, ``wandb_run.json`` (the wandb run id,
written as soon as the wandb run starts), ``summary.json`` (at the end), ``resumes.jsonl`` (one
line per resume), ``.esmaml.lock`` (one writer at a time), ``wandb/`` (wandb's files), and
``eval.json`` / PNGs once ``esmaml evaluate`` / ``esmaml plot`` ran.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from esmaml.adaptation.base import AdaptationOperator
from esmaml.config import ConfigError, ExperimentConfig, load_config, to_dict, to_yaml
from esmaml.logging.console import Progress, print_summary
from esmaml.logging.metrics import MetricsWriter
from esmaml.logging.wandb_logger import WandbLogger
from esmaml.meta.base import Evaluation, evaluate_adaptation
from esmaml.seeding import substream, substream_generator
from esmaml.tasks.sampler import TaskSampler
from esmaml.training.builders import build_adaptation, build_family, build_learner
from esmaml.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    CheckpointError,
    NoCheckpointError,
    load_checkpoint,
    move_aside,
    save_checkpoint,
)
from esmaml.training.lock import RunDirLock, check_not_locked, check_output_file, open_run_dir
from esmaml.training.resume import check_resume, config_changes, record_resume

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
WANDB_RUN_FILE = "wandb_run.json"
#: ``iteration`` of the metrics row that evaluates the initial meta-parameters (no update yet).
INITIAL_ITERATION = -1


def evaluation_seed(seed: int) -> int:
    """The held-out evaluation's seed: a substream of the run's seed of its own, so its
    adaptation noise and rollout start states are disjoint from every training draw."""
    return substream(seed, "evaluation")


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{config.name}-{stamp}"


def _write_atomic(path: Path, text: str) -> None:
    """A file that is either the old or the new text, never half of it; a failed write (a full
    disk) leaves the old file and no temporary one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as error:  # named by the file the user knows, not the temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    """The global RNG states third-party code may draw from (torch, CUDA, numpy, random)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class Trainer:
    """Builds every component from ``config`` and runs (or resumes) meta-training.

    Args:
        config: the experiment.
        run_dir: where the run's files go (default ``config.run_dir``, else
            ``runs/<name>-<timestamp>``). A fresh run refuses a directory that already holds a
            run (metrics or a checkpoint): resume it instead.
        resume: continue the run in ``run_dir`` from its latest readable checkpoint (see
            :meth:`resume`). With no checkpoint yet (killed before the first one) the run
            restarts from iteration 0 with a warning.
        writer: hold the run directory's lock (:mod:`esmaml.training.lock`) until
            :meth:`train` ends, and record a resume. ``False`` (``esmaml evaluate``) reads the
            run and writes nothing to it.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        writer: bool = True,
    ):
        self.config = config
        self.run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
        if writer:
            check_not_locked(self.run_dir)
        if not resume and any(
            (self.run_dir / name).exists() for name in (METRICS_FILE, CHECKPOINT)
        ):
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} already holds a run; continue it with "
                f"`esmaml train --resume {self.run_dir}` or choose another --run-dir"
            )
        torch.manual_seed(config.seed)  # for any third-party code that uses the global RNGs
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        # Training draws (initial parameters, tasks, noise) and the task pools come from
        # separate named substreams of the seed, so the pools are independent of the init.
        self.generator = substream_generator(config.seed, "training")
        self.family = build_family(config)
        self.sampler = TaskSampler(
            self.family,
            train_pool=config.task.train_pool,
            test_pool=config.task.test_pool,
            seed=config.seed,
        )
        self.adaptation = build_adaptation(config)
        self.learner = build_learner(config, self.family, self.adaptation, self.generator)
        self.start_iteration = 0
        self.elapsed = 0.0
        self.totals = {"queries_total": 0.0, "env_steps_total": 0.0}
        self.wandb_id: str | None = None
        self.checkpoint_path: Path | None = None
        self._stop_signal: int | None = None
        self._resume_changes: dict[str, Any] | None = None  # set by a resume from a checkpoint
        self.writer = writer
        # Only now that every component built: a bad config leaves no run directory behind.
        self._lock: RunDirLock | None = None
        if writer:
            self._lock = open_run_dir(
                self.run_dir, fresh=not resume, run_files=(METRICS_FILE, CHECKPOINT)
            )
        try:
            if resume:
                self.wandb_id = self._read_wandb_id()
                self._restore()
                if writer:
                    self._record_resume()
            else:
                _write_atomic(self.run_dir / CONFIG_FILE, to_yaml(config))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Free the run directory for another writer (:meth:`train` does at its end)."""
        if self._lock is not None:
            self._lock.release()

    @classmethod
    def resume(
        cls, run_dir: str | Path, overrides: list[str] | None = None, *, writer: bool = True
    ) -> Trainer:
        """Continue the run in ``run_dir`` from its last checkpoint, with its own config.yaml
        plus ``overrides`` (e.g. ``iterations=500`` to extend it). Only keys that cannot change
        the numbers may differ from the checkpoint's config (:mod:`esmaml.training.resume`);
        they are saved in config.yaml and recorded in resumes.jsonl."""
        directory = Path(run_dir)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"run directory {str(directory)!r} is a file, not a directory")
        if not directory.is_dir():
            raise CheckpointError(f"run directory {str(directory)!r} does not exist")
        if not (directory / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{str(directory)!r} is not an esmaml run directory (no {CONFIG_FILE})"
            )
        config = load_config(directory / CONFIG_FILE, overrides or [])
        return cls(config, directory, resume=True, writer=writer)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict[str, Any]:
        """Everything a resume needs to recompute iteration ``iteration`` on exactly."""
        return {
            "iteration": iteration,
            "learner": self.learner.state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "sampler": self.sampler.state_dict(),
            "family": self.family.state_dict(),
            "elapsed": self.elapsed,
            "totals": dict(self.totals),
            "wandb_id": self.wandb_id,
            "config": OmegaConf.to_container(OmegaConf.structured(self.config)),
        }

    def _read_wandb_id(self) -> str | None:
        path = self.run_dir / WANDB_RUN_FILE
        try:
            return json.loads(path.read_text()).get("id")
        except (OSError, ValueError, AttributeError):
            return None

    def _restore(self) -> None:
        try:
            state, path = load_checkpoint(self.run_dir)
        except NoCheckpointError:
            warnings.warn(
                f"no checkpoint in {str(self.run_dir)!r} (the run stopped before its first "
                "one); restarting it from iteration 0",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._check_resume_overrides(state, path)
        if self.writer and path.name == PREVIOUS and (self.run_dir / CHECKPOINT).exists():
            # The unreadable latest must not be rotated over this, the last readable one.
            moved = move_aside(self.run_dir / CHECKPOINT)
            warnings.warn(
                f"moved the unreadable {CHECKPOINT} aside to {str(moved)!r}",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            self.learner.load_state_dict(state["learner"])
            self.generator.set_state(state["generator"])
            self.sampler.load_state_dict(state["sampler"])
            if state.get("family") is not None:
                self.family.load_state_dict(state["family"])
            if state.get("rng") is not None:
                set_rng_state(state["rng"])
            self.start_iteration = int(state["iteration"])
            self.elapsed = float(state.get("elapsed", 0.0))
            self.totals = dict(state.get("totals", self.totals))
        except Exception as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this run's config "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            ) from None
        self.wandb_id = state.get("wandb_id") or self.wandb_id
        self.checkpoint_path = path

    def _check_resume_overrides(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a resume whose config changes what defines the experiment, or has fewer
        ``iterations`` than the checkpoint completed (:func:`check_resume`)."""
        stored = state.get("config")
        self._resume_changes = check_resume(
            stored if isinstance(stored, dict) else {},
            OmegaConf.to_container(OmegaConf.structured(self.config)),
            int(state["iteration"]),
            path,
        )

    def _record_resume(self) -> None:
        """Append this resume to resumes.jsonl and save the config it runs with."""
        changes = self._resume_changes
        if changes is None:  # no checkpoint: every row is recomputed, compare with config.yaml
            try:
                before = load_config(self.run_dir / CONFIG_FILE)
                changes = config_changes(to_dict(before), to_dict(self.config))
            except (ConfigError, OSError):
                changes = {}
        record_resume(self.run_dir, self.start_iteration, self.checkpoint_path, changes)
        if changes:
            _write_atomic(self.run_dir / CONFIG_FILE, to_yaml(self.config))

    def checkpoint(self, iteration: int) -> Path:
        """Save the state after ``iteration`` completed iterations (atomic)."""
        # checkpoint.pt is this trainer's own (or was read, or moved aside, at the resume).
        self.checkpoint_path = save_checkpoint(
            self.run_dir,
            self.state_dict(iteration),
            self.config.checkpoint.keep_previous,
            verify_current=False,
        )
        return self.checkpoint_path

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def evaluation_adaptation(self) -> AdaptationOperator:
        """The operator evaluations adapt with: the learner's own when it has one
        (learn2learn MAML's inner loop), else the configured one."""
        return self.learner.adaptation

    def evaluate(
        self, num_tasks: int | None = None, num_steps: int | None = None, split: str = "test"
    ) -> Evaluation:
        """Pre/post-adaptation loss on held-out (or fixed train) tasks; does not touch the
        training random stream, so evaluating never changes what training computes."""
        config = self.config
        if split not in ("test", "train"):
            raise ValueError(f"split={split!r} is unknown; valid: test, train")
        n = num_tasks or config.evaluation.num_tasks
        seed = evaluation_seed(config.seed)
        if split == "test":
            tasks = self.sampler.evaluation_tasks(
                n, substream_generator(config.seed, "evaluation", "test_tasks")
            )
        else:
            pool = self.sampler.pool("train")
            # Fresh train tasks (no pool) from their own stream: with the test split's stream
            # a run without pools would evaluate both splits on the very same tasks.
            generator = substream_generator(config.seed, "evaluation", "train_tasks")
            tasks = (
                {k: v[:n] for k, v in pool.items()}
                if pool is not None
                else self.family.sample_tasks(n, split="train", generator=generator)
            )
        adaptation = self.evaluation_adaptation
        steps = num_steps if num_steps is not None else config.evaluation.num_steps
        # Both splits adapt with the same noise (common random numbers for the train/test gap).
        return evaluate_adaptation(
            self.family,
            adaptation,
            self.learner.parameters_flat(),
            tasks,
            seed=seed,
            num_steps=steps,
        )

    # -- the loop ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is not None:
            raise KeyboardInterrupt  # a second signal: stop now, without a checkpoint
        # Finish the current iteration, checkpoint, then exit 128 + signum.
        self._stop_signal = signum

    def _install_signal_handlers(self) -> dict[int, Any]:
        # Python only lets the main thread set handlers; elsewhere signals keep their defaults.
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _start_wandb(self) -> WandbLogger:
        config = self.config
        wandb = WandbLogger(
            config.wandb, self.run_dir, to_dict(config), self.run_dir.name, self.wandb_id
        )
        if wandb.run_id is not None:
            self.wandb_id = wandb.run_id
            # Written now, not only in checkpoints: a run killed before its first checkpoint
            # still resumes into the same wandb run.
            _write_atomic(
                self.run_dir / WANDB_RUN_FILE,
                json.dumps({"id": wandb.run_id, "mode": wandb.mode, "dir": wandb.run_path}) + "\n",
            )
        return wandb

    def _log_evaluation(self, wandb: WandbLogger, evaluation: Evaluation, iteration: int) -> None:
        """Per-task table and return/loss histograms of one evaluation."""
        wandb.log_table(
            "eval_tasks",
            ["task", "pre_adaptation", "post_adaptation"],
            [
                [i, float(a), float(b)]
                for i, (a, b) in enumerate(zip(evaluation.pre.tolist(), evaluation.post.tolist()))
            ],
            step=iteration,
        )
        wandb.log_histograms(
            {
                "eval_pre_adaptation_hist": evaluation.pre.tolist(),
                "eval_post_adaptation_hist": evaluation.post.tolist(),
            },
            step=iteration,
        )

    def _initial_row(self) -> tuple[dict[str, Any], Evaluation]:
        """The metrics row of the initial meta-parameters: adaptation from initialisation,
        before any meta-update (iteration -1, updates 0), the baseline every curve starts at."""
        row: dict[str, Any] = {"iteration": INITIAL_ITERATION, "updates": 0, "time_s": 0.0}
        evaluation = self.evaluate()
        row.update(evaluation.summary("eval"))
        row.update(self.evaluate(split="train").summary("train_eval"))
        row.update(self.family.training_metrics())
        row.update(queries_total=0.0, env_steps_total=0.0)
        return row, evaluation

    def _perturbed_values(self) -> list[float] | None:
        """The objective of every perturbed member of the last meta-step, when the learner
        exposes them (ES-MAML's zero-order statistics)."""
        values = self.learner.perturbed_values()
        return None if values is None else values.detach().flatten().tolist()

    def train(self) -> dict[str, Any]:
        """:meth:`_train`, then the run directory's lock is released (however it ended)."""
        try:
            return self._train()
        finally:
            self.release()

    def _train(self) -> dict[str, Any]:
        """Run from ``start_iteration`` to ``config.iterations``; returns the summary.

        Checkpoints every ``checkpoint.every`` iterations and at the end; on SIGINT/SIGTERM the
        current iteration finishes, a checkpoint is written and ``SystemExit(128 + signal)`` is
        raised (130 for Ctrl-C, 143 for SIGTERM), unless that was the last iteration: then the
        run ends normally. A second signal stops at once.
        """
        config = self.config
        fresh = self.start_iteration == 0
        # A fresh start (re)writes every row, the initial evaluation's (iteration -1) included.
        writer = MetricsWriter(
            self.run_dir / METRICS_FILE, INITIAL_ITERATION if fresh else self.start_iteration
        )
        previous = self._install_signal_handlers()
        wandb: WandbLogger | None = None
        completed = self.start_iteration
        saved = self.start_iteration if self.checkpoint_path is not None else None
        last_eval: Evaluation | None = None
        progress = Progress(config.iterations, self.start_iteration, config.progress, config.name)
        env_steps_before = float(self.family.env_steps)
        try:
            wandb = self._start_wandb()
            if fresh and config.evaluation.initial:
                initial, evaluation = self._initial_row()
                writer.write(initial)
                wandb.log(initial, step=0)
                self._log_evaluation(wandb, evaluation, 0)
                env_steps_before = float(self.family.env_steps)
            for iteration in range(self.start_iteration, config.iterations):
                if self._stop_signal is not None:
                    break
                tasks = self.sampler.sample(
                    self.learner.tasks_per_iteration, "train", self.generator
                )
                started = time.perf_counter()
                metrics = self.learner.step(tasks)
                seconds = time.perf_counter() - started
                self.elapsed += seconds
                env_steps = float(self.family.env_steps) - env_steps_before
                env_steps_before += env_steps
                self.totals["queries_total"] += metrics.get("queries", 0.0)
                self.totals["env_steps_total"] += env_steps
                row: dict[str, Any] = {
                    "iteration": iteration,
                    "updates": iteration + 1,
                    "time_s": self.elapsed,
                    "iteration_time_s": seconds,
                    **metrics,
                    **self.family.training_metrics(),
                    **self.totals,
                }
                if env_steps:
                    row["env_steps"] = env_steps
                last = iteration == config.iterations - 1
                perturbed = self._perturbed_values()
                if perturbed is not None:
                    wandb.log_histograms(
                        {"perturbed_objective_hist": perturbed}, step=iteration + 1
                    )
                if (iteration + 1) % config.evaluation.every == 0 or last:
                    last_eval = self.evaluate()
                    row.update(last_eval.summary("eval"))
                    row.update(self.evaluate(split="train").summary("train_eval"))
                    self._log_evaluation(wandb, last_eval, iteration + 1)
                    # Evaluation rollouts are not training env steps.
                    env_steps_before = float(self.family.env_steps)
                writer.write(row)
                wandb.log(row, step=iteration + 1)  # wandb's step: meta-updates done
                progress.update(row)
                completed = iteration + 1
                if completed % config.checkpoint.every == 0 or last:
                    self.checkpoint(completed)
                    saved = completed
            if self._stop_signal is not None and saved != completed:
                self.checkpoint(completed)  # the exit checkpoint of Ctrl-C / SIGTERM
        except BaseException:
            # Training failed (or a second signal): no checkpoint of a half-done iteration; the
            # last periodic one stands. Close the wandb run as failed.
            if wandb is not None:
                wandb.finish(exit_code=1)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            progress.close()
            writer.close()
            self.learner.close()  # e.g. ES-MAML's Ray workers
            self.family.close()
        # A signal during the last iteration stopped nothing: the run is complete, so it ends
        # as one (summary, exit 0) rather than as a preempted run that has nothing to resume.
        if self._stop_signal is not None and completed < config.iterations:
            wandb.mark_preempting()
            wandb.finish(exit_code=128 + self._stop_signal)
            print(self._stopped_message(completed), file=sys.stderr, flush=True)
            raise SystemExit(128 + self._stop_signal)
        summary = self._summary(last_eval)
        _write_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        wandb.summary(summary)
        if config.wandb.log_checkpoint and (self.run_dir / CHECKPOINT).exists():
            wandb.log_artifact(self.run_dir / CHECKPOINT, f"{self.run_dir.name}-checkpoint")
        wandb.finish()
        return summary

    def _stopped_message(self, completed: int) -> str:
        """What a stopped run prints: why, where its checkpoint is, how to continue it."""
        assert self._stop_signal is not None
        name = signal.Signals(self._stop_signal).name
        where = f"checkpoint {self.checkpoint_path}" if self.checkpoint_path else "no checkpoint"
        return (
            f"esmaml train: stopped by {name} after {completed}/{self.config.iterations} "
            f"iterations ({where})\nresume with: esmaml train --resume "
            f"{shlex.quote(str(self.run_dir))}"
        )

    def _summary(self, evaluation: Evaluation | None) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": self.config.name,
            "run_dir": str(self.run_dir),
            "iterations": self.config.iterations,
            "time_s": self.elapsed,
            **self.totals,
        }
        if evaluation is None:
            evaluation = self.evaluate()
        summary.update(evaluation.summary("eval"))
        return summary


EVAL_FILE = "eval.json"


def evaluate_run(
    run_dir: str | Path,
    *,
    num_tasks: int | None = None,
    steps: list[int] | None = None,
    split: str = "test",
    command: str | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the latest checkpoint of ``run_dir`` after each number of adaptation ``steps``
    (default: the configured number) on ``num_tasks`` held-out tasks (default
    ``evaluation.num_tasks``); writes ``out`` (default ``RUN_DIR/eval.json``) and returns it.

    Every point of the curve uses the same tasks and the same adaptation noise, so the curve
    differs only by the number of steps. The run's files are not otherwise touched.
    """
    directory = Path(run_dir)
    if directory.is_dir() and not any(
        (directory / name).exists() for name in (CHECKPOINT, "checkpoint.prev.pt")
    ):
        raise NoCheckpointError(
            f"no checkpoint in {str(directory)!r}: nothing to evaluate (train it first, or wait "
            "for its first checkpoint)"
        )
    for value in steps or []:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"adaptation steps must be ints >= 0, got {value!r}")
    if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
        raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
    trainer = Trainer.resume(directory, writer=False)
    target = Path(out) if out is not None else directory / EVAL_FILE
    check_output_file(target, "--out" if out is not None else "RUN_DIR/eval.json")
    config = trainer.config
    default_steps = config.evaluation.num_steps
    if default_steps is None:
        default_steps = trainer.evaluation_adaptation.num_steps
    curve = []
    used_tasks = 0
    for count in steps or [default_steps]:
        evaluation = trainer.evaluate(num_tasks, count, split=split)
        used_tasks = int(evaluation.pre.shape[0])
        summary = evaluation.summary("eval")
        point: dict[str, Any] = {"steps": count}
        point.update({key.removeprefix("eval_"): value for key, value in summary.items()})
        point["per_task"] = {"pre": evaluation.pre.tolist(), "post": evaluation.post.tolist()}
        curve.append(point)
    result = {
        "run_dir": str(directory),
        "checkpoint": str(trainer.checkpoint_path),
        "iteration": trainer.start_iteration,
        "split": split,
        "num_tasks": used_tasks,
        "seed": evaluation_seed(config.seed),
        "command": command,
        "curve": curve,
    }
    _write_atomic(target, json.dumps(result, indent=2) + "\n")
    return result


def train(
    config: ExperimentConfig, run_dir: str | Path | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """Run meta-training for ``config``; returns the final summary (also in summary.json)."""
    trainer = Trainer(config, run_dir)
    summary = trainer.train()
    if not quiet:
        print_summary(summary, f"{config.name}: {trainer.run_dir}")
    return summary
