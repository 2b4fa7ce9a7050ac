"""Checkpoint and resume: a killed run, resumed, reproduces an uninterrupted one row for row.

The subprocess tests run the real ``esmaml train`` command: one killed with SIGKILL at a random
row count, one stopped with SIGTERM (exit 143, checkpoint at exit); each is then resumed with
``esmaml train --resume`` (in this process, to spare a second torch import) and compared with an
uninterrupted run of the same config and seed. The in-process tests cover SIGINT, corrupt
checkpoints and a run killed before its first checkpoint.

Rows are compared on every field except the wall-clock ones (``time_s``,
``iteration_time_s``), which cannot match.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from esmaml.cli import main
from esmaml.config import ConfigError, load_config
from esmaml.logging.metrics import WALL_CLOCK_FIELDS, read_metrics
from esmaml.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from esmaml.training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sine.yaml"
# The brief's small run: 12 iterations, a checkpoint every 3, an evaluation every 4.
SMALL = [
    "meta.params.num_perturbations=8",
    "adaptation.params.num_queries=4",
    "iterations=12",
    "checkpoint.every=3",
    "evaluation.every=4",
    "evaluation.num_tasks=8",
    "task.test_pool=8",
    "progress=false",
    "wandb.mode=disabled",
]
# In-process runs: a smaller model, so each test takes a fraction of a second of compute.
TINY = [*SMALL, "task.params.hidden=[8]", "iterations=6", "checkpoint.every=2"]
TIMEOUT = 300


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]


def count_rows(path: Path) -> int:
    """Complete lines of metrics.jsonl (a torn last line has no newline yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def esmaml_train(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """``esmaml train ARGS`` in a subprocess with this process's intra-op thread count (float
    reductions may split differently with another count)."""
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "WANDB_ERROR_REPORTING": "false",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "esmaml.cli", "train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr.decode(errors="replace")


def wait_for_rows(process: subprocess.Popen[bytes], path: Path, rows: int) -> int:
    """Poll until ``path`` has ``rows`` complete lines (or the process ended); returns them."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        seen = count_rows(path)
        if seen >= rows or process.poll() is not None:
            return seen
        time.sleep(0.002)
    raise TimeoutError(f"{path} did not reach {rows} rows")


def checkpoint_iteration(run_dir: Path) -> int | None:
    if not (run_dir / CHECKPOINT).exists() and not (run_dir / PREVIOUS).exists():
        return None
    state, _ = load_checkpoint(run_dir)
    return int(state["iteration"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The uninterrupted run, in this process (subprocesses use the same thread count)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    Trainer(load_config(CONFIG, SMALL), run_dir).train()
    return read_metrics(run_dir / "metrics.jsonl")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:no checkpoint in:RuntimeWarning")  # killed before the first
def test_sigkill_at_random_row_then_resume_matches_uninterrupted(
    reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    seed = int(os.environ.get("ESMAML_KILL_SEED", time.time_ns() % 2**32))
    kill_at = random.Random(seed).randint(1, 11)  # rows written before the kill
    run_dir = tmp_path / "killed"
    metrics = run_dir / "metrics.jsonl"
    process = esmaml_train(str(CONFIG), *SMALL, "--run-dir", str(run_dir), cwd=tmp_path)
    seen = wait_for_rows(process, metrics, kill_at)
    os.kill(process.pid, signal.SIGKILL)
    code, stderr = finish(process)
    context = f"ESMAML_KILL_SEED={seed} kill_at={kill_at} seen={seen}"
    assert code == -signal.SIGKILL, f"the run ended before the kill ({context}): {stderr}"
    before = metrics.read_text().splitlines(keepends=True)
    written = [line for line in before if line.endswith("\n")]
    resumed_from = checkpoint_iteration(run_dir) or 0
    every = 3
    # At most the iterations since the last checkpoint are recomputed (after the initial row).
    assert 0 <= len(written) - 1 - resumed_from <= every, context

    # The resume runs in this process (the same command line, without a second torch import).
    assert main(["train", "--resume", str(run_dir)]) == 0, context
    after = metrics.read_text().splitlines(keepends=True)
    rows = read_metrics(metrics)
    # Nothing written before the checkpoint is lost or rewritten, nothing is duplicated.
    assert after[: resumed_from + 1] == written[: resumed_from + 1], context
    assert [row["iteration"] for row in rows] == list(range(-1, 12)), context
    assert comparable(rows) == comparable(reference), (context, first_difference(rows, reference))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 12


@pytest.mark.slow
def test_sigterm_checkpoints_at_exit_with_status_143_then_resumes(
    reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    run_dir = tmp_path / "terminated"
    metrics = run_dir / "metrics.jsonl"
    # No periodic checkpoint before the end: the one found after SIGTERM is the exit checkpoint.
    process = esmaml_train(
        str(CONFIG), *SMALL, "checkpoint.every=1000", "--run-dir", str(run_dir), cwd=tmp_path
    )
    seen = wait_for_rows(process, metrics, 2)
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    rows = read_metrics(metrics)
    saved = checkpoint_iteration(run_dir)
    context = f"rows seen {seen}, rows {len(rows)}, checkpoint {saved}, exit {code}: {stderr}"
    assert code == 143, context
    assert 3 <= len(rows) < 13, context
    assert saved == len(rows) - 1, context  # every written row is checkpointed (+ initial)

    assert main(["train", "--resume", str(run_dir)]) == 0
    resumed = read_metrics(metrics)
    assert comparable(resumed) == comparable(reference), (
        context,
        first_difference(resumed, reference),
    )


def first_difference(rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> str:
    """Where two runs' rows first differ (for a failure message)."""
    for a, b in zip(comparable(rows), comparable(reference)):
        if a != b:
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            return f"iteration {a.get('iteration')}: " + ", ".join(
                f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys
            )
    return f"{len(rows)} rows vs {len(reference)}"


# -- in-process ------------------------------------------------------------------------------


def tiny_run(run_dir: Path, *overrides: str) -> Trainer:
    trainer = Trainer(load_config(CONFIG, [*TINY, *overrides]), run_dir)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    tiny_run(run_dir)
    return read_metrics(run_dir / "metrics.jsonl")


def test_checkpoint_holds_every_state(tmp_path: Path) -> None:
    trainer = tiny_run(tmp_path / "run")
    state, path = load_checkpoint(trainer.run_dir)
    assert path.name == CHECKPOINT and state["iteration"] == 6
    assert {"learner", "generator", "rng", "sampler", "family", "totals", "wandb_id"} <= set(state)
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert "optimizer" in state["learner"] and state["learner"]["optimizer"]["state"]
    assert torch.equal(state["learner"]["theta"], trainer.learner.parameters_flat())
    previous = torch.load(trainer.run_dir / PREVIOUS, weights_only=False)
    assert previous["iteration"] == 4  # the one before is kept


def test_sigint_checkpoints_and_exits_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(load_config(CONFIG, [*TINY, "iterations=200"]), run_dir)

    def interrupt() -> None:
        while count_rows(run_dir / "metrics.jsonl") < 1:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exit_info:
        trainer.train()
    thread.join()
    assert exit_info.value.code == 130
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["iteration"] >= 0]
    assert 1 <= len(rows) < 200
    assert checkpoint_iteration(run_dir) == len(rows)


def test_sigint_in_the_last_iteration_finishes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(load_config(CONFIG, TINY), run_dir)
    iterations = trainer.config.iterations
    step = trainer.learner.step
    calls = []

    def step_then_interrupt(tasks: Any) -> Any:
        calls.append(None)
        if len(calls) == iterations:
            signal.raise_signal(signal.SIGINT)  # handled before this iteration completes
        return step(tasks)

    monkeypatch.setattr(trainer.learner, "step", step_then_interrupt)
    summary = trainer.train()  # no SystemExit: nothing is left to resume
    assert trainer._stop_signal == signal.SIGINT  # the signal did arrive
    assert summary["iterations"] == iterations
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == iterations
    assert len(read_metrics(run_dir / "metrics.jsonl")) == iterations + 1  # + the initial row
    assert checkpoint_iteration(run_dir) == iterations


def test_corrupt_checkpoint_falls_back_to_previous(
    tmp_path: Path, tiny_reference: list[dict[str, Any]]
) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir)
    data = (run_dir / CHECKPOINT).read_bytes()
    (run_dir / CHECKPOINT).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match=r"checkpoint\.pt.*corrupt or truncated"):
        trainer = Trainer.resume(run_dir)
    assert trainer.start_iteration == 4 and trainer.checkpoint_path == run_dir / PREVIOUS
    trainer.train()
    assert comparable(read_metrics(run_dir / "metrics.jsonl")) == comparable(tiny_reference)


def test_corrupt_checkpoint_without_previous_names_the_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "checkpoint.keep_previous=false")
    assert not (run_dir / PREVIOUS).exists()
    (run_dir / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt' is corrupt or truncated"):
        Trainer.resume(run_dir)


def test_cli_reports_a_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "checkpoint.keep_previous=false")
    (run_dir / CHECKPOINT).write_bytes(b"")
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "error: checkpoint" in err and str(run_dir / CHECKPOINT) in err


def test_killed_before_first_checkpoint_restarts_from_zero(
    tmp_path: Path, tiny_reference: list[dict[str, Any]]
) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir)
    # What a SIGKILL during iteration 1 leaves: the config, one row, a torn line, no checkpoint.
    for name in (CHECKPOINT, PREVIOUS, "summary.json"):
        (run_dir / name).unlink()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text(lines[0] + lines[1][:10])
    with pytest.warns(RuntimeWarning, match="restarting it from iteration 0"):
        trainer = Trainer.resume(run_dir)
    trainer.train()
    assert comparable(read_metrics(run_dir / "metrics.jsonl")) == comparable(tiny_reference)


def test_resume_with_override_extends_the_run(
    tmp_path: Path, tiny_reference: list[dict[str, Any]]
) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "iterations=4")
    # The override sits where argparse puts CONFIG: it must be read as an override.
    assert main(["train", "--resume", str(run_dir), "iterations=6"]) == 0
    # Iteration 3 was evaluated either way (evaluation.every=4), so nothing differs.
    assert comparable(read_metrics(run_dir / "metrics.jsonl")) == comparable(tiny_reference)
    assert load_config(run_dir / "config.yaml").iterations == 6  # saved for the next resume


def test_resume_refuses_other_task_pool_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "iterations=2")  # task.train_pool=-1, task.test_pool=8
    saved = (run_dir / "config.yaml").read_text()
    checkpoint = str(run_dir / CHECKPOINT)
    with pytest.raises(ConfigError) as raised:
        Trainer.resume(run_dir, ["task.test_pool=20"])
    assert str(raised.value) == (
        f"cannot resume with task.test_pool=20: checkpoint {checkpoint!r} holds "
        "task.test_pool=8; changed experiment keys: task.test_pool (a resume may change only "
        "name, iterations, progress, run_dir, evaluation.every, checkpoint.*, wandb.*, "
        "evaluator.*); resume with the checkpoint's values or start a new run"
    )
    both = r"task\.test_pool=3, task\.train_pool=5: .* holds task\.test_pool=8, task\.train_pool=-1"
    with pytest.raises(ConfigError, match=both):
        Trainer.resume(run_dir, ["task.train_pool=5", "task.test_pool=3"])
    assert main(["train", "--resume", str(run_dir), "task.train_pool=5"]) == 2
    assert "holds task.train_pool=-1" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == saved  # the refused override is not saved
    # The checkpoint's own values are fine.
    assert Trainer.resume(run_dir, ["task.test_pool=8", "iterations=3"]).start_iteration == 2
    # So is the seed: the generators come back from the checkpoint, so another would only
    # move the evaluation tasks.
    with pytest.raises(ConfigError, match=r"cannot resume with seed=7: .* holds seed=0"):
        Trainer.resume(run_dir, ["seed=7"])
    assert Trainer.resume(run_dir, ["seed=0"]).start_iteration == 2
    # Fewer iterations than the checkpoint completed would rewrite config.yaml and the summary.
    saved = (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"iterations=1: .* has already completed 2"):
        Trainer.resume(run_dir, ["iterations=1"])
    assert (run_dir / "config.yaml").read_text() == saved
    assert Trainer.resume(run_dir, ["iterations=2"]).start_iteration == 2


def test_resume_refuses_a_new_learning_rate(tmp_path: Path) -> None:
    """Rows before and after the resume would use different rates while config.yaml names one:
    optimizer.lr defines the experiment, so a resume refuses to change it."""
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "iterations=2")
    saved = (run_dir / "config.yaml").read_text()
    with pytest.raises(
        ConfigError,
        match=r"cannot resume with optimizer\.lr=0\.00123: .* holds "
        r"optimizer\.lr=0\.01; changed experiment keys: optimizer\.lr ",
    ):
        Trainer.resume(run_dir, ["optimizer.lr=0.00123", "iterations=3"])
    assert (run_dir / "config.yaml").read_text() == saved
    assert not (run_dir / "resumes.jsonl").exists()  # a refused resume is not recorded


def test_fresh_run_refuses_an_existing_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny_run(run_dir, "iterations=2")
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(load_config(CONFIG, TINY), run_dir)


def test_save_keeps_a_valid_checkpoint_at_every_step(tmp_path: Path) -> None:
    state = {"iteration": 1, "learner": {}, "generator": None, "sampler": {}}
    save_checkpoint(tmp_path, state)
    save_checkpoint(tmp_path, {**state, "iteration": 2})
    loaded, path = load_checkpoint(tmp_path)
    assert loaded["iteration"] == 2 and path.name == CHECKPOINT
    assert torch.load(tmp_path / PREVIOUS, weights_only=False)["iteration"] == 1
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


# The CPU twin runs everywhere: the CUDA-only version went stale unnoticed (it predated the
# iteration -1 row) until a GPU machine ran it.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", ["sine.yaml", "nav2d_smoke.yaml"])
def test_run_resumes_and_evaluates_on_the_device(config: str, device: str, tmp_path: Path) -> None:
    """Checkpoints load on the CPU; the task pools and normalisation statistics must go back to
    the device, or resuming and ``esmaml evaluate`` mix devices."""
    path = CONFIG.parent / config
    overrides = [f"device={device}", "iterations=2", "checkpoint.every=1", "progress=false"]
    overrides += ["wandb.mode=disabled", "evaluation.every=2", "evaluation.num_tasks=4"]
    run_dir = tmp_path / "run"
    Trainer(load_config(path, overrides), run_dir).train()
    resumed = Trainer.resume(run_dir, ["iterations=3"])
    resumed.train()
    assert main(["evaluate", str(run_dir), "--num-tasks", "4"]) == 0
    # The initial evaluation (iteration -1), then iterations 0, 1 and the resumed 2.
    assert [row["iteration"] for row in read_metrics(run_dir / "metrics.jsonl")] == [-1, 0, 1, 2]
