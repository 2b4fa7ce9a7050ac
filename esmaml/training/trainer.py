"""The meta-training loop: config -> tasks -> adaptation -> meta-step -> logging, one way.

Every random draw comes from one torch.Generator seeded by ``config.seed`` (evaluation uses its
own fixed seed), and its state is checkpointed, so a resumed run recomputes the same iterations.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from omegaconf import OmegaConf

from esmaml.config import ExperimentConfig, load_config, to_dict, to_yaml
from esmaml.logging.console import Progress, print_summary
from esmaml.logging.metrics import MetricsWriter
from esmaml.logging.wandb_logger import WandbLogger
from esmaml.meta.base import Evaluation, evaluate_adaptation
from esmaml.tasks.sampler import TaskSampler
from esmaml.training.builders import build_adaptation, build_family, build_learner
from esmaml.training.checkpoint import load_checkpoint, save_checkpoint

CONFIG_FILE = "config.yaml"
EVAL_SEED_OFFSET = 1_000_000_007


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{config.name}-{stamp}"


class Trainer:
    """Builds every component from ``config`` and runs (or resumes) meta-training."""

    def __init__(
        self, config: ExperimentConfig, run_dir: str | Path | None = None, *, resume: bool = False
    ):
        self.config = config
        self.run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)  # for any third-party code that uses the global RNG
        self.generator = torch.Generator().manual_seed(config.seed)
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
        if resume:
            self._restore()
        else:
            (self.run_dir / CONFIG_FILE).write_text(to_yaml(config))
        self._stop_signal: int | None = None

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None) -> Trainer:
        """Continue the run in ``run_dir`` from its last checkpoint (its own config.yaml)."""
        directory = Path(run_dir)
        config = load_config(directory / CONFIG_FILE, overrides or [])
        return cls(config, directory, resume=True)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict[str, Any]:
        family_state = self.family.state_dict() if hasattr(self.family, "state_dict") else None
        return {
            "iteration": iteration,
            "learner": self.learner.state_dict(),
            "generator": self.generator.get_state(),
            "sampler": self.sampler.state_dict(),
            "family": family_state,
            "elapsed": self.elapsed,
            "totals": dict(self.totals),
            "wandb_id": self.wandb_id,
            "config": OmegaConf.to_container(OmegaConf.structured(self.config)),
        }

    def _restore(self) -> None:
        state, _ = load_checkpoint(self.run_dir)
        self.learner.load_state_dict(state["learner"])
        self.generator.set_state(state["generator"])
        self.sampler.load_state_dict(state["sampler"])
        if state.get("family") is not None and hasattr(self.family, "load_state_dict"):
            self.family.load_state_dict(state["family"])
        self.start_iteration = int(state["iteration"])
        self.elapsed = float(state["elapsed"])
        self.totals = dict(state["totals"])
        self.wandb_id = state.get("wandb_id")

    def checkpoint(self, iteration: int) -> Path:
        return save_checkpoint(
            self.run_dir, self.state_dict(iteration), self.config.checkpoint.keep_previous
        )

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self, num_tasks: int | None = None, num_steps: int | None = None, split: str = "test"
    ) -> Evaluation:
        """Pre/post-adaptation loss on held-out (or fixed train) tasks; does not touch the
        training random stream."""
        config = self.config
        n = num_tasks or config.evaluation.num_tasks
        generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
        if split == "test":
            tasks = self.sampler.evaluation_tasks(n, generator)
        else:
            pool = self.sampler.pool("train")
            tasks = (
                {k: v[:n] for k, v in pool.items()}
                if pool is not None
                else self.family.sample_tasks(n, split="train", generator=generator)
            )
        adaptation = getattr(self.learner, "evaluation_adaptation", None) or self.adaptation
        steps = num_steps if num_steps is not None else config.evaluation.num_steps
        return evaluate_adaptation(
            self.family,
            adaptation,
            self.learner.parameters_flat(),
            tasks,
            seed=config.seed + EVAL_SEED_OFFSET,
            num_steps=steps,
        )

    # -- the loop ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self._stop_signal = signum

    def train(self) -> dict[str, Any]:
        config = self.config
        writer = MetricsWriter(self.run_dir / "metrics.jsonl", self.start_iteration)
        wandb = WandbLogger(
            config.wandb, self.run_dir, to_dict(config), self.run_dir.name, self.wandb_id
        )
        self.wandb_id = wandb.run_id or self.wandb_id
        progress = Progress(config.iterations, self.start_iteration, config.progress, config.name)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        iteration = self.start_iteration
        env_steps_before = float(getattr(self.family, "env_steps", 0))
        last_eval: Evaluation | None = None
        try:
            for iteration in range(self.start_iteration, config.iterations):
                tasks = self.sampler.sample(
                    self.learner.tasks_per_iteration, "train", self.generator
                )
                started = time.perf_counter()
                metrics = self.learner.step(tasks)
                seconds = time.perf_counter() - started
                self.elapsed += seconds
                env_steps = float(getattr(self.family, "env_steps", 0)) - env_steps_before
                env_steps_before += env_steps
                self.totals["queries_total"] += metrics.get("queries", 0.0)
                self.totals["env_steps_total"] += env_steps
                row: dict[str, Any] = {
                    "iteration": iteration,
                    "time_s": self.elapsed,
                    "iteration_time_s": seconds,
                    **metrics,
                    **self.totals,
                }
                if env_steps:
                    row["env_steps"] = env_steps
                last = iteration == config.iterations - 1
                if (iteration + 1) % config.evaluation.every == 0 or last:
                    last_eval = self.evaluate()
                    row.update(last_eval.summary("eval"))
                    row.update(self.evaluate(split="train").summary("train_eval"))
                    wandb.log_table(
                        "eval_tasks",
                        ["task", "pre_adaptation", "post_adaptation"],
                        [
                            [i, float(a), float(b)]
                            for i, (a, b) in enumerate(zip(last_eval.pre, last_eval.post))
                        ],
                        step=iteration,
                    )
                    wandb.log_histogram(
                        "eval_post_adaptation_hist", last_eval.post.numpy(), step=iteration
                    )
                writer.write(row)
                wandb.log(row, step=iteration)
                progress.update(row)
                stopping = self._stop_signal is not None
                if (iteration + 1) % config.checkpoint.every == 0 or last or stopping:
                    self.checkpoint(iteration + 1)
                if stopping:
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            progress.close()
            writer.close()
        if self._stop_signal is not None:
            wandb.finish(exit_code=1)
            raise SystemExit(128 + self._stop_signal)
        summary = self._summary(last_eval)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        wandb.summary(summary)
        if config.wandb.log_checkpoint:
            wandb.log_artifact(
                self.run_dir / "checkpoint.pt", f"{self.run_dir.name}-checkpoint".replace("/", "-")
            )
        wandb.finish()
        return summary

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


def train(
    config: ExperimentConfig, run_dir: str | Path | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """Run meta-training for ``config``; returns the final summary (also in summary.json)."""
    trainer = Trainer(config, run_dir)
    summary = trainer.train()
    if not quiet:
        print_summary(summary, f"{config.name}: {trainer.run_dir}")
    return summary
