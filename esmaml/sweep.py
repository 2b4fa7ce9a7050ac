"""Multi-seed sweeps: one config, seeds x a grid of overrides, aggregated across seeds.

    esmaml sweep CONFIG --seeds 5 [key=v1,v2 ...] [--jobs 2] [--address auto] [--out DIR]

Every trial is an ordinary run directory made by ``esmaml train`` (resumable, wandb-grouped by
the sweep's name), run as a Ray task with one CPU, on the local cores or on a Ray cluster
(``--address``). A trial whose run directory already holds a summary is skipped and one with a
checkpoint is resumed, so rerunning a sweep finishes it. The table reports, per grid point, the
held-out post-adaptation metric of the initial meta-parameters (the trainer's iteration -1 row),
of the last evaluation, and their difference, each as the mean over seeds with the 95%
confidence interval of the mean (Student t with n - 1 degrees of freedom):

    mean +- t_{0.975, n-1} * sd / sqrt(n),   sd the sample standard deviation (ddof 1).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esmaml.config import ConfigError, load_config
from esmaml.logging.metrics import read_metrics


@dataclass(frozen=True)
class Interval:
    """Mean over ``n`` seeds and the bounds of its confidence interval (NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4g} (n={self.n})"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def seed_interval(values: list[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` (one per seed) and its Student-t confidence interval."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("seed_interval needs at least one value")
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"seed_interval got a non-finite value: {values}")
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _split_values(text: str) -> list[str]:
    """``v1,v2`` -> values, keeping commas inside brackets (``[32,32],[]`` -> two lists)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return values


def expand_grid(overrides: list[str]) -> list[tuple[str, ...]]:
    """``["a=1,2", "b=x"]`` -> ``[("a=1", "b=x"), ("a=2", "b=x")]`` (the cartesian product)."""
    axes = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"sweep overrides are key=v1,v2,...; got {item!r}")
        values = _split_values(text)
        if "" in values:
            raise ConfigError(f"sweep override {item!r} has an empty value")
        axes.append([f"{key}={value}" for value in values])
    return list(itertools.product(*axes)) if axes else [()]


@dataclass(frozen=True)
class Trial:
    point: tuple[str, ...]
    seed: int
    run_dir: Path

    @property
    def label(self) -> str:
        return " ".join(self.point) or "(config)"


def plan(config: str, seeds: list[int], overrides: list[str], out: Path) -> list[Trial]:
    """Every (grid point, seed) trial and its run directory ``out/POINT/seed-S``."""
    load_config(config, [o.split(",")[0] for o in overrides])  # fail fast on a bad key
    trials = []
    for point in expand_grid(overrides):
        name = "_".join(p.replace("/", "-") for p in point) or "config"
        trials += [Trial(point, seed, out / name / f"seed-{seed}") for seed in seeds]
    return trials


def _train_trial(config: str, trial: Trial, group: str) -> int:
    """One trial as ``esmaml train`` in its own process (one intra-op thread)."""
    if (trial.run_dir / "summary.json").is_file():
        return 0
    command = [sys.executable, "-m", "esmaml.cli", "train"]
    extra = [*trial.point, f"seed={trial.seed}", f"wandb.group={group}"]
    if (trial.run_dir / "metrics.jsonl").is_file():
        command += ["--resume", str(trial.run_dir)]
    else:
        command += [config, *extra, "--run-dir", str(trial.run_dir)]
    trial.run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (trial.run_dir.parent / f"seed-{trial.seed}.log").open("a") as log:
        return subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def run_trials(
    config: str, trials: list[Trial], *, jobs: int, address: str | None, group: str
) -> list[int]:
    """Run ``trials`` as Ray tasks of one CPU each (``jobs`` local CPUs, or the cluster at
    ``address``); returns their exit codes."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", num_cpus=jobs, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(_train_trial)
        return ray.get([task.remote(config, trial, group) for trial in trials])
    finally:
        if started:
            ray.shutdown()


def metric_key(row: dict[str, Any]) -> str:
    """The post-adaptation metric: the return for RL (higher is better), else the loss."""
    return (
        "eval_return_post_adaptation"
        if "eval_return_post_adaptation" in row
        else "eval_post_adaptation"
    )


def trial_curve(run_dir: Path) -> tuple[str, list[int], list[float]]:
    """(metric, meta-updates, values) of a run's held-out evaluations, initial one first."""
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_post_adaptation" in r]
    if not rows or rows[0].get("iteration") != -1:
        raise ConfigError(
            f"{run_dir}: no evaluation of the initial meta-parameters (iteration -1 row); "
            "the sweep needs evaluation.initial=true"
        )
    key = metric_key(rows[0])
    return key, [int(r.get("updates", r["iteration"] + 1)) for r in rows], [r[key] for r in rows]


@dataclass(frozen=True)
class Row:
    point: str
    metric: str
    seeds: list[int]
    initial: Interval
    last: Interval
    change: Interval


def aggregate(trials: list[Trial]) -> list[Row]:
    """Per grid point: initial, last and (last - initial), each across the seeds."""
    rows = []
    for point, group in itertools.groupby(trials, key=lambda t: t.point):
        members = list(group)
        curves = [trial_curve(t.run_dir) for t in members]
        metric = curves[0][0]
        initial = [c[2][0] for c in curves]
        last = [c[2][-1] for c in curves]
        rows.append(
            Row(
                " ".join(point) or "(config)",
                metric,
                [t.seed for t in members],
                seed_interval(initial),
                seed_interval(last),
                seed_interval([b - a for a, b in zip(initial, last)]),
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    """A markdown table of :func:`aggregate`'s rows."""
    lines = [
        "| point | metric | seeds | initial (iteration 0) | last evaluation | last - initial |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.point} | {row.metric} | {len(row.seeds)} | {row.initial} | {row.last} | "
            f"{row.change} |"
        )
    lines.append("")
    lines.append("mean over seeds [95% confidence interval of the mean, Student t, n-1 dof]")
    return "\n".join(lines)


def _plain(interval: Interval) -> dict[str, float | int | None]:
    """JSON has no NaN: an undefined bound (one seed) is null."""
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in vars(interval).items()
    }


def sweep(
    config: str,
    seeds: list[int],
    overrides: list[str],
    *,
    out: Path,
    jobs: int = 2,
    address: str | None = None,
) -> list[Row]:
    """Run (or finish) the sweep, write ``out/sweep.json`` and ``out/sweep.md``, return rows."""
    trials = plan(config, seeds, overrides, out)
    # Finished trials are skipped here, so a complete sweep starts no Ray cluster at all.
    pending = [t for t in trials if not (t.run_dir / "summary.json").is_file()]
    codes = (
        run_trials(config, pending, jobs=jobs, address=address, group=out.name) if pending else []
    )
    failed = [t for t, code in zip(pending, codes) if code != 0]
    if failed:
        raise ConfigError(
            f"{len(failed)} of {len(trials)} trials failed (first: {failed[0].label} seed "
            f"{failed[0].seed}, log {failed[0].run_dir.parent / f'seed-{failed[0].seed}.log'})"
        )
    rows = aggregate(trials)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(format_table(rows) + "\n")
    record = {
        "config": config,
        "seeds": seeds,
        "overrides": overrides,
        "trials": [
            {"point": list(t.point), "seed": t.seed, "run_dir": str(t.run_dir)} for t in trials
        ],
        "rows": [
            {
                "point": r.point,
                "metric": r.metric,
                "seeds": r.seeds,
                **{name: _plain(getattr(r, name)) for name in ("initial", "last", "change")},
            }
            for r in rows
        ],
    }
    (out / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    return rows
