"""The paper-default RL configs load, build and train (two iterations each), and the results
script's smoke form runs its commands: what `scripts/rl_results.py --run` trains for hours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from esmaml.config import load_config
from esmaml.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = [
    "nav2d_es",
    "nav2d_hc",
    "four_corners_es",
    "four_corners_hc",
    "six_circles_hc",
    "six_circles_dpp",
]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_default_config_trains(name: str, tmp_path: Path) -> None:
    overrides = [
        "iterations=2",
        "evaluation.every=2",
        "evaluation.num_tasks=4",
        "wandb.mode=disabled",
    ]
    config = load_config(ROOT / "configs" / f"{name}.yaml", overrides)
    assert config.task.params["parametrization"] == "reference"
    assert config.task.params["normalize_observations"] == "reference"
    summary = Trainer(config, tmp_path / "run").train()
    assert "eval_return_post_adaptation" in summary


# The baselines and variants of results/paper.md (scripts/paper_results.py).
COMPARISON_CONFIGS = [
    "nav2d_pg",
    "four_corners_pg",
    "six_circles_pg",
    "four_corners_dpp",
    "six_circles_es",
    "nav2d_first_order",
]


@pytest.mark.parametrize("name", COMPARISON_CONFIGS)
def test_comparison_config_trains_at_its_budget(name: str, tmp_path: Path) -> None:
    overrides = ["iterations=2", "evaluation.every=2", "evaluation.num_tasks=4"]
    config = load_config(ROOT / "configs" / f"{name}.yaml", [*overrides, "wandb.mode=disabled"])
    summary = Trainer(config, tmp_path / "run").train()
    assert "eval_return_post_adaptation" in summary
    # Each spends the episodes an iteration of the ES-MAML config it is compared with:
    # 300 x (20 queries + 1 pivot + 1 query rollout) = 6,600.
    meta, adaptation = config.meta.params, config.adaptation.params
    if config.meta.algorithm == "pg_maml":
        episodes = meta["meta_batch_size"] * (adaptation["num_queries"] + meta["query_episodes"])
    elif config.meta.algorithm == "first_order":
        pairs = 2 * meta["num_perturbations"]
        episodes = meta["tasks_per_iteration"] * (adaptation["num_queries"] + 1 + pairs + 1)
    else:
        episodes = 2 * meta["num_perturbations"] * (adaptation["num_queries"] + 2)
    assert episodes == 6600, episodes


@pytest.mark.slow
def test_paper_results_smoke_runs_its_commands(tmp_path: Path) -> None:
    """`paper_results.py --smoke`: an RL and a sine experiment's exact commands, 3 iterations."""
    completed = subprocess.run(
        [
            sys.executable,
            "scripts/paper_results.py",
            "--smoke",
            "--only",
            "nav_pg_k5",
            "sine_es_hc",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "[nav_pg_k5-s1] done" in completed.stdout
    assert "[sine_es_hc-s1] done" in completed.stdout


def test_ray_paper_config_matches_nav2d_es() -> None:
    """configs/nav2d_ray.yaml is nav2d_es.yaml on Ray workers: the same task and algorithm."""
    ray, local = (load_config(ROOT / "configs" / f"{n}.yaml") for n in ("nav2d_ray", "nav2d_es"))
    assert ray.task == local.task and ray.adaptation == local.adaptation and ray.meta == local.meta


@pytest.mark.slow
def test_rl_results_smoke_runs_every_command(tmp_path: Path) -> None:
    """`rl_results.py --smoke`: every experiment's exact command with 3 iterations, 2 seeds."""
    completed = subprocess.run(
        [sys.executable, "scripts/rl_results.py", "--smoke", "--only", "nav2d_es_no_norm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "[nav2d_es_no_norm-s1] done" in completed.stdout
