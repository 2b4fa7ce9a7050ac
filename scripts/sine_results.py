"""Sine results: run the committed sine configs and write results/sine.md and results/sine.png.

    .venv/bin/python scripts/sine_results.py --run            # train every run, then report
    .venv/bin/python scripts/sine_results.py                  # report from existing run dirs
    .venv/bin/python scripts/sine_results.py --run --only es_gd maml

Each run is the command recorded in the table (``WANDB_MODE=disabled OMP_NUM_THREADS=1
.venv/bin/esmaml train CONFIG --run-dir runs/sine/NAME``), one at a time, seed 0 (the configs').
One intra-op thread: the machine has 2 cores shared with other jobs, so each run is timed under
the same thread count and the load average before and after it is recorded with it.

Wall clock is ``time_s`` of metrics.jsonl: the sum of the meta-training steps (task sampling and
evaluations excluded), the clock the comparison uses. ``process s`` and ``CPU s`` are the whole
``esmaml train`` process (start-up and evaluations included), the latter load-independent.
Methods are compared at equal wall clock T = the learn2learn MAML run's final ``time_s``: each
ES-MAML run contributes its last held-out evaluation at ``time_s <= T`` (its final one when it
finished sooner). The point at time 0 is the evaluation of the initial meta-parameters, computed
here by building the run's Trainer from its config.yaml (same seed: same theta and tasks).

Outputs: results/sine.md (tables) and results/sine.png (held-out post-adaptation MSE against wall
clock, log y; right panel: the non-differentiable sine, pre and post).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "sine"
RESULTS = ROOT / "results"
INFO = "sine_results.json"  # written by this script into each run dir
THREADS = 1
ENV = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(THREADS)}


@dataclass(frozen=True)
class Run:
    name: str
    method: str
    config: str
    group: str = "sine"  # "sine": the comparison; "nondiff": the quantised network

    @property
    def run_dir(self) -> Path:
        return RUNS / self.name

    @property
    def argv(self) -> list[str]:
        return [".venv/bin/esmaml", "train", self.config, "--run-dir", f"runs/sine/{self.name}"]

    @property
    def command(self) -> str:
        env = " ".join(f"{key}={value}" for key, value in ENV.items())
        return f"{env} {shlex.join(self.argv)}"


MAML = "maml"
RUN_SPECS = [
    Run(MAML, "learn2learn MAML (exact, second order)", "configs/sine_maml.yaml"),
    Run("es_gd", "ES-MAML, gradient-descent adaptation", "configs/sine_gd.yaml"),
    Run("es_grad", "ES-MAML, ES-gradient adaptation", "configs/sine.yaml"),
    Run("es_hc", "ES-MAML, hill-climbing adaptation", "configs/sine_hc.yaml"),
    Run("identity", "no adaptation (ES on the mean loss)", "configs/sine_identity.yaml"),
    Run(
        "nondiff_hc",
        "ES-MAML, hill-climbing adaptation, quantised weights",
        "configs/nondiff_sine.yaml",
        group="nondiff",
    ),
]
COLORS = {
    MAML: "black",
    "es_gd": "tab:blue",
    "es_grad": "tab:orange",
    "es_hc": "tab:green",
    "identity": "tab:gray",
    "nondiff_hc": "tab:purple",
}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(run: Run) -> None:
    """One ``esmaml train`` in a fresh run dir; its timing context goes to the run dir."""
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # runs/sine is this script's (git-ignored) scratch
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{run.name}] {run.command}", flush=True)
    load_before, uptime_before = os.getloadavg(), uptime()
    cpu_before, started = children_cpu(), time.perf_counter()
    log = run.run_dir.parent / f"{run.name}.log"
    with log.open("w") as out:
        process = subprocess.run(
            run.argv,
            cwd=ROOT,
            env={**os.environ, **ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu_before
    if process.returncode != 0:
        sys.exit(f"[{run.name}] failed with exit code {process.returncode}; see {log}")
    info = {
        "command": run.command,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "process_s": wall,
        "cpu_s": cpu,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
    }
    (run.run_dir / INFO).write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"[{run.name}] done in {wall:.0f} s ({cpu:.0f} s CPU); {info['uptime_after']}", flush=True
    )


def initial_evaluation(run_dir: Path) -> tuple[float, float]:
    """Held-out pre/post loss of the initial meta-parameters of the run in ``run_dir``."""
    import torch

    from esmaml.config import load_config
    from esmaml.training.trainer import Trainer

    torch.set_num_threads(THREADS)
    config = load_config(run_dir / "config.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        evaluation = Trainer(config, Path(scratch) / "run").evaluate()
    return float(evaluation.pre.mean()), float(evaluation.post.mean())


def load(run: Run) -> dict[str, Any]:
    from esmaml.logging.metrics import read_metrics

    directory = run.run_dir
    summary_file = directory / "summary.json"
    if not summary_file.is_file():
        sys.exit(f"{directory} has no summary.json: run `scripts/sine_results.py --run` first")
    rows = read_metrics(directory / "metrics.jsonl")
    pre0, post0 = initial_evaluation(directory)
    evals = [(0.0, 0, pre0, post0)] + [
        (r["time_s"], r["iteration"] + 1, r["eval_pre_adaptation"], r["eval_post_adaptation"])
        for r in rows
        if "eval_post_adaptation" in r
    ]
    info_file = directory / INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {
        "run": run,
        "summary": json.loads(summary_file.read_text()),
        "evals": evals,  # (time_s, iterations done, pre, post)
        "info": info,
    }


def at_time(
    evals: list[tuple[float, int, float, float]], budget: float
) -> tuple[float, int, float]:
    """(time_s, iterations, post) of the last evaluation at ``time_s <= budget``."""
    time_s, iterations, _, post = [e for e in evals if e[0] <= budget + 1e-9][-1]
    return time_s, iterations, post


def first_below(evals: list[tuple[float, int, float, float]], level: float) -> str:
    for time_s, iterations, _, post in evals:
        if post <= level:
            return f"{time_s:.0f} s (it {iterations})"
    return "not reached"


def fmt_load(values: list[float] | None) -> str:
    return "?" if not values else f"{values[0]:.2f}"


def git_state() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "esmaml")
    return f"{head}" + (" (esmaml/ has uncommitted changes)" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(results: dict[str, dict[str, Any]], script_command: str) -> None:
    import torch

    maml = results[MAML]
    budget = maml["summary"]["time_s"]
    maml_post = maml["summary"]["eval_post_adaptation"]
    lines = [
        "# Sine regression: ES-MAML against learn2learn MAML",
        "",
        f"Made by `{script_command}` (scripts/sine_results.py); each row's run is its own "
        "command, run one after another. 10-shot sine (amplitude U[0.1, 5], phase U[0, pi], "
        "x U[-5, 5]), MLP 1-40-40-1, one adaptation step, held-out loss on the 100 tasks of "
        "the fixed test pool (seed 0 for every run), query-set MSE before (pre) and after (post) "
        "adaptation on the 10 support points.",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu_model()}), shared with other jobs; torch "
        f"{torch.__version__}, {THREADS} intra-op thread per run (`OMP_NUM_THREADS={THREADS}`); "
        f"git {git_state()}. Report written "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; `uptime` then: "
        f"`{uptime()}`.",
        "",
        "**Wall clock** is `time_s` of metrics.jsonl: the summed meta-training steps "
        "(evaluations excluded). Timings on this shared machine move by up to 2x with the load "
        "of other jobs: the load average (1 min) before and after each run and the run's "
        "load-independent CPU seconds (whole process, evaluations included) are in the second "
        "table.",
        "",
        f"**Equal wall clock**: T = {budget:.0f} s, the MAML run's training time. "
        f"`post @ T` is each run's last held-out evaluation at `time_s <= T` (its final one when "
        f"it finished sooner); `ratio` is that over MAML's final post MSE ({maml_post:.3f}). "
        f"Target: ES-MAML within 2x (post <= {2 * maml_post:.3f}).",
        "",
        "| method | config | iterations | wall clock s | held-out pre MSE | held-out post MSE "
        "| post @ T (s, it) | ratio @ T | first post <= 2x MAML | command |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for result in results.values():
        run, summary, evals = result["run"], result["summary"], result["evals"]
        if run.group != "sine":
            continue
        t, it, post_t = at_time(evals, budget)
        lines.append(
            f"| {run.method} | `{run.config}` | {summary['iterations']} | "
            f"{summary['time_s']:.0f} | {summary['eval_pre_adaptation']:.3f} | "
            f"{summary['eval_post_adaptation']:.3f} | {post_t:.3f} ({t:.0f} s, it {it}) | "
            f"{post_t / maml_post:.2f} | {first_below(evals, 2 * maml_post)} | "
            f"`{run.command}` |"
        )
    nondiff = [r for r in results.values() if r["run"].group == "nondiff"]
    if nondiff:
        lines += [
            "",
            "## Non-differentiable sine (quantised weights, gradient zero almost everywhere)",
            "",
            "MAML cannot run here (`L2LMAML` refuses a non-differentiable family: its inner "
            "step would be the identity). ES-MAML meta-learns it:",
            "",
            "| method | config | iterations | wall clock s | held-out pre MSE "
            "| held-out post MSE | post / pre | initial pre / post | command |",
            "|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for result in nondiff:
            run, summary, evals = result["run"], result["summary"], result["evals"]
            pre, post = summary["eval_pre_adaptation"], summary["eval_post_adaptation"]
            lines.append(
                f"| {run.method} | `{run.config}` | {summary['iterations']} | "
                f"{summary['time_s']:.0f} | {pre:.3f} | {post:.3f} | {post / pre:.2f} | "
                f"{evals[0][2]:.3f} / {evals[0][3]:.3f} | `{run.command}` |"
            )
    lines += [
        "",
        "## Timing context",
        "",
        "| run | process s | CPU s | load before | load after | finished (UTC) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        info = result["info"]
        if not info:
            lines.append(f"| {name} | ? | ? | ? | ? | ? |")
            continue
        lines.append(
            f"| {name} | {info['process_s']:.0f} | {info['cpu_s']:.0f} | "
            f"{fmt_load(info.get('load_before'))} | {fmt_load(info.get('load_after'))} | "
            f"{info['finished']} |"
        )
    lines += [
        "",
        "## Held-out evaluations (time_s, iterations, pre, post)",
        "",
    ]
    for name, result in results.items():
        points = ", ".join(
            f"{t:.0f} s/{i}: {pre:.2f}/{post:.2f}" for t, i, pre, post in result["evals"]
        )
        lines.append(f"- `{name}`: {points}")
    lines += ["", "![held-out post-adaptation MSE against wall clock](sine.png)", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sine.md").write_text("\n".join(lines) + "\n")
    plot(results, budget, maml_post)
    print(f"wrote {RESULTS / 'sine.md'} and {RESULTS / 'sine.png'}")


def plot(results: dict[str, dict[str, Any]], budget: float, maml_post: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=[2, 1])
    for name, result in results.items():
        run, evals = result["run"], result["evals"]
        times = [e[0] for e in evals]
        color = COLORS.get(name)
        if run.group == "sine":
            left.plot(times, [e[3] for e in evals], "o-", color=color, ms=3, label=run.method)
        else:
            right.plot(
                times, [e[3] for e in evals], "o-", color=color, ms=3, label="post-adaptation"
            )
            right.plot(
                times,
                [e[2] for e in evals],
                "o--",
                color=color,
                ms=3,
                alpha=0.6,
                label="pre-adaptation",
            )
    left.axvline(
        budget, color="black", ls=":", lw=1, label=f"T = MAML's wall clock ({budget:.0f} s)"
    )
    left.axhline(
        2 * maml_post,
        color="tab:red",
        ls=":",
        lw=1,
        label=f"2x MAML's final post MSE ({2 * maml_post:.2f})",
    )
    left.set(
        xlabel="meta-training wall clock (s, time_s)",
        ylabel="held-out post-adaptation MSE",
        yscale="log",
        title="10-shot sine: held-out post-adaptation MSE (100 tasks)",
    )
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right.set(
        xlabel="meta-training wall clock (s, time_s)",
        ylabel="held-out MSE",
        yscale="log",
        title="quantised sine: ES-MAML + HC",
    )
    right.legend(fontsize=8)
    right.grid(True, which="both", alpha=0.3)
    figure.savefig(RESULTS / "sine.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="train the runs (else: report only)")
    names = [run.name for run in RUN_SPECS]
    parser.add_argument("--only", nargs="+", choices=names, help="train only these runs")
    args = parser.parse_args(argv)
    os.environ.update(ENV)
    if args.run:
        for run in RUN_SPECS:
            if not args.only or run.name in args.only:
                train(run)
    results = {run.name: load(run) for run in RUN_SPECS}
    command = ".venv/bin/python scripts/sine_results.py" + (" --run" if args.run else "")
    if args.only:
        command += " --only " + " ".join(args.only)
    report(results, command)


if __name__ == "__main__":
    main()
