"""Meta-RL results over seeds: train the committed RL configs, keep the data, render results/rl.md.

    .venv/bin/python scripts/rl_results.py --run            # train every run (2 at a time)
    .venv/bin/python scripts/rl_results.py                  # render from results/data/rl/ alone
    .venv/bin/python scripts/rl_results.py --run --only nav2d_es --jobs 1
    .venv/bin/python scripts/rl_results.py --smoke          # CI: 2 seeds x 3 iterations, no data

Each experiment is a committed config plus overrides, trained with seeds 0..4 by its own command
(``WANDB_MODE=disabled OMP_NUM_THREADS=1 .venv/bin/esmaml train CONFIG [OVERRIDES] seed=S
--run-dir runs/rl/NAME-sS``). ``--run`` writes one JSON per run to
results/data/rl/NAME-sS.json: the resolved config, the held-out evaluation curve (the trainer's
iteration -1 row evaluates the initial meta-parameters, before any update), and provenance
(commit, dirty flag, command, machine, process wall and CPU seconds). Rendering reads those files
alone and is deterministic.

The claim per experiment is a difference: the held-out post-adaptation return of the last
evaluation minus that of the initial meta-parameters (same tasks, same evaluation seeds, which
are a substream disjoint from training's), per training seed; the table gives its mean over
the seeds and the 95% confidence interval of that mean (Student t, n - 1 degrees of freedom).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import results_runs
from results_runs import ENV, ROOT, code_line, run_provenance

from esmaml.sweep import Interval, seed_interval

RUNS = ROOT / "runs" / "rl"  # git-ignored scratch: run dirs with checkpoints
RESULTS = ROOT / "results"
DATA = RESULTS / "data" / "rl"  # committed: one JSON per (experiment, seed)
SCRIPT = ".venv/bin/python scripts/rl_results.py"
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Experiment:
    name: str
    config: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = field(default=SEEDS)

    def command(self, seed: int, extra: tuple[str, ...] = ()) -> str:
        env = " ".join(f"{key}={value}" for key, value in ENV.items())
        argv = [".venv/bin/esmaml", "train", self.config, *self.overrides, *extra, f"seed={seed}"]
        argv += ["--run-dir", f"runs/rl/{self.name}-s{seed}"]
        return f"{env} {shlex.join(argv)}"


LEGACY = "task.params.normalize_observations=legacy"
PRESERVING = "task.params.normalize_observations=preserving"
OFF = "task.params.normalize_observations=false"
SCALED = "task.params.parametrization=scaled"
EXPERIMENTS = [
    # The acceptance configs, as shipped (the reference's normaliser and policy).
    Experiment("nav2d_es", "configs/nav2d_es.yaml"),
    Experiment("four_corners_hc", "configs/four_corners_hc.yaml"),
    Experiment("six_circles_hc", "configs/six_circles_hc.yaml"),
    # Normaliser ablation: the shipped reference normaliser against the function-preserving
    # one, legacy and off. The preserving rows were run when preserving was the shipped
    # default (commit 25ff8b2, no override then); --run reproduces them with the override.
    Experiment("nav2d_es_preserving_norm", "configs/nav2d_es.yaml", (PRESERVING,)),
    Experiment("nav2d_es_legacy_norm", "configs/nav2d_es.yaml", (LEGACY,)),
    Experiment("nav2d_es_no_norm", "configs/nav2d_es.yaml", (OFF,)),
    Experiment("four_corners_hc_preserving_norm", "configs/four_corners_hc.yaml", (PRESERVING,)),
    Experiment("four_corners_hc_legacy_norm", "configs/four_corners_hc.yaml", (LEGACY,)),
    Experiment("four_corners_hc_no_norm", "configs/four_corners_hc.yaml", (OFF,)),
    Experiment(
        "six_circles_hc_preserving_norm",
        "configs/six_circles_hc.yaml",
        (PRESERVING, "iterations=1500"),
    ),
    # Policy ablation, both with the preserving normaliser: esmaml's old scaled policy
    # against the reference's.
    Experiment("nav2d_es_scaled_policy", "configs/nav2d_es.yaml", (SCALED, PRESERVING)),
    Experiment(
        "four_corners_hc_scaled_policy",
        "configs/four_corners_hc.yaml",
        (SCALED, PRESERVING),
    ),
    # MuJoCo on the batched, threaded path (the default backend).
    Experiment("halfcheetah_fb_es", "configs/halfcheetah_fb_es.yaml"),
]
BY_NAME = {e.name: e for e in EXPERIMENTS}
MAIN = ["nav2d_es", "four_corners_hc", "six_circles_hc"]
NORMALISER = [
    (
        "Navigation2D, ES-gradient",
        ["nav2d_es", "nav2d_es_preserving_norm", "nav2d_es_legacy_norm", "nav2d_es_no_norm"],
    ),
    (
        "FourCorners, hill climbing",
        [
            "four_corners_hc",
            "four_corners_hc_preserving_norm",
            "four_corners_hc_legacy_norm",
            "four_corners_hc_no_norm",
        ],
    ),
    ("SixCircles, hill climbing", ["six_circles_hc", "six_circles_hc_preserving_norm"]),
]
POLICY = [
    (
        "Navigation2D, ES-gradient",
        ["nav2d_es_preserving_norm", "nav2d_es_scaled_policy"],
    ),
    (
        "FourCorners, hill climbing",
        ["four_corners_hc_preserving_norm", "four_corners_hc_scaled_policy"],
    ),
]
VARIANT = {
    "": "reference normaliser, reference policy (shipped)",
    "preserving_norm": "function-preserving normaliser (query rollouts, theta rebased)",
    "legacy_norm": "legacy normaliser (all rollouts, theta not rebased)",
    "no_norm": "no normaliser",
    "scaled_policy": "scaled policy (0.1 tanh, zero output layer), preserving normaliser",
}


# ---------------------------------------------------------------------------------------------
# --run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One (experiment, seed) as :func:`results_runs.train` runs it."""

    name: str
    config: str
    command: str

    @property
    def run_dir(self) -> Path:
        return RUNS / self.name


def train_one(experiment: Experiment, seed: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``esmaml train`` in a fresh run dir; its command, run dir and timing."""
    trial = Trial(f"{experiment.name}-s{seed}", experiment.config, experiment.command(seed, extra))
    timing = results_runs.train(trial)
    return {**timing, "command": trial.command, "run_dir": str(trial.run_dir.relative_to(ROOT))}


RL_CURVE = {
    "updates": "updates",
    "env_steps": "env_steps_total",
    "time_s": "time_s",
    "pre": "eval_return_pre_adaptation",
    "post": "eval_return_post_adaptation",
}


def collect(
    experiment: Experiment,
    seed: int,
    timing: dict[str, Any],
    provenance: dict,
    keys: dict[str, str] = RL_CURVE,
) -> dict:
    """The run's data file: config, held-out evaluation curve (``keys``: name in the file ->
    metrics.jsonl key; ``post`` marks the evaluation rows), provenance."""
    import yaml

    run_dir = ROOT / timing["run_dir"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if keys["post"] in row]
    if not evals or evals[0]["iteration"] != -1:
        raise RuntimeError(f"{run_dir}: no iteration -1 evaluation (evaluation.initial off?)")
    curve = {name: [row.get(key) for row in evals] for name, key in keys.items()}
    if keys is RL_CURVE:  # the normaliser's scale, from the training rows
        curve["obs_std_mean"] = [
            next((r.get("obs_std_mean") for r in rows if r["iteration"] == row["iteration"]), None)
            for row in evals
        ]
    return {
        "name": experiment.name,
        "seed": seed,
        "config_file": experiment.config,
        "overrides": list(experiment.overrides),
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
        "evals": curve,
        "provenance": {**provenance, **timing},
    }


def run(names: list[str] | None, jobs: int) -> None:
    provenance = run_provenance()
    DATA.mkdir(parents=True, exist_ok=True)
    todo = [(e, s) for e in EXPERIMENTS if not names or e.name in names for s in e.seeds]

    def one(item: tuple[Experiment, int]) -> None:
        experiment, seed = item
        record = collect(experiment, seed, train_one(experiment, seed), provenance)
        path = DATA / f"{experiment.name}-s{seed}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, item) for item in todo]:
            future.result()


def smoke(names: list[str] | None) -> None:
    """CI: each experiment's command runs (2 seeds, 3 iterations); no data is written."""
    for experiment in EXPERIMENTS:
        if names and experiment.name not in names:
            continue
        for seed in experiment.seeds[:2]:
            timing = train_one(experiment, seed, ("iterations=3", "evaluation.every=3"))
            record = collect(experiment, seed, timing, {})
            assert len(record["evals"]["post"]) == 2, record["evals"]


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


def gains(records: list[dict[str, Any]]) -> list[float]:
    """Per seed: last evaluation's post-adaptation return minus the initial one's."""
    return [r["evals"]["post"][-1] - r["evals"]["post"][0] for r in records]


def fmt(interval: Interval) -> str:
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"


def level(values: list[float]) -> str:
    interval = seed_interval(values)
    return f"{interval.mean:.1f} [{interval.low:.1f}, {interval.high:.1f}]"


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def experiment_name(record: dict[str, Any]) -> str:
    """The experiment a record belongs to. Until the shipped configs said
    ``normalize_observations: reference``, they said ``true``, which is the function-preserving
    mode: such runs of a shipped config are the preserving row of the normaliser ablation."""
    name = record["name"]
    if name in MAIN and record["config"]["task"]["params"]["normalize_observations"] is True:
        return f"{name}_preserving_norm"
    return name


def load_data(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Records per experiment (seeds in order); exits when there is no data at all."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(data_dir.glob("*-s*.json")):
        record = json.loads(path.read_text())
        grouped.setdefault(experiment_name(record), []).append(record)
    if not grouped:
        sys.exit(f"no data under {data_dir}: run `{SCRIPT} --run` first")
    return {name: sorted(rs, key=lambda r: r["seed"]) for name, rs in grouped.items()}


def verdict(records: list[dict[str, Any]]) -> str:
    interval = seed_interval(gains(records))
    if interval.low > 0:
        return "learns (CI above 0)"
    if interval.high < 0:
        return "**worse** (CI below 0)"
    return "**not shown** (CI contains 0)"


def summary_row(name: str, records: list[dict[str, Any]]) -> str:
    first = records[0]
    iterations = first["config"]["iterations"]
    steps = sum(r["evals"]["env_steps"][-1] for r in records) / len(records)
    wall = sum(r["provenance"]["process_s"] for r in records) / len(records)
    initial = [r["evals"]["post"][0] for r in records]
    final = [r["evals"]["post"][-1] for r in records]
    return (
        f"| {name} | {len(records)} | {iterations} | {steps / 1e6:.1f}M | {wall:.0f} s | "
        f"{level(initial)} | {level(final)} | {fmt(seed_interval(gains(records)))} | "
        f"{', '.join(f'{g:+.0f}' for g in gains(records))} | {verdict(records)} |"
    )


HEADER = (
    "| experiment | seeds | iterations | env steps / run | wall / run | post return, "
    "iteration 0 | post return, last | gain (last - 0) | gain per seed | verdict |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def plot(groups: list[tuple[str, list[str]]], data: dict, out: Path, title: str) -> None:
    if not groups:  # nothing of this figure has been run yet
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (panel, names) in zip(axes[0], groups):
        for name in names:
            records = data.get(name)
            if not records:
                continue
            length = min(len(r["evals"]["post"]) for r in records)
            x = np.asarray(records[0]["evals"]["updates"][:length], dtype=float)
            y = np.asarray([r["evals"]["post"][:length] for r in records], dtype=float)
            intervals = [seed_interval(column.tolist()) for column in y.T]
            mean = np.asarray([i.mean for i in intervals])
            low, high = (np.asarray([getattr(i, b) for i in intervals]) for b in ("low", "high"))
            n = y.shape[0]
            base = next((m for m in MAIN if name.startswith(m + "_")), name)
            label = VARIANT.get(name[len(base) + 1 :], name)
            (line,) = ax.plot(x, mean, label=f"{label} (n={n})")
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(panel, fontsize="medium")
        ax.set_xlabel("meta-updates")
        ax.set_ylabel("held-out post-adaptation return")
        ax.legend(fontsize="small")
    figure.suptitle(title + " (mean, shaded 95% t-interval across seeds)", fontsize="medium")
    figure.tight_layout()
    figure.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(figure)


def caption(
    records: list[dict[str, Any]], what: str, script: str = SCRIPT, data: str = "results/data/rl"
) -> str:
    configs = sorted({f"`{r['config_file']}`" for r in records})
    return (
        f"*{what} Produced by `{script} --run` at {code_line(records)}; each run is "
        f"`{ENV_LINE} .venv/bin/esmaml train CONFIG [OVERRIDES] seed=S --run-dir "
        f"runs/rl/NAME-sS` (configs: {', '.join(configs)}; each run's exact command is in "
        f"`{data}/NAME-sS.json`); re-rendered by `{script}`.*"
    )


ENV_LINE = " ".join(f"{key}={value}" for key, value in ENV.items())


def render(data: dict[str, list[dict[str, Any]]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    every = [r for records in data.values() for r in records]
    lines = [
        "# Meta-RL results: does meta-training make adaptation better?",
        "",
        "Every number below is over training seeds 0-4 (one run each). The claim is the *gain*:",
        "held-out post-adaptation return (50 test-pool tasks, evaluation seeds a substream",
        "disjoint from training's) at the **last** evaluation minus the same evaluation of the",
        "initial meta-parameters (iteration 0, before any update), per seed; each cell gives",
        "the mean over seeds and, in brackets, the 95% confidence interval of that mean",
        "(Student t, 4 degrees of freedom). Returns are higher-is-better (minus the loss).",
        "",
        "## Acceptance: the shipped configs, as shipped",
        "",
        HEADER,
    ]
    lines += [summary_row(name, data[name]) for name in MAIN if name in data]
    main_records = [r for name in MAIN for r in data.get(name, [])]
    lines += ["", caption(main_records, "Table 1. The shipped paper-default configs."), ""]
    plot([(name, [name]) for name in MAIN if name in data], data, out / "rl_main.png", "Meta-RL")
    lines += ["![Held-out post-adaptation return against meta-updates](rl_main.png)", ""]
    lines += ["## Observation normaliser ablation", "", HEADER]
    for _, names in NORMALISER:
        lines += [summary_row(n, data[n]) for n in names if n in data]
    lines += [""]
    norm_records = [r for _, ns in NORMALISER for n in ns for r in data.get(n, [])]
    lines += [
        "| experiment | obs std divided by, after update 1 → last (mean over seeds) |",
        "|---|---|",
    ]
    for _, names in NORMALISER:
        for name in names:
            if name not in data:
                continue
            stds = [r["evals"]["obs_std_mean"] for r in data[name]]
            if any(s[1] is None for s in stds):
                lines.append(f"| {name} | (no normaliser) |")
                continue
            start = sum(s[1] for s in stds) / len(stds)
            end = sum(s[-1] for s in stds) / len(stds)
            lines.append(f"| {name} | {start:.3f} → {end:.3f} |")
    lines += [
        "",
        caption(
            norm_records,
            "Table 2. Normaliser: reference (shipped) vs function-preserving vs legacy vs off.",
        ),
        "",
    ]
    plot(NORMALISER, data, out / "rl_normaliser.png", "Normaliser ablation")
    lines += ["![Normaliser ablation](rl_normaliser.png)", ""]
    lines += ["## Policy parametrisation ablation", "", HEADER]
    for _, names in POLICY:
        lines += [summary_row(n, data[n]) for n in names if n in data]
    policy_records = [r for _, ns in POLICY for n in ns for r in data.get(n, [])]
    lines += [
        "",
        caption(
            policy_records,
            "Table 3. Policy: the reference's (shipped) vs esmaml's old one, both with the "
            "function-preserving normaliser.",
        ),
        "",
    ]
    plot(POLICY, data, out / "rl_policy.png", "Policy ablation")
    lines += ["![Policy ablation](rl_policy.png)", ""]
    if "halfcheetah_fb_es" in data:
        records = data["halfcheetah_fb_es"]
        lines += ["## MuJoCo: HalfCheetah forward-backward (batched MuJoCo path)", "", HEADER]
        lines += [summary_row("halfcheetah_fb_es", records), ""]
        lines += [caption(records, "Table 4. HalfCheetah forward-backward, 16 pairs, K = 5."), ""]
    notes = RESULTS / "rl_notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    (out / "rl.md").write_text("\n".join(lines))
    assert every  # rendered from data only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="train, then write the data files")
    parser.add_argument("--smoke", action="store_true", help="3 iterations per command, no data")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="experiments to run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one core each)")
    args = parser.parse_args()
    if args.smoke:
        smoke(args.only)
        return
    if args.run:
        run(args.only, args.jobs)
    render(load_data(DATA), RESULTS)
    print(f"wrote {RESULTS / 'rl.md'}")


if __name__ == "__main__":
    results_runs.THREADS = 1
    main()
