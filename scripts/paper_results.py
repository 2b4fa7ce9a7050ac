"""The paper's comparative claims over seeds: train, keep the data, render results/paper.md.

    .venv/bin/python scripts/paper_results.py --run              # train every run (2 at a time)
    .venv/bin/python scripts/paper_results.py                    # render from the data alone
    .venv/bin/python scripts/paper_results.py --run --only nav_pg_k20 --jobs 1
    .venv/bin/python scripts/paper_results.py --smoke            # CI: 2 seeds x 3 iterations

Each experiment is a committed config plus overrides, trained with seeds 0..4, one
``esmaml train`` each (the command is in every data file). ``--run`` writes
results/data/paper/NAME-sS.json (resolved config, held-out evaluation curve with env steps and
wall clock, provenance: commit, command, CPU seconds); rendering reads those files alone, adds
the sine tables of scripts/sine_results.py and the claims of shared/REFERENCE.md section 3, and
is deterministic.

Budgets. The reference trains 10,000 iterations on ~450 workers; this machine has 2 cores, so
every RL comparison here runs a fixed, declared number of meta-iterations (300 on the
navigation tasks, 50 on HalfCheetah) for every method alike, and every method of a comparison
spends the same episodes per iteration (the configs say how). The claim per run is the gain:
the last held-out post-adaptation return minus the initial meta-parameters' (iteration 0), on
the 50 test-pool tasks with evaluation seeds disjoint from training's; tables give the mean over
5 seeds and its 95% Student-t interval.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paper_render
import results_runs
from results_runs import ROOT, run_provenance
from rl_results import Experiment, collect, gains, train_one

DATA = ROOT / "results" / "data" / "paper"
SCRIPT = ".venv/bin/python scripts/paper_results.py"

NAV_IT, SPARSE_IT, MUJOCO_IT = "iterations=300", "iterations=300", "iterations=50"


def queries(k: int) -> tuple[str, ...]:
    return (f"adaptation.params.num_queries={k}",)


def pg_queries(k: int) -> tuple[str, ...]:
    # ES-MAML spends 300 x (K + 2) episodes an iteration (K queries, the pivot, the query
    # rollout); PG-MAML 150 tasks x (K + Q): Q = K + 4.
    return (f"adaptation.params.num_queries={k}", f"meta.params.query_episodes={k + 4}")


UNSHAPED = (
    "adaptation.params={num_queries: 20, sigma: 0.1, step_size: 0.005, method: forward, "
    "shaping: none}"
)
EXPERIMENTS = [
    # ES-MAML (ES-gradient, hill climbing) vs PG-MAML at K = 20, 10, 5 on Navigation2D.
    *(
        Experiment(f"nav_{method}_k{k}", f"configs/nav2d_{method}.yaml", (NAV_IT, *over(k)))
        for k in (20, 10, 5)
        for method, over in (("es", queries), ("hc", queries), ("pg", pg_queries))
    ),
    # Linear (shipped) vs MLP 32-32 policies, ES-gradient.
    Experiment("nav_es_mlp", "configs/nav2d_es.yaml", (NAV_IT, "task.params.hidden=[32,32]")),
    # Deterministic (shipped) vs Gaussian actions of std 0.03 (PG-MAML's exploration noise).
    Experiment("nav_es_gauss", "configs/nav2d_es.yaml", (NAV_IT, "task.params.action_noise=0.03")),
    # Zero-order (nav_es_k20) vs first-order, and first-order with and without the Hessian
    # correction (which needs an unshaped inner step, hence its own smaller step size).
    Experiment("nav_fo", "configs/nav2d_first_order.yaml", (NAV_IT,)),
    Experiment("nav_fo_unshaped", "configs/nav2d_first_order.yaml", (NAV_IT, UNSHAPED)),
    Experiment(
        "nav_fo_unshaped_hessian",
        "configs/nav2d_first_order.yaml",
        (NAV_IT, UNSHAPED, "meta.params.hessian_correction=true"),
    ),
    # Exploration on the sparse tasks: hill climbing vs ES-gradient vs DPP vs PG-MAML.
    *(
        Experiment(f"{task}_{method}_300it", f"configs/{task}_{method}.yaml", (SPARSE_IT,))
        for task in ("four_corners", "six_circles")
        for method in ("hc", "es", "dpp", "pg")
    ),
    # MuJoCo meta-tasks, ES-MAML at what 2 cores allow.
    Experiment("mujoco_fb_es", "configs/halfcheetah_fb_es.yaml", (MUJOCO_IT,)),
    Experiment("mujoco_gv_es", "configs/halfcheetah_gv_es.yaml", (MUJOCO_IT,)),
]
# Sine: torch.func MAML (the faster MAML, checked equal to learn2learn's on a step) trained to
# its plateau, against the ES-MAML variants given about 1.3x MAML's training time, so that
# every one is read at equal wall clock (T = MAML's training time) and at equal iterations
# (each ES run's last iteration, where MAML's curve is read too). No method is tuned here: the
# hyperparameters are the MAML paper's and the shipped configs' (equal tuning budget: none).
SINE = [
    Experiment(
        "sine_maml",
        "configs/sine_func_maml.yaml",
        ("iterations=20000", "evaluation.every=500", "checkpoint.every=5000"),
    ),
    Experiment(
        "sine_es_gd",
        "configs/sine_gd.yaml",
        ("iterations=20000", "evaluation.every=500", "checkpoint.every=5000"),
    ),
    Experiment(
        "sine_es_grad",
        "configs/sine.yaml",
        ("iterations=6000", "evaluation.every=250", "checkpoint.every=2000"),
    ),
    Experiment(
        "sine_es_hc",
        "configs/sine_hc.yaml",
        ("iterations=8000", "evaluation.every=250", "checkpoint.every=2000"),
    ),
]
ADAPTATION_STEPS = (0, 1, 5, 10)
SINE_CURVE = {
    "updates": "updates",
    "time_s": "time_s",
    "queries": "queries_total",
    "pre": "eval_pre_adaptation",
    "post": "eval_post_adaptation",
}
BY_NAME = {e.name: e for e in EXPERIMENTS + SINE}


def collect_sine(experiment: Experiment, seed: int, timing: dict, provenance: dict) -> dict:
    """A sine run's record: held-out MSE curve (loss, lower is better), then the final
    meta-parameters evaluated after 0, 1, 5 and 10 adaptation steps (``esmaml evaluate``)."""
    record = collect(experiment, seed, timing, provenance, SINE_CURVE)
    run_dir = ROOT / timing["run_dir"]
    steps = [str(s) for s in ADAPTATION_STEPS]
    out = run_dir / "eval_steps.json"
    argv = [".venv/bin/esmaml", "evaluate", timing["run_dir"], "--steps", *steps]
    subprocess.run(
        [*argv, "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, **results_runs.ENV},
    )
    evaluated = json.loads(out.read_text())
    record["steps"] = {
        "command": " ".join([*argv, "--out", str(out.relative_to(ROOT))]),
        "iteration": evaluated["iteration"],
        "curve": [
            {key: value for key, value in point.items() if key != "per_task"}
            for point in evaluated["curve"]
        ],
    }
    return record


def run(names: list[str] | None, jobs: int, fresh: bool = False) -> None:
    provenance = run_provenance()
    DATA.mkdir(parents=True, exist_ok=True)
    todo = [(e, s) for e in EXPERIMENTS + SINE if not names or e.name in names for s in e.seeds]

    def one(item: tuple[Experiment, int]) -> None:
        experiment, seed = item
        path = DATA / f"{experiment.name}-s{seed}.json"
        if path.is_file() and not fresh:  # a rerun finishes an interrupted --run
            return
        gather = collect_sine if experiment in SINE else collect
        record = gather(experiment, seed, train_one(experiment, seed), provenance)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{path.name}: gain {gains([record])[0]:+.3f}", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, item) for item in todo]:
            future.result()


def smoke(names: list[str] | None) -> None:
    """CI: each experiment's command runs (2 seeds, 3 iterations); no data is written."""
    for experiment in EXPERIMENTS + SINE:
        if names and experiment.name not in names:
            continue
        gather = collect_sine if experiment in SINE else collect
        for seed in experiment.seeds[:2]:
            timing = train_one(experiment, seed, ("iterations=3", "evaluation.every=3"))
            record = gather(experiment, seed, timing, {})
            assert len(record["evals"]["post"]) == 2, record["evals"]


def load_data(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(data_dir.glob("*-s*.json")):
        record = json.loads(path.read_text())
        grouped.setdefault(record["name"], []).append(record)
    if not grouped:
        sys.exit(f"no data under {data_dir}: run `{SCRIPT} --run` first")
    return {name: sorted(rs, key=lambda r: r["seed"]) for name, rs in grouped.items()}


NOTES = ROOT / "results" / "paper_notes.md"


def render(data: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """results/paper.md and its figures under ``out``, from ``data`` alone."""
    paper_render.render(data, out, NOTES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="train, then write the data files")
    parser.add_argument("--smoke", action="store_true", help="3 iterations per command, no data")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="experiments to run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one core each)")
    parser.add_argument("--fresh", action="store_true", help="rerun runs that have data")
    args = parser.parse_args()
    if args.smoke:
        smoke(args.only)
        return
    if args.run:
        run(args.only, args.jobs, args.fresh)
    render(load_data(DATA), ROOT / "results")
    print(f"wrote {ROOT / 'results' / 'paper.md'}")


if __name__ == "__main__":
    results_runs.THREADS = 1
    main()
