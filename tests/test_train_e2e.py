"""End-to-end training: determinism by seed (in process) and the ``esmaml train`` command, which
must write the documented run directory and exit 0, or exit 2 with a clear message on a bad
override. Every run is tiny (a few ES-MAML iterations of 10-shot sine with a small MLP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from esmaml.cli import main
from esmaml.config import load_config, to_dict
from esmaml.logging.metrics import read_metrics
from esmaml.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
SINE = ROOT / "configs" / "sine.yaml"
ESMAML = Path(sys.executable).with_name("esmaml")
WALL_CLOCK = {"time_s", "iteration_time_s"}

#: Small enough for seconds on a shared 2-core machine, large enough to exercise everything.
SMALL = [
    "iterations=3",
    "evaluation.every=2",
    "evaluation.num_tasks=4",
    "task.test_pool=8",
    "task.params.hidden=[8]",
    "task.params.shots=5",
    "task.params.query_shots=5",
    "meta.params.num_perturbations=8",
    "adaptation.params.num_queries=4",
    "checkpoint.every=2",
    "progress=false",
]


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


def without_wall_clock(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def run_in_process(run_dir: Path, *overrides: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = load_config(SINE, [*SMALL, *overrides])
    summary = Trainer(config, run_dir).train()
    return read_metrics(run_dir / "metrics.jsonl"), summary


# --------------------------------------------------------------------------------------------
# determinism


@pytest.mark.slow
def test_same_seed_same_metrics_different_seed_differs(tmp_path: Path) -> None:
    first, summary_a = run_in_process(tmp_path / "a")
    second, summary_b = run_in_process(tmp_path / "b")
    other, _ = run_in_process(tmp_path / "c", "seed=1")
    assert len(first) == 1 + 3  # the initial evaluation, then 3 iterations
    assert without_wall_clock(first) == without_wall_clock(second)
    assert {k: v for k, v in summary_a.items() if k not in {"run_dir", "time_s"}} == {
        k: v for k, v in summary_b.items() if k not in {"run_dir", "time_s"}
    }
    theta_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["learner"]["theta"]
    theta_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["learner"]["theta"]
    assert torch.equal(theta_a, theta_b)
    changed = [
        key
        for key in ("meta_objective", "grad_norm", "perturbed_mean")
        if any(x[key] != y[key] for x, y in zip(first[1:], other[1:]))
    ]
    assert changed == ["meta_objective", "grad_norm", "perturbed_mean"]


def test_train_and_test_evaluations_differ_without_pools(tmp_path: Path) -> None:
    # Without pools both splits draw fresh tasks; they must not draw the same ones.
    config = load_config(SINE, [*SMALL, "task.train_pool=-1", "task.test_pool=-1"])
    trainer = Trainer(config, tmp_path / "run")
    test = trainer.evaluate()
    train = trainer.evaluate(split="train")
    assert not torch.equal(test.pre, train.pre) and not torch.equal(test.post, train.post)
    key = "eval_pre_adaptation"  # what train_eval_* and eval_* report
    assert test.summary("eval")[key] != train.summary("eval")[key]
    # Each split is still the same evaluation every time.
    for split, first in (("test", test), ("train", train)):
        again = trainer.evaluate(split=split)
        assert torch.equal(again.pre, first.pre) and torch.equal(again.post, first.post), split


# --------------------------------------------------------------------------------------------
# the command line


def esmaml_train(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [str(ESMAML), "train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_esmaml_train_writes_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = esmaml_train(str(SINE), *SMALL, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]

    # config.yaml: the resolved config, loadable and equal to what the command resolved
    resolved = load_config(run_dir / "config.yaml")
    assert to_dict(resolved) == to_dict(load_config(SINE, SMALL))

    # metrics.jsonl: one row per iteration; evaluations on iterations 1 (every=2) and 2 (last)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["iteration"] for row in rows] == [-1, 0, 1, 2]
    assert rows[0]["updates"] == 0 and "eval_post_adaptation" in rows[0]
    rows = rows[1:]
    for row in rows:
        for key in ("iteration", "time_s", "meta_objective", "queries"):
            assert key in row, key
        assert isinstance(row["meta_objective"], float) and row["queries"] > 0
    assert rows[0]["time_s"] <= rows[1]["time_s"] <= rows[2]["time_s"]
    evaluated = [row["iteration"] for row in rows if "eval_post_adaptation" in row]
    assert evaluated == [1, 2]
    for row in rows:
        assert ("eval_pre_adaptation" in row) == (row["iteration"] in evaluated)

    # checkpoint.pt of the last iteration
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 3
    assert torch.isfinite(state["learner"]["theta"]).all()

    # summary.json holds the final evaluation, the same as the last row's
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("eval_pre_adaptation", "eval_post_adaptation"):
        assert summary[key] == pytest.approx(rows[-1][key])
    assert summary["iterations"] == 3
    assert summary["queries_total"] == pytest.approx(sum(row["queries"] for row in rows))


@pytest.mark.slow
def test_esmaml_train_bad_override_exits_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = esmaml_train(str(SINE), "iterations=1", "iteratons=3", "--run-dir", str(run_dir))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("esmaml train: error: override 'iteratons=3'")
    assert "unknown key 'iteratons'; did you mean 'iterations'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("args", "pieces"),
    [
        (["adaptation.operator=foo"], ["adaptation.operator='foo' is unknown", "hill_climbing"]),
        (["meta.params.sigmaa=1"], ["meta.params: unknown key 'sigmaa'", "did you mean 'sigma'"]),
        (["evaluation.every=0"], ["evaluation.every=0 is invalid"]),
        (["iterations"], ["must look like key=value"]),
    ],
)
def test_cli_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], pieces: list[str]
) -> None:
    """The same error path in process (cheaper than a subprocess per case)."""
    code = main(["train", str(SINE), *SMALL, *args, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("esmaml train: error:")
    for piece in pieces:
        assert piece in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_missing_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
