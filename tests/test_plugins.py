"""Plugging in a user's own components without touching the package.

Real processes, no mocks: the ``esmaml`` command runs in a copy of ``examples/custom_task`` (its
family and env named ``module:Name`` in YAML, found from the working directory), is SIGKILLed
mid-run, then resumed and evaluated by fresh processes; and the same folder installed as a
small package gets short names through entry points. In-process tests cover the registry, its
errors and the Python API.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import esmaml
from esmaml.config import ConfigError
from esmaml.registry import KINDS, entries, resolve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_task"
ESMAML = Path(sys.executable).with_name("esmaml")
RUN_DIR = ("--run-dir", "runs/run")
# Offline, into a folder of its own: importlib.metadata finds the dist-info on sys.path.
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation")
PIP_INSTALL += ("--no-index",)


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "user"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    return folder


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_ERROR_REPORTING="false")
    env.update(extra)
    return env


def esmaml_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``esmaml ARGS`` (the console script: no ``python -m`` path magic) to success."""
    done = subprocess.run(
        [str(ESMAML), *args],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"esmaml {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def checkpointed_iteration(run_dir: Path) -> int:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return int(state["iteration"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["linreg.yaml", "goal_line.yaml"])
def test_user_folder_trains_is_killed_resumes_and_evaluates(tmp_path: Path, config: str) -> None:
    folder = user_folder(tmp_path)
    run_dir = folder / "runs" / "run"
    # Far more iterations than it gets to run: the process is killed mid-run.
    process = subprocess.Popen(
        [str(ESMAML), "train", config, "iterations=100000", "progress=false", *RUN_DIR],
        cwd=folder,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        written = metrics.exists() and len(metrics.read_text().splitlines()) >= 4
        if written and (run_dir / "checkpoint.pt").exists():
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before the kill: {process.communicate()[1]}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    recorded = (run_dir / "config.yaml").read_text()
    assert "linreg:LinearRegressionTasks" in recorded or "goal_line:GoalLine" in recorded

    done = checkpointed_iteration(run_dir)
    assert done >= 1
    # A fresh process finds the user's classes again from config.yaml's module:Name.
    esmaml_cli("train", "--resume", "runs/run", f"iterations={done + 2}", cwd=folder)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == done + 1
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == done + 2
    assert (run_dir / "resumes.jsonl").exists()

    out = esmaml_cli("evaluate", "runs/run", "--num-tasks", "4", cwd=folder)
    assert "wrote" in out
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["iteration"] == done + 2 and result["num_tasks"] == 4


@pytest.mark.slow
def test_installed_package_adds_components_through_entry_points(tmp_path: Path) -> None:
    package, site = user_folder(tmp_path), tmp_path / "site"
    subprocess.run(
        [*PIP_INSTALL, "--target", str(site), str(package)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"  # not the package's folder: only the entry points help
    elsewhere.mkdir()
    for name in ("linreg.yaml", "goal_line.yaml"):
        text = (package / name).read_text()
        text = text.replace("linreg:LinearRegressionTasks", "linreg")
        text = text.replace("goal_line:GoalLine", "GoalLine")
        (elsewhere / name).write_text(text)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = environment(PYTHONPATH=path)

    listing = esmaml_cli("list", "tasks", "envs", cwd=elsewhere, env=env)
    assert "linreg(dim=4, shots=5, query_shots=10)" in listing
    assert "entry point of esmaml-custom-task-example" in listing
    assert "GoalLine(" in listing and "1-D point moving to a goal" in listing

    esmaml_cli("train", "linreg.yaml", "iterations=3", "--run-dir", "lr", cwd=elsewhere, env=env)
    assert "family: linreg\n" in (elsewhere / "lr" / "config.yaml").read_text()
    esmaml_cli("evaluate", "lr", "--num-tasks", "4", cwd=elsewhere, env=env)
    esmaml_cli("train", "goal_line.yaml", "iterations=2", "--run-dir", "gl", cwd=elsewhere, env=env)
    # Without the package on the path, the short name is unknown and says what is valid.
    failed = subprocess.run(
        [str(ESMAML), "evaluate", "lr"], cwd=elsewhere, env=environment(), capture_output=True
    )
    assert failed.returncode == 2
    assert b"task.family='linreg' is unknown" in failed.stderr


# -- in process: the registry and the Python API ----------------------------------------------
@pytest.fixture
def in_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = user_folder(tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    for module in ("linreg", "goal_line", "point_goal"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return folder


def test_user_gymnasium_env_trains_with_plain_esmaml(tmp_path: Path) -> None:
    """point_goal.py: a plain gymnasium.Env with the task interface, named module:Name."""
    folder = user_folder(tmp_path)
    esmaml_cli("train", "point_goal.yaml", "iterations=2", "progress=false", *RUN_DIR, cwd=folder)
    run_dir = folder / "runs" / "run"
    assert "env: point_goal:PointGoal" in (run_dir / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [-1, 0, 1]
    assert -20 * 3.0 < rows[0]["eval_return_post_adaptation"] < 0  # 20 steps, distance < 3


def test_user_gymnasium_env_passes_gymnasiums_checker(in_example: Path) -> None:
    import warnings

    from gymnasium.utils.env_checker import check_env

    from esmaml.rl.family import GymMetaEnv, RLFamily

    env = resolve("envs", "point_goal:PointGoal")()
    assert isinstance(env, GymMetaEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    tasks = env.sample_tasks(3, seed=0)
    assert tasks == env.sample_tasks(3, seed=0) and tasks != env.sample_tasks(3, seed=1)
    env.task = tasks[1]
    assert env.task == tasks[1]
    family = RLFamily("point_goal:PointGoal", horizon=4)
    assert family.meta_env and family.num_params == 2 * 2 + 2


def test_import_paths_resolve_from_the_working_directory(in_example: Path) -> None:
    family = resolve("tasks", "linreg:LinearRegressionTasks")
    assert family.__name__ == "LinearRegressionTasks"
    from esmaml.rl.family import RLFamily

    rl = RLFamily("goal_line:GoalLine", horizon=5)
    assert type(rl.env).__name__ == "GoalLine" and rl.num_params == 2


def test_python_api_register_and_train(in_example: Path) -> None:
    LinearRegressionTasks = resolve("tasks", "linreg:LinearRegressionTasks")

    class Tiny(LinearRegressionTasks):
        """A registered family."""

    esmaml.register("tasks", "tiny_linreg_test", Tiny)
    try:
        assert entries("tasks")["tiny_linreg_test"] is Tiny
        config = {
            "task": {"family": "tiny_linreg_test", "params": {"dim": 2}, "test_pool": 4},
            "adaptation": {"params": {"num_queries": 4}},
            "meta": {"params": {"num_perturbations": 4}},
            "evaluation": {"num_tasks": 4},
            "wandb": {"mode": "disabled"},
            "progress": False,
        }
        summary = esmaml.train(config, iterations=2, task__params__shots=3, run_dir="api")
        assert summary["iterations"] == 2 and "eval_post_adaptation" in summary
        assert "shots: 3" in (in_example / "api" / "config.yaml").read_text()
        # the decorator form; a taken name needs replace=True
        with pytest.raises(ValueError, match="already registered"):
            esmaml.register("tasks", "tiny_linreg_test")(LinearRegressionTasks)
    finally:
        KINDS["tasks"].registered.pop("tiny_linreg_test", None)


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("tasks", "nosuchmodule:Thing", "no module named 'nosuchmodule'"),
        ("tasks", "linreg:LinearRegresionTasks", "did you mean 'LinearRegressionTasks'"),
        ("tasks", "sine_", "did you mean 'sine'"),
        ("adaptation", "linreg:LinearRegressionTasks", "not a subclass of"),
        ("envs", "linreg:LinearRegressionTasks", "BatchedMetaEnv"),
        ("optimizers", "adamw2", "did you mean 'adamw'"),
        ("policies", "goal_line:GoalLine", "esmaml.rl.policies.Policy"),
    ],
)
def test_registry_errors_name_the_key_and_what_is_valid(
    in_example: Path, kind: str, name: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        resolve(kind, name)
    assert str(error.value).startswith(f"{KINDS[kind].key}={name!r}")


def test_import_esmaml_registers_the_gymnasium_ids() -> None:
    code = "import esmaml, gymnasium; print('esmaml/Navigation2D-v0' in gymnasium.registry)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr


def test_layers_import_one_way() -> None:
    """The zero-order core, the evaluators and the meta-learners never import training, and the
    Ray evaluator's module imports neither the config nor training."""
    code = (
        "import sys, esmaml.evaluators.ray_backend, esmaml.meta, esmaml.zero_order, esmaml.nn; "
        "print(sorted(m for m in sys.modules if m.startswith('esmaml.training')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    tree = ast.parse((ROOT / "esmaml" / "evaluators" / "ray_backend.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {m for m in imported if m and m.startswith(("esmaml.config", "esmaml.training"))}


def test_gymnasium_ids_and_classes_are_envs() -> None:
    """A registered gymnasium id, or an Env class by import path (found by its registration),
    without the task interface: a one-task distribution on gymnasium's vector path."""
    from esmaml.rl.family import RLFamily

    params = torch.zeros(2, 4 + 1) + torch.tensor([[0.0], [0.5]])
    losses = []
    for env in ("Pendulum-v1", "gymnasium.envs.classic_control.pendulum:PendulumEnv"):
        family = RLFamily(env, horizon=4, normalize_observations=False)
        assert family.gym_id == "Pendulum-v1" and not family.meta_env
        tasks = family.sample_tasks(2, generator=torch.Generator().manual_seed(0))
        losses.append(family.loss(params[:, : family.num_params], tasks, torch.arange(2)))
    torch.testing.assert_close(losses[0], losses[1])


def test_policy_by_registered_name(in_example: Path) -> None:
    from esmaml.rl.family import RLFamily
    from esmaml.rl.policies import MLPPolicy

    class Doubled(MLPPolicy):
        """Twice the MLP policy's parameters."""

        def init_params(self, generator: torch.Generator | None = None) -> torch.Tensor:
            return super().init_params(generator) + 1.0

    esmaml.register("policies", "doubled_test", Doubled)
    try:
        family = RLFamily("goal_line:GoalLine", policy="doubled_test", horizon=3)
        assert isinstance(family.policy, Doubled)
        assert bool((family.init_params() == 1.0).all())  # the scaled init's zero layer, + 1
    finally:
        KINDS["policies"].registered.pop("doubled_test", None)


def test_component_factory_rebuilds_user_components_anywhere(in_example: Path) -> None:
    """What a Ray worker does: unpickle the factory in another process and directory, build."""
    import pickle

    from esmaml.config import load_config
    from esmaml.training.builders import ComponentFactory

    factory = ComponentFactory(load_config(in_example / "goal_line.yaml"))
    payload = in_example / "factory.pkl"
    payload.write_bytes(pickle.dumps(factory))
    code = (
        "import pickle, sys; family, adaptation = pickle.load(open(sys.argv[1], 'rb'))(); "
        "print(type(family.env).__name__, type(adaptation).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(payload)], cwd="/", capture_output=True, text=True
    )
    assert done.stdout.split() == ["GoalLine", "ESGradientAdaptation"], done.stderr


def test_registry_knows_every_builtin_env() -> None:
    """The envs package's own catalogue (its gymnasium ids) and the registry agree."""
    import envs

    names = {
        spec.split("/")[1].rsplit("-v", 1)[0] for spec in (*envs.ENV_IDS, *envs.MUJOCO_ENV_IDS)
    }
    assert names == set(KINDS["envs"].builtins)
    for name in envs.BATCHED_ENVS:
        assert resolve("envs", name) is envs.BATCHED_ENVS[name]
