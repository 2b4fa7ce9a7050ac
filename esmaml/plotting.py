"""Learning curves of one or several runs, from their metrics.jsonl (and eval.json).

Figures (PNG, matplotlib's Agg canvas: no display, no pyplot global state):

- ``eval_vs_iteration.png``: held-out and train-task loss before (dashed) and after (solid)
  adaptation against the iteration;
- ``eval_vs_time.png``: the same against the cumulative meta-training wall clock (``time_s``);
- ``meta_objective.png``: the meta-objective of every iteration;
- ``adaptation_steps.png``: post-adaptation loss against the number of adaptation steps, for the
  runs that have an ``eval.json`` from ``esmaml evaluate --steps ...``;
- ``eval_band.png`` (``esmaml plot --band``): runs grouped by their config without the seed; per
  group the mean over seeds of the held-out post-adaptation return (RL) or loss against the
  meta-updates, with a shaded 95% Student-t confidence band across seeds.

Each PNG gets a sidecar ``.txt`` naming the runs (paths), the command that made it and what is
plotted, and its title names the runs. Several runs share a figure, one colour per run.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from esmaml.logging.metrics import read_metrics

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
#: Runs named in a title before it says "+ N more" (the sidecar lists them all).
TITLE_RUNS = 4


class PlotError(ValueError):
    """Nothing to plot: a path that is not a run directory, or runs without metrics."""


@dataclass
class RunData:
    """What the plots read of one run directory."""

    path: Path
    label: str
    rows: list[dict[str, Any]]
    evaluation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def series(self, x: str, y: str) -> tuple[list[float], list[float]]:
        """Points ``(row[x], row[y])`` of the rows that have both as numbers."""
        xs, ys = [], []
        for row in self.rows:
            a, b = row.get(x), row.get(y)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                xs.append(float(a))
                ys.append(float(b))
        return xs, ys


def load_run(path: str | Path) -> RunData:
    """Read ``path/metrics.jsonl`` (required) and ``path/eval.json`` (optional)."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise PlotError(f"run directory {str(directory)!r} is a file, not a directory")
    if not directory.is_dir():
        raise PlotError(f"run directory {str(directory)!r} does not exist")
    metrics = directory / METRICS_FILE
    if not metrics.is_file():
        raise PlotError(
            f"{str(directory)!r} is not a run directory: it has no {METRICS_FILE} "
            "(train a run with `esmaml train` first)"
        )
    rows = read_metrics(metrics)
    if not rows:
        raise PlotError(f"{str(metrics)!r} holds no rows: the run has not finished an iteration")
    evaluation = None
    eval_file = directory / EVAL_FILE
    if eval_file.is_file():
        try:
            evaluation = json.loads(eval_file.read_text())
        except ValueError:
            evaluation = None  # a torn eval.json must not stop the learning curves
    return RunData(directory, directory.resolve().name, rows, evaluation)


def _labels(runs: list[RunData]) -> None:
    """Directory names, or paths where two runs share a name."""
    names = [run.label for run in runs]
    for run in runs:
        if names.count(run.label) > 1:
            run.label = str(run.path)


def default_output_dir(run_dirs: Sequence[Path]) -> Path:
    """One run: its own directory. Several: the directory that holds them (beside them)."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    resolved = [str(Path(p).resolve()) for p in run_dirs]
    return Path(os.path.commonpath(resolved))


def _title(what: str, runs: list[RunData]) -> str:
    names = [run.label for run in runs[:TITLE_RUNS]]
    more = f" + {len(runs) - TITLE_RUNS} more" if len(runs) > TITLE_RUNS else ""
    return f"{what}\nruns: {', '.join(names)}{more}"


def _save(figure: Any, path: Path, description: str, runs: list[RunData], command: str) -> Path:
    """Write the PNG and its sidecar .txt (what, which runs, which command)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    lines = [
        f"{path.name}: {description}",
        f"command: {command}",
        f"made: {datetime.now().isoformat(timespec='seconds')}",
        "runs:",
        *[f"  {run.label}: {run.path.resolve()}" for run in runs],
    ]
    for run in runs:
        lines.extend(f"note ({run.label}): {note}" for note in run.notes)
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return path


def _eval_figure(runs: list[RunData], x: str, xlabel: str, what: str) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.6), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, prefix, split in zip(axes, ("eval", "train_eval"), ("held-out tasks", "train tasks")):
        for run, colour in zip(runs, colours):
            for stage, style in (("post", "-"), ("pre", "--")):
                xs, ys = run.series(x, f"{prefix}_{stage}_adaptation")
                if xs:
                    ax.plot(
                        xs,
                        ys,
                        style,
                        color=colour,
                        marker="o",
                        markersize=3,
                        label=f"{run.label} ({stage}-adaptation)",
                    )
        ax.set_title(split)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (lower is better; RL: minus the return)")
    axes[0].legend(fontsize="small")
    figure.suptitle(_title(what, runs), fontsize="medium")
    return figure


def _meta_objective_figure(runs: list[RunData]) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = figure.subplots()
    for index, run in enumerate(runs):
        xs, ys = run.series("iteration", "meta_objective")
        ax.plot(xs, ys, color=f"C{index % 10}", label=run.label, linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("meta-objective (post-adaptation loss of the perturbed population)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.suptitle(_title("Meta-objective vs iteration", runs), fontsize="medium")
    return figure


def _split_words(runs: list[RunData]) -> str:
    """Which tasks the eval.json curves are on: ``esmaml evaluate --split`` (test by default)."""
    splits = sorted({(run.evaluation or {}).get("split", "test") for run in runs})
    names = {"test": "held-out", "train": "train-task"}
    return " and ".join(names.get(split, split) for split in splits)


def _steps_figure(runs: list[RunData]) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = figure.subplots()
    for index, run in enumerate(runs):
        curve = (run.evaluation or {}).get("curve", [])
        points = sorted(
            (point["steps"], point["post_adaptation"], point.get("post_adaptation_std", 0.0))
            for point in curve
        )
        if not points:
            continue
        steps, means, stds = zip(*points)
        split = (run.evaluation or {}).get("split", "test")
        label = run.label if split == "test" else f"{run.label} ({split} split)"
        ax.errorbar(
            steps, means, yerr=stds, color=f"C{index % 10}", marker="o", capsize=3, label=label
        )
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"{_split_words(runs)} loss after adaptation (mean ± std over tasks)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.suptitle(_title("Loss vs adaptation steps (esmaml evaluate)", runs), fontsize="medium")
    return figure


def plot_runs(
    run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, command: str | None = None
) -> list[Path]:
    """Draw the learning-curve figures of ``run_dirs``; returns the PNG paths written.

    ``out_dir`` defaults to :func:`default_output_dir`. ``command`` is recorded in the sidecars
    (default: this process's command line).
    """
    if not run_dirs:
        raise PlotError("give at least one run directory")
    runs = [load_run(path) for path in run_dirs]
    _labels(runs)
    out = Path(out_dir) if out_dir is not None else default_output_dir([r.path for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    evaluated = [run for run in runs if any("eval_post_adaptation" in row for row in run.rows)]
    for run in runs:
        if run not in evaluated:
            run.notes.append("no evaluation rows yet (evaluation.every not reached)")
    written = [
        _save(
            _meta_objective_figure(runs),
            out / "meta_objective.png",
            "meta-objective (metrics.jsonl meta_objective) against the iteration",
            runs,
            command,
        )
    ]
    if evaluated:
        written.append(
            _save(
                _eval_figure(evaluated, "iteration", "iteration", "Loss vs iteration"),
                out / "eval_vs_iteration.png",
                "eval/train_eval pre- (dashed) and post-adaptation (solid) loss against the "
                "iteration",
                evaluated,
                command,
            )
        )
        written.append(
            _save(
                _eval_figure(
                    evaluated,
                    "time_s",
                    "meta-training wall clock (s, evaluation excluded)",
                    "Loss vs wall clock",
                ),
                out / "eval_vs_time.png",
                "eval/train_eval pre- (dashed) and post-adaptation (solid) loss against the "
                "cumulative meta-training time time_s",
                evaluated,
                command,
            )
        )
    with_curve = [run for run in runs if (run.evaluation or {}).get("curve")]
    if with_curve:
        written.append(
            _save(
                _steps_figure(with_curve),
                out / "adaptation_steps.png",
                f"{_split_words(with_curve)} post-adaptation loss against the adaptation steps "
                "(eval.json)",
                with_curve,
                command,
            )
        )
    return written


def _config_key(run: RunData) -> str:
    """The run's config.yaml without its seed: runs with equal keys are seeds of one setup."""
    import yaml

    path = run.path / "config.yaml"
    if not path.is_file():
        raise PlotError(f"{str(run.path)!r} has no config.yaml: --band groups runs by config")
    config = yaml.safe_load(path.read_text()) or {}
    config.pop("seed", None)
    return json.dumps(config, sort_keys=True, default=str)


def band_groups(runs: list[RunData]) -> dict[str, list[RunData]]:
    """Runs grouped by config (seed aside), labelled by config name (and a number if two
    groups share one)."""
    import yaml

    grouped: dict[str, list[RunData]] = {}
    for run in runs:
        grouped.setdefault(_config_key(run), []).append(run)
    labelled: dict[str, list[RunData]] = {}
    for index, members in enumerate(grouped.values()):
        name = (yaml.safe_load((members[0].path / "config.yaml").read_text()) or {}).get("name")
        label = str(name or members[0].label)
        if label in labelled:
            label = f"{label} ({index + 1})"
        labelled[label] = members
    return labelled


def band_series(runs: list[RunData], y: str) -> tuple[list[float], list[Any]]:
    """``(updates, intervals)`` at the updates every run of the group evaluated at."""
    from esmaml.sweep import seed_interval

    curves = [dict(zip(*run.series("updates", y))) for run in runs]
    common = sorted(set.intersection(*(set(c) for c in curves)))
    return common, [seed_interval([c[x] for c in curves]) for x in common]


def plot_band(run_dirs: Sequence[str | Path], out: str | Path | None, *, command: str) -> Path:
    """``eval_band.png``: mean and 95% t-band across seeds per config group."""
    from matplotlib.figure import Figure

    runs = [load_run(path) for path in run_dirs]
    _labels(runs)
    groups = band_groups(runs)
    returns = all(run.series("updates", "eval_return_post_adaptation")[0] for run in runs)
    y = "eval_return_post_adaptation" if returns else "eval_post_adaptation"
    figure = Figure(figsize=(7, 4.6), layout="constrained")
    ax = figure.subplots()
    for index, (label, members) in enumerate(groups.items()):
        xs, intervals = band_series(members, y)
        if not xs:
            raise PlotError(f"the runs of {label} share no evaluated update (metrics {y})")
        colour = f"C{index % 10}"
        means = [i.mean for i in intervals]
        ax.plot(xs, means, color=colour, label=f"{label} ({len(members)} seeds)")
        if len(members) > 1:
            ax.fill_between(
                xs, [i.low for i in intervals], [i.high for i in intervals], color=colour, alpha=0.2
            )
    ax.set_xlabel("meta-updates")
    what = "return (higher is better)" if returns else "loss (lower is better)"
    ax.set_ylabel(f"held-out post-adaptation {what}")
    ax.legend(fontsize=8)
    ax.set_title(_title("Mean over seeds, 95% t-band", runs), fontsize=9)
    target = Path(out) if out is not None else default_output_dir([r.path for r in runs])
    target.mkdir(parents=True, exist_ok=True)
    return _save(
        figure,
        target / "eval_band.png",
        f"mean over seeds of {y} against the meta-updates, shaded: the 95% Student-t interval "
        "of the mean across seeds; groups: "
        + "; ".join(f"{label}: {len(m)} runs" for label, m in groups.items()),
        runs,
        command,
    )
