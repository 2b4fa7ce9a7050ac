"""What scripts/sine_results.py and scripts/rl_results.py share: training one run with its
provenance (``--run``), and the captions that name the commands, configs and commit.

Both scripts import this module by name, so run them as scripts (``python scripts/NAME.py``: the
scripts/ folder is then on ``sys.path``). A run is anything with ``name``, ``config`` and
``run_dir``; ``kind`` is its results family (``sine`` or ``rl``), which names the folders
``runs/KIND/NAME`` (git-ignored scratch) and ``results/data/KIND/NAME.json`` (committed).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
THREADS = 1
ENV = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(THREADS)}


class RunSpec(Protocol):
    name: str
    config: str

    @property
    def run_dir(self) -> Path: ...

    @property
    def command(self) -> str: ...  # its train_command()


def train_command(kind: str, name: str, config: str) -> str:
    """The ``esmaml train`` command of one run, as run from the repository root."""
    env = " ".join(f"{key}={value}" for key, value in ENV.items())
    argv = [".venv/bin/esmaml", "train", config, "--run-dir", f"runs/{kind}/{name}"]
    return f"{env} {shlex.join(argv)}"


# ---------------------------------------------------------------------------------------------
# --run: train, record provenance
# ---------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip()


def code_state() -> dict[str, Any]:
    """The commit of the code that runs and the paths that differ from it (results/ excluded:
    the scripts' own outputs)."""
    dirty = git("status", "--porcelain", "--", ".", ":(exclude)results").splitlines()
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(dirty),
        "dirty_paths": dirty,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    import torch

    import esmaml

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": THREADS,
        "esmaml_imported_from": str(Path(esmaml.__file__).parent),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_provenance() -> dict[str, Any]:
    """What every run of one ``--run`` shares: the code's commit and state, the script's
    command, the machine. Exits if esmaml would not import from this checkout."""
    code = code_state()
    provenance = {
        **code,
        "script_command": shlex.join([sys.executable, *sys.argv]),
        **machine(),
        "load_average_note": "os.getloadavg() (1, 5, 15 min) before and after the run",
    }
    if not provenance["esmaml_imported_from"].startswith(str(ROOT)):
        sys.exit(f"esmaml imports from {provenance['esmaml_imported_from']}, not {ROOT}")
    if code["dirty"]:
        print(f"warning: uncommitted changes, recorded: {code['dirty_paths']}", flush=True)
    return provenance


def train(run: RunSpec) -> dict[str, Any]:
    """One ``esmaml train`` (``run.command``) in a fresh ``run.run_dir``; returns its timing
    context."""
    command = run.command
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # runs/KIND is the scripts' (git-ignored) scratch
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    # The esmaml of this interpreter's venv, running this checkout's code (PYTHONPATH first).
    argv = [str(Path(sys.executable).parent / "esmaml"), *shlex.split(command)[3:]]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **ENV, "PYTHONPATH": pythonpath}
    print(f"[{run.name}] {command}", flush=True)
    started, load_before, clock = now(), os.getloadavg(), time.perf_counter()
    log = run.run_dir.parent / f"{run.name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # This child's own CPU time, also when several runs train at once.
        _, status, usage = os.wait4(process.pid, 0)
    wall, cpu = time.perf_counter() - clock, usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"[{run.name}] failed with exit code {code}; see {log}")
    timing = {
        "argv": argv,
        "env": {**ENV, "PYTHONPATH": pythonpath},
        "started": started,
        "finished": now(),
        "process_s": wall,
        "cpu_s": cpu,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
    }
    print(f"[{run.name}] done in {wall:.0f} s ({cpu:.0f} s CPU)", flush=True)
    return timing


def initial_evaluation(run_dir: Path) -> dict[str, float]:
    """The trainer's held-out evaluation of the initial meta-parameters of the run in
    ``run_dir``: its Trainer rebuilt from config.yaml (same seed: same theta and tasks)."""
    import torch

    from esmaml.config import load_config
    from esmaml.training.trainer import Trainer

    torch.set_num_threads(THREADS)
    config = load_config(run_dir / "config.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        return Trainer(config, Path(scratch) / "run").evaluate().summary("eval")


def collect(
    run: RunSpec,
    kind: str,
    timing: dict[str, Any],
    provenance: dict[str, Any],
    *,
    labels: dict[str, Any],
    curves: dict[str, str],
) -> dict[str, Any]:
    """A run's data file: its ``labels``, config, held-out evaluation curves (``curves``: name in
    the file -> metrics.jsonl key; the first is the iteration 0 evaluation of the initial
    meta-parameters), final summary and provenance."""
    import yaml

    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    marker = curves["post"]
    points = [row for row in rows if marker in row]
    if not points or points[0]["iteration"] != -1:
        # A trainer without its iteration -1 row (evaluation.initial=false): evaluate the
        # initial meta-parameters the same way, from a Trainer rebuilt from config.yaml.
        initial = {**initial_evaluation(run.run_dir), "iteration": -1, "time_s": 0.0}
        initial.update(queries_total=0.0, env_steps_total=0.0)  # nothing trained yet
        points = [initial, *points]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    summary["run_dir"] = f"runs/{kind}/{run.name}"
    return {
        "name": run.name,
        **labels,
        "config_file": run.config,
        "command": run.command,
        "config": yaml.safe_load((run.run_dir / "config.yaml").read_text()),
        "final": summary,
        "evals": {  # held-out test pool; iteration = meta-iterations done
            "iteration": [p["iteration"] + 1 for p in points],
            **{name: [p[key] for p in points] for name, key in curves.items()},
        },
        "provenance": {**provenance, **timing},
    }


def run_all(
    runs: Iterable[RunSpec],
    names: list[str] | None,
    data_dir: Path,
    collect_run: Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]],
) -> None:
    """Train each run (all, or those in ``names``) one after another and write its data file
    ``data_dir/NAME.json``: ``collect_run(run, timing, provenance)``."""
    provenance = run_provenance()
    data_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if names and run.name not in names:
            continue
        record = collect_run(run, train(run), provenance)
        (data_dir / f"{record['name']}.json").write_text(json.dumps(record, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Rendering: data files -> captions
# ---------------------------------------------------------------------------------------------


def load_records(
    data_dir: Path, names: Iterable[str], script: str, *, require_all: bool
) -> dict[str, dict[str, Any]]:
    """The data files of ``names`` under ``data_dir``; exits when one (``require_all``) or all
    are missing."""
    records = {}
    for name in names:
        file = data_dir / f"{name}.json"
        if file.is_file():
            records[name] = json.loads(file.read_text())
        elif require_all:
            sys.exit(f"{file} is missing: run `{script} --run` first")
    if not records:
        sys.exit(f"no data under {data_dir}: run `{script} --run` first")
    return records


def code_line(records: list[dict[str, Any]]) -> str:
    """The commit(s) of the runs, with the dirty flag, from their data files."""
    states = {(r["provenance"]["commit"], r["provenance"]["dirty"]) for r in records}
    parts = []
    for commit, dirty in sorted(states):
        # One name per experiment, however many seeds it ran.
        names = list(
            dict.fromkeys(r["name"] for r in records if r["provenance"]["commit"] == commit)
        )
        tree = "uncommitted changes" if dirty else "clean tree"
        who = "" if len(states) == 1 else f" ({', '.join(names)})"
        parts.append(f"commit `{commit[:12]}` ({tree}){who}")
    return "; ".join(parts)


def caption(label: str, text: str, records: list[dict[str, Any]], *, script: str, kind: str) -> str:
    """A table's or figure's caption: what it shows, the commands and configs, the commit."""
    env = " ".join(f"{key}={value}" for key, value in ENV.items())
    configs = ", ".join(f"{r['name']}: `{r['config_file']}`" for r in records)
    return (
        f"*{label}. {text} Produced by `{script} --run` at {code_line(records)}, which ran "
        f"`{env} .venv/bin/esmaml train CONFIG --run-dir runs/{kind}/NAME` for each NAME: CONFIG "
        f"({configs}), one after another; re-rendered by `{script}` from "
        f"`results/data/{kind}/NAME.json` (resolved config, curve, provenance).*"
    )
