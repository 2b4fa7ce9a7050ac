"""A run directory is a trustworthy record: one writer, one config, no lost backups, safe loads.

- One writer: ``esmaml train`` holds an OS lock on its run directory for its whole life. A
  second ``train`` (fresh or ``--resume``) exits 2 naming the holder's pid and host; ``evaluate``
  runs beside it; a SIGKILLed run leaves no stale lock (real processes).
- One config: a resume that changes what defines the experiment is refused naming the keys; an
  allowed change is saved in config.yaml and recorded in resumes.jsonl.
- Checkpoints: rotation never replaces the last readable checkpoint with a corrupt one; a full
  disk or a file-size limit is one line, with the previous checkpoint intact and no .tmp left.
- Loading never runs code: a checkpoint carrying a pickle payload is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from esmaml.cli import main
from esmaml.config import load_config, to_dict
from esmaml.logging.metrics import WALL_CLOCK_FIELDS, read_metrics
from esmaml.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from esmaml.training.lock import LOCK_FILE, RunDirLockedError
from esmaml.training.resume import RESUME_LOG, read_resumes
from esmaml.training.trainer import Trainer, evaluate_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sine.yaml"
TINY = [
    "meta.params.num_perturbations=8",
    "adaptation.params.num_queries=4",
    "task.params.hidden=[8]",
    "iterations=6",
    "checkpoint.every=2",
    "evaluation.every=4",
    "evaluation.num_tasks=8",
    "task.test_pool=8",
    "progress=false",
    "wandb.mode=disabled",
]
TIMEOUT = 300


def tiny_run(run_dir: Path, *overrides: str) -> Path:
    Trainer(load_config(CONFIG, [*TINY, *overrides]), run_dir).train()
    return run_dir


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]


def esmaml(*args: str | Path, cwd: Path, fsize: int | None = None) -> subprocess.Popen[bytes]:
    """``python -m esmaml.cli ARGS`` with this checkout's code first on the path (the installed
    console script may import another checkout), optionally under a file-size limit."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "WANDB_MODE": "disabled",
        "WANDB_ERROR_REPORTING": "false",
        "OMP_NUM_THREADS": "1",
    }

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.Popen(
        [sys.executable, "-m", "esmaml.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr.decode(errors="replace")


def wait_for_rows(process: subprocess.Popen[bytes], path: Path, rows: int) -> None:
    """Block until ``path`` has ``rows`` complete lines; fail if the process ended first."""
    while process.poll() is None:
        try:
            if path.read_bytes().count(b"\n") >= rows:
                return
        except FileNotFoundError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.01)
    raise AssertionError(f"the run ended before {rows} rows: {finish(process)}")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# -- one writer --------------------------------------------------------------------------------


@pytest.mark.slow
def test_second_writer_and_resume_during_a_live_run_exit_2_and_a_sigkilled_run_resumes(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    first = esmaml(
        "train",
        CONFIG,
        *TINY,
        "iterations=100000",
        "checkpoint.every=1",
        "--run-dir",
        run_dir,
        cwd=tmp_path,
    )
    try:
        wait_for_rows(first, metrics, 2)
        holder = f"pid {first.pid} on host {socket.gethostname()}"
        # Another fresh run into the same directory, with another config.
        code, stderr = finish(
            esmaml("train", CONFIG, *TINY, "seed=5", "--run-dir", run_dir, cwd=tmp_path)
        )
        assert code == 2, stderr
        assert len(error_lines(stderr)) == 1 and holder in stderr, stderr
        assert "esmaml train: error: run directory" in stderr and "in use" in stderr
        # A resume of the live run.
        code, stderr = finish(esmaml("train", "--resume", run_dir, cwd=tmp_path))
        assert code == 2 and len(error_lines(stderr)) == 1 and holder in stderr, stderr
        # A reader may run beside the writer.
        out = tmp_path / "eval.json"
        code, stderr = finish(
            esmaml("evaluate", run_dir, "--num-tasks", "2", "--out", out, cwd=tmp_path)
        )
        assert code == 0, stderr
        assert json.loads(out.read_text())["iteration"] >= 1
        assert first.poll() is None  # the first writer was never disturbed
    finally:
        first.kill()
        first.wait(timeout=TIMEOUT)
    assert first.returncode == -signal.SIGKILL
    # The first run's files are its own and consistent with each other.
    assert load_config(run_dir / "config.yaml").seed == 0
    rows = read_metrics(metrics)[1:]  # after the initial evaluation's row (iteration -1)
    assert [row["iteration"] for row in rows] == list(range(len(rows)))
    state, _ = load_checkpoint(run_dir)
    assert len(rows) - 1 <= state["iteration"] <= len(rows)
    assert not (run_dir / "summary.json").exists()
    # The SIGKILLed run left its lock file but no lock: it resumes at once.
    assert (run_dir / LOCK_FILE).exists()
    done = int(state["iteration"])
    assert main(["train", "--resume", str(run_dir), f"iterations={done + 1}"]) == 0
    assert [row["iteration"] for row in read_metrics(metrics)] == list(range(-1, done + 1))
    (entry,) = read_resumes(run_dir)
    assert entry["iteration"] == done
    assert entry["changed"] == {"iterations": {"from": 100000, "to": done + 1}}


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_releases(
    tmp_path: Path,
) -> None:
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    first = Trainer.resume(run_dir, ["iterations=4"])
    with pytest.raises(RunDirLockedError, match=rf"in use by .*pid {os.getpid()} on host "):
        Trainer.resume(run_dir, ["iterations=4"])
    with pytest.raises(RunDirLockedError, match="in use by"):  # a fresh run, too
        Trainer(load_config(CONFIG, TINY), run_dir)
    assert evaluate_run(run_dir, num_tasks=2, out=tmp_path / "eval.json")["iteration"] == 2
    first.train()  # releases the lock when it ends
    assert Trainer.resume(run_dir, ["iterations=4"]).start_iteration == 4


def test_run_dir_that_is_a_file_or_read_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["train", str(CONFIG), *TINY, "--run-dir", str(file)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(["train", str(CONFIG), *TINY, "--run-dir", str(file / "run")]) == 2
    assert f"cannot be created: its parent {str(file)!r} is a file" in capsys.readouterr().err
    # sysfs refuses writes even to root; a chmod'ed directory does for other users.
    read_only = Path("/sys/kernel") if os.geteuid() == 0 else tmp_path / "ro"
    if read_only != Path("/sys/kernel"):
        read_only.mkdir()
        read_only.chmod(0o555)
    if not read_only.is_dir():
        pytest.skip("no read-only directory available")
    assert main(["train", str(CONFIG), *TINY, "--run-dir", str(read_only / "run")]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert main(["train", str(CONFIG), *TINY, "--run-dir", str(read_only)]) == 2
    assert "is not writable" in capsys.readouterr().err


# -- one config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("meta.params.sigma=0.5", "meta.params.sigma"),
        ("adaptation.params.step_size=0.5", "adaptation.params.step_size"),
        ("optimizer.lr=0.5", "optimizer.lr"),
        ("meta.params.method=forward", "meta.params.method"),
        ("meta.params.num_perturbations=4", "meta.params.num_perturbations"),
        ("evaluation.num_tasks=4", "evaluation.num_tasks"),
    ],
)
def test_resume_refuses_a_change_of_the_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture, override: str, key: str
) -> None:
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    saved = (run_dir / "config.yaml").read_text()
    assert main(["train", "--resume", str(run_dir), override, "iterations=4"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1
    assert f"cannot resume with {override.split('=')[0]}=" in err
    assert f"changed experiment keys: {key} (" in err
    assert (run_dir / "config.yaml").read_text() == saved
    assert not (run_dir / RESUME_LOG).exists()
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 1 + 2  # initial row + 2


def test_resume_refuses_an_edited_config_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["meta"]["params"]["sigma"] = 0.9
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "cannot resume with meta.params.sigma=0.9: checkpoint" in err
    assert "changed experiment keys: meta.params.sigma (" in err


def test_allowed_changes_are_saved_and_recorded(tmp_path: Path) -> None:
    run_dir = tiny_run(tmp_path / "run", "iterations=4")
    original = to_dict(load_config(run_dir / "config.yaml"))
    assert main(["train", "--resume", str(run_dir), "iterations=6", "evaluation.every=2"]) == 0
    (entry,) = read_resumes(run_dir)
    assert entry["iteration"] == 4 and entry["checkpoint"] == CHECKPOINT and entry["time"]
    assert entry["changed"] == {
        "evaluation.every": {"from": 4, "to": 2},
        "iterations": {"from": 4, "to": 6},
    }
    # config.yaml holds the run's config now, equal to the last checkpoint's; every key that
    # defines the experiment is the one each row was computed with.
    config = to_dict(load_config(run_dir / "config.yaml"))
    state, _ = load_checkpoint(run_dir)
    assert config == state["config"]
    assert {k: v for k, v in config.items() if k not in ("iterations", "evaluation")} == {
        k: v for k, v in original.items() if k not in ("iterations", "evaluation")
    }
    assert config["evaluation"]["num_tasks"] == original["evaluation"]["num_tasks"]
    # A resume without changes is recorded too.
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert [e["changed"] for e in read_resumes(run_dir)] == [entry["changed"], {}]


def test_a_key_added_to_the_schema_since_the_checkpoint_keeps_the_run_resumable(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint of an older esmaml lacks keys added to the schema since: absent means the
    default, so the run resumes; a value other than the default is a change, refused."""
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    state = read_checkpoint(run_dir / CHECKPOINT)
    del state["config"]["evaluation"]["num_steps"], state["config"]["progress"]
    save_checkpoint(run_dir, state)
    assert main(["train", "--resume", str(run_dir), "iterations=3"]) == 0
    state = read_checkpoint(run_dir / CHECKPOINT)
    del state["config"]["evaluation"]["num_steps"]
    save_checkpoint(run_dir, state)
    assert main(["train", "--resume", str(run_dir), "evaluation.num_steps=3"]) == 2
    assert "changed experiment keys: evaluation.num_steps (" in capsys.readouterr().err


def test_a_run_killed_before_its_first_checkpoint_records_its_new_config(tmp_path: Path) -> None:
    """Without a checkpoint every row is recomputed, so any config may restart it; the change
    is still recorded."""
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    for name in (CHECKPOINT, PREVIOUS, "summary.json"):
        (run_dir / name).unlink(missing_ok=True)
    with pytest.warns(RuntimeWarning, match="restarting it from iteration 0"):
        Trainer.resume(run_dir, ["meta.params.sigma=0.5"]).train()
    (entry,) = read_resumes(run_dir)
    assert entry["iteration"] == 0 and entry["checkpoint"] is None
    assert list(entry["changed"]) == ["meta.params.sigma"]
    assert entry["changed"]["meta.params.sigma"]["to"] == 0.5
    assert load_config(run_dir / "config.yaml").meta.params["sigma"] == 0.5
    assert [row["iteration"] for row in read_metrics(run_dir / "metrics.jsonl")] == [-1, 0, 1]


def test_rows_equal_an_uninterrupted_run_of_the_saved_config(tmp_path: Path) -> None:
    """Extended with iterations, a run's rows are those of one uninterrupted run of its
    config.yaml (evaluations fall on the same rows: iteration 3 is evaluated either way)."""
    run_dir = tiny_run(tmp_path / "run", "iterations=4")
    assert main(["train", "--resume", str(run_dir), "iterations=6", "progress=true"]) == 0
    reference = tmp_path / "reference"
    Trainer(load_config(run_dir / "config.yaml", ["progress=false"]), reference).train()
    assert comparable(read_metrics(run_dir / "metrics.jsonl")) == comparable(
        read_metrics(reference / "metrics.jsonl")
    )


# -- checkpoints -------------------------------------------------------------------------------


def test_corrupt_checkpoint_then_resume_and_save_twice_keeps_a_readable_checkpoint(
    tmp_path: Path,
) -> None:
    run_dir = tiny_run(tmp_path / "run")  # checkpoint.pt at 6, checkpoint.prev.pt at 4
    (run_dir / CHECKPOINT).write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning) as caught:
        trainer = Trainer.resume(run_dir, ["iterations=10"])
    messages = " ".join(str(w.message) for w in caught)
    assert "corrupt or truncated" in messages and "moved the unreadable" in messages
    assert trainer.start_iteration == 4
    corrupt = run_dir / f"{CHECKPOINT}.corrupt"
    assert corrupt.read_bytes() == b"\x00garbage"  # kept for inspection, reported
    saves: list[tuple[int, int]] = []
    checkpoint = trainer.checkpoint

    def checkpoint_and_check(iteration: int) -> Path:
        path = checkpoint(iteration)
        # Right after every save, both files are readable checkpoints.
        latest = read_checkpoint(run_dir / CHECKPOINT)
        previous = read_checkpoint(run_dir / PREVIOUS)
        saves.append((latest["iteration"], previous["iteration"]))
        return path

    trainer.checkpoint = checkpoint_and_check  # type: ignore[method-assign]
    trainer.train()
    assert saves == [(6, 4), (8, 6), (10, 8)]
    assert corrupt.read_bytes() == b"\x00garbage"


def test_save_moves_an_unreadable_checkpoint_aside(tmp_path: Path) -> None:
    state = {"iteration": 1, "learner": {}, "generator": None, "sampler": {}}
    save_checkpoint(tmp_path, state)
    save_checkpoint(tmp_path, {**state, "iteration": 2})
    (tmp_path / CHECKPOINT).write_bytes(b"")  # what a crash during a copy leaves
    moved = r"unreadable; moved it aside to .*checkpoint\.pt\.corrupt"
    with pytest.warns(RuntimeWarning, match=moved):
        save_checkpoint(tmp_path, {**state, "iteration": 3})
    assert read_checkpoint(tmp_path / CHECKPOINT)["iteration"] == 3
    assert read_checkpoint(tmp_path / PREVIOUS)["iteration"] == 1  # the last readable one
    assert (tmp_path / f"{CHECKPOINT}.corrupt").read_bytes() == b""


def temporary_files(run_dir: Path) -> list[Path]:
    return [path for path in run_dir.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("fails", ["checkpoint", "metrics"])
def test_a_file_size_limit_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, fails: str
) -> None:
    run_dir = tiny_run(tmp_path / "run")
    before = (run_dir / CHECKPOINT).read_bytes()
    metrics = (run_dir / "metrics.jsonl").stat().st_size
    # Rows fit and the checkpoint (tens of kB) does not; or the first new row does not fit.
    limit = 16_000 if fails == "checkpoint" else metrics + 200
    assert metrics + 4 * 1000 < 16_000 < len(before)
    process = esmaml("train", "--resume", run_dir, "iterations=10", cwd=tmp_path, fsize=limit)
    code, stderr = finish(process)
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    if fails == "checkpoint":
        assert code == 2
        assert lines[0].startswith("esmaml train: error: cannot write checkpoint ")
        assert "File too large (the previous checkpoint is intact)" in lines[0]
    else:
        assert code == 1
        path = str(run_dir / "metrics.jsonl")
        assert lines[0] == f"esmaml train: error: {path!r}: File too large"
    assert (run_dir / CHECKPOINT).read_bytes() == before
    assert read_checkpoint(run_dir / CHECKPOINT)["iteration"] == 6
    assert temporary_files(run_dir) == []
    # With room again, the run resumes from that checkpoint and completes.
    assert main(["train", "--resume", str(run_dir), "iterations=10"]) == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["iteration"] for row in rows] == list(range(-1, 10))


def test_evaluate_out_must_be_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tiny_run(tmp_path / "run", "iterations=2")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["evaluate", str(run_dir), "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert list(out.iterdir()) == [] and temporary_files(tmp_path) == []


# -- loading never runs code -------------------------------------------------------------------


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def plant_payload(path: Path, marker: Path) -> None:
    """A real checkpoint with a pickle payload added, as an attacker would."""
    state = torch.load(path, weights_only=True)
    state["extra"] = Payload(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("which", [CHECKPOINT, PREVIOUS])
def test_a_checkpoint_with_a_pickle_payload_is_refused_and_never_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture, which: str
) -> None:
    run_dir = tiny_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    plant_payload(run_dir / which, marker)
    if which == PREVIOUS:  # reached only through the fallback from a corrupt latest
        (run_dir / CHECKPOINT).write_bytes(b"\x00")
    # The payload is real: an unsafe load runs it.
    probe = tmp_path / "probe.pt"
    probe.write_bytes((run_dir / which).read_bytes())
    torch.load(probe, weights_only=False)
    assert marker.exists()
    marker.unlink()

    def files() -> dict[str, bytes]:  # the run's files (the lock file names its last holder)
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_FILE}

    before = files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the corrupt latest's fallback
        for command in (["evaluate", str(run_dir)], ["train", "--resume", str(run_dir)]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert len(error_lines(err)) == 1
            assert f"checkpoint {str(run_dir / which)!r} holds a pickled posix.system" in err
            assert "refused, since loading it could run code" in err
            assert not marker.exists()
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(run_dir)
    # Nothing was moved, rotated or rewritten.
    assert files() == before


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path: Path) -> None:
    run_dir = tiny_run(tmp_path / "run")
    raw = torch.load(run_dir / CHECKPOINT, weights_only=True)  # the safe loader reads it all
    assert isinstance(raw["rng"]["numpy"][1], dict)  # numpy's key array, stored as a tensor
    state = read_checkpoint(run_dir / CHECKPOINT)
    kind, keys, *_ = state["rng"]["numpy"]
    assert kind == "MT19937" and keys.dtype.name == "uint32" and keys.shape == (624,)
    np.random.set_state(state["rng"]["numpy"])  # restores
    with pytest.raises(TypeError, match=r"state\['bad'\] holds a .*Payload"):
        save_checkpoint(tmp_path, {**state, "bad": Payload(tmp_path / "x")})
    assert temporary_files(tmp_path) == []


def test_a_checkpoint_of_an_older_esmaml_still_resumes(tmp_path: Path) -> None:
    """Before safe loading, checkpoints pickled numpy's RNG key array; that array type alone is
    allow-listed, so such runs resume. A numpy object array (arbitrary pickles inside) is not."""
    run_dir = tiny_run(tmp_path / "run", "iterations=4")
    state = read_checkpoint(run_dir / CHECKPOINT)
    assert isinstance(state["rng"]["numpy"][1], np.ndarray)
    torch.save(state, run_dir / CHECKPOINT)  # what the old save_checkpoint wrote
    assert Trainer.resume(run_dir, ["iterations=6"]).start_iteration == 4
    torch.save({**state, "extra": np.array([1, "a"], dtype=object)}, run_dir / CHECKPOINT)
    with pytest.raises(UnsafeCheckpointError, match=r"holds a pickled numpy\.dtypes\.ObjectDType"):
        read_checkpoint(run_dir / CHECKPOINT)


def test_a_directory_or_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
