"""The bad-input audit: every row of docs/bad_inputs.md, each asserting the exception type and a
fragment of its message.

Run ``python tests/test_bad_inputs.py > docs/bad_inputs.md`` to regenerate the table from what
the code raises today (the test below checks every row id is listed there).

Command-line rows run ``esmaml.cli.main`` in this process; a non-zero exit becomes
:class:`CLIExit` whose message is ``exit <status>: <stderr>``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import esmaml
from esmaml.adaptation import (
    ESGradientAdaptation,
    GradientDescentAdaptation,
    HillClimbingAdaptation,
    sample_k_dpp,
)
from esmaml.cli import main
from esmaml.config import ConfigError, load_config
from esmaml.meta.es_maml import ESMAML
from esmaml.meta.first_order import FirstOrderESMAML
from esmaml.nn import ZeroOrderGradientModule, enable_zero_order_gradients
from esmaml.registry import resolve
from esmaml.tasks.base import validate_tasks
from esmaml.tasks.sampler import TaskSampler
from esmaml.tasks.sine import NonDifferentiableSine, SineRegression
from esmaml.training.checkpoint import CheckpointError, read_checkpoint
from esmaml.training.trainer import Trainer
from esmaml.zero_order.evaluation import ObjectiveShapeError, ObjectiveTypeError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sine.yaml"
DOC = ROOT / "docs" / "bad_inputs.md"
MAML_CONFIG = ROOT / "configs" / "sine_maml.yaml"
NAV_CONFIG = ROOT / "configs" / "nav2d_smoke.yaml"
NAV_TINY = ["iterations=1", "progress=false", "wandb.mode=disabled"]
MAML_TINY = ["iterations=2", "task.params.hidden=[8]", "progress=false", "wandb.mode=disabled"]
TINY = [
    "meta.params.num_perturbations=4",
    "adaptation.params.num_queries=2",
    "task.params.hidden=[8]",
    "iterations=2",
    "checkpoint.every=1",
    "evaluation.every=2",
    "evaluation.num_tasks=2",
    "task.test_pool=2",
    "progress=false",
    "wandb.mode=disabled",
]


class CLIExit(Exception):
    """``esmaml`` exited with a non-zero status; the message holds it and stderr."""


class Context:
    """Scratch files for the rows: a directory, and a tiny trained run made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._count = 0

    def path(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count}-{name}"

    def file(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text)
        return path

    def bytes_file(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    @cached_property
    def run_dir(self) -> Path:
        run_dir = self.root / "tiny-run"
        Trainer(load_config(CONFIG, TINY), run_dir).train()
        return run_dir

    def empty_run_dir(self) -> Path:
        """A run directory with its config but no checkpoint (killed at once)."""
        path = self.path("run")
        path.mkdir()
        (path / "config.yaml").write_text((self.run_dir / "config.yaml").read_text())
        return path


def cli(*argv: str | Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's own errors
            status = exit_.code if isinstance(exit_.code, int) else 1
    if status:
        # argparse prints its usage line(s) first; the error line is what a user reads.
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        raise CLIExit(f"exit {status}: {' '.join(lines) or err.getvalue().strip()}")


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    input: str
    error: type[BaseException]
    match: str
    call: Callable[[Context], Any]


# -- helpers that the rows call ----------------------------------------------------------------


def family() -> SineRegression:
    return SineRegression(hidden=(4,))


def tasks(n: int = 2) -> dict[str, torch.Tensor]:
    return family().sample_tasks(n, generator=torch.Generator().manual_seed(0))


def params(batch: int = 2) -> torch.Tensor:
    return torch.zeros(batch, family().num_params)


def decorated(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    return esmaml.zero_order(**{"num_samples": 2, **options})(fn)


def backward(fn: Callable[..., Any], *args: Any, **options: Any) -> None:
    decorated(fn, **options)(*args).backward()


def theta() -> torch.Tensor:
    return torch.zeros(3, requires_grad=True)


def module_without_parameters() -> None:
    class Empty(ZeroOrderGradientModule, num_samples=2):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    Empty()(torch.ones(2))


def enable_twice() -> None:
    class Net(ZeroOrderGradientModule, num_samples=2):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

        def forward(self) -> torch.Tensor:
            return self.w.sum()

    enable_zero_order_gradients(Net)


def module_bad_option() -> None:
    class Net(ZeroOrderGradientModule, method="central"):
        def forward(self) -> torch.Tensor:
            return torch.zeros(())


def module_without_forward() -> None:
    class Net(nn.Module):
        pass

    enable_zero_order_gradients(Net)


def wrong_sample_shape() -> None:
    backward(lambda p: (p**2).sum(), theta(), distribution=lambda shape: torch.zeros(3))


def nan_objective() -> None:
    backward(lambda p: (p / 0 * 0).sum(), theta())


def corrupt_checkpoint_cli(ctx: Context) -> None:
    run_dir = ctx.path("corrupt")
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text((ctx.run_dir / "config.yaml").read_text())
    (run_dir / "checkpoint.pt").write_bytes(b"\x00" * 10)
    cli("train", "--resume", run_dir)


def resume_with_other_model(ctx: Context) -> None:
    run_dir = ctx.path("copy")
    run_dir.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (run_dir / name).write_bytes((ctx.run_dir / name).read_bytes())
    Trainer.resume(run_dir, ["task.params.hidden=[16]"])


def resume_with(override: str) -> Callable[[Context], None]:
    def resume(ctx: Context) -> None:
        run_dir = ctx.path("copy")
        run_dir.mkdir(exist_ok=True)
        for name in ("config.yaml", "checkpoint.pt"):
            (run_dir / name).write_bytes((ctx.run_dir / name).read_bytes())
        Trainer.resume(run_dir, [override])

    return resume


def foreign_checkpoint(ctx: Context) -> None:
    path = ctx.path("foreign.pt")
    torch.save({"model": torch.zeros(2)}, path)
    read_checkpoint(path)


def mujoco_batch(env: str, num_sims: int) -> Any:
    from envs.mujoco_batch import MujocoMetaBatch

    return MujocoMetaBatch(env, num_sims, threads=1)


def mujoco_batch_bad_actions() -> None:
    batch = mujoco_batch("HalfCheetahForwardBackward", 2)
    batch.set_tasks([{"direction": 1.0}, {"direction": -1.0}])
    batch.reset([0, 1])
    batch.step(np.zeros((2, 5), np.float32))


def rl_family(env: str = "Navigation2D", **kwargs: Any) -> Any:
    from esmaml.rl import RLFamily

    return RLFamily(env, **kwargs)


def navigation(**kwargs: Any) -> Any:
    from envs import Navigation2D

    return Navigation2D(**kwargs)


def broken_entry_point(ctx: Context) -> Any:
    """An installed distribution (a dist-info on sys.path) whose esmaml.tasks entry point
    names a module that does not exist."""
    site = ctx.path("site")
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[esmaml.tasks]\nbroken = nosuch_plugin_module:Family\n")
    sys.path.append(str(site))
    try:
        return resolve("tasks", "broken")
    finally:
        sys.path.remove(str(site))


def batched_env(name: str) -> Any:
    from envs import make_batched_env

    return make_batched_env(name)


def vector_env_short_seed_list() -> None:
    from envs import BatchedMetaVectorEnv

    BatchedMetaVectorEnv("Navigation2D", num_envs=3).reset(seed=[1, 2])


def navigation_step_bad_action() -> None:
    env = navigation()
    task = env.sample_task_params(2, generator=torch.Generator().manual_seed(0))
    state = env.reset(task)
    env.step(state, task, torch.zeros(2, 5))


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def with_wandb_mode(value: str) -> None:
    with environment("WANDB_MODE", value):
        load_config(CONFIG, ["wandb.mode=auto"])


def navigation_nan_goal() -> None:
    env = navigation()
    task = env.sample_task_params(2, generator=torch.Generator().manual_seed(0))
    task["goal"][0, 0] = math.nan
    env.reset(task)


def gym_navigation() -> Any:
    import gymnasium

    import envs  # noqa: F401  (registers the esmaml/ ids)

    env = gymnasium.make("esmaml/Navigation2D-v0")
    env.reset(seed=0)
    return env


def unavailable_device() -> str:
    """``cuda`` without a GPU; with GPUs, an index past the last one."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def complex_objective() -> None:
    backward(lambda p: (p.to(torch.complex64) ** 2).sum(), theta())


def payload_checkpoint(ctx: Context) -> None:
    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("true",))

    run_dir = ctx.path("payload")
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text((ctx.run_dir / "config.yaml").read_text())
    state = torch.load(ctx.run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "extra": Payload()}, run_dir / "checkpoint.pt")
    cli("evaluate", run_dir)


def resume_live_run(ctx: Context) -> None:
    run_dir = ctx.path("live")
    run_dir.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (run_dir / name).write_bytes((ctx.run_dir / name).read_bytes())
    live = Trainer.resume(run_dir)  # holds the run directory like a running `esmaml train`
    try:
        cli("train", "--resume", run_dir)
    finally:
        live.release()


def evaluate_into_directory(ctx: Context) -> None:
    out = ctx.path("out")
    out.mkdir()
    cli("evaluate", ctx.run_dir, "--out", out)


# -- user code: what a user's family or env returns, checked where it enters esmaml -------------


class WrongLossShape(SineRegression):
    """A user family whose loss forgets to reduce over the query examples."""

    def loss(self, params, tasks, task_ids, *, phase="query", generator=None):  # type: ignore[override]
        per_example = super().loss(params, tasks, task_ids, phase=phase, generator=generator)
        return per_example.unsqueeze(-1).expand(*per_example.shape, 10)


def user_loss_wrong_shape() -> None:
    from esmaml.adaptation.gradient_descent import IdentityAdaptation
    from esmaml.meta.base import evaluate_adaptation

    user = WrongLossShape(hidden=(4,))
    evaluate_adaptation(user, IdentityAdaptation(), user.init_params(), tasks(), seed=0)


def user_env(observe: Callable[[Any, Any], torch.Tensor] | None = None, step: Any = None) -> None:
    """A Navigation2D subclass whose ``_observe`` / ``_step`` is replaced by a user's, reset and
    stepped once."""
    from envs import Navigation2D

    overrides: dict[str, Any] = {}
    if observe is not None:
        overrides["_observe"] = lambda self, state, task: observe(state, task)
    if step is not None:
        overrides["_step"] = step
    cls = type("UserNav", (Navigation2D,), overrides)
    env = cls()
    task = env.sample_task_params(2, generator=torch.Generator().manual_seed(0))
    state = env.reset(task)
    env.observe(state, task)
    env.step(state, task, torch.zeros(2, 2))


def reward_per_dim(self: Any, state: Any, task: Any, action: torch.Tensor) -> Any:
    return state, -(state["pos"] - task["goal"]).abs(), torch.zeros(2, dtype=torch.bool)


# -- the rows ----------------------------------------------------------------------------------

ZO = "esmaml.zero_order"
# fmt: off
CASES: list[Case] = [
    # esmaml.zero_order: options, checked when the decorator is made
    Case("zo-method", ZO, "method='backward'", ValueError, "is not an estimator",
         lambda c: esmaml.zero_order(method="backward")),
    Case("zo-sigma-zero", ZO, "sigma=0", ValueError, "sigma must be a positive finite number",
         lambda c: esmaml.zero_order(sigma=0)),
    Case("zo-sigma-inf", ZO, "sigma=inf", ValueError, "sigma must be a positive finite number",
         lambda c: esmaml.zero_order(sigma=math.inf)),
    Case("zo-sigma-str", ZO, "sigma='0.1'", TypeError, "sigma must be a positive finite number",
         lambda c: esmaml.zero_order(sigma="0.1")),
    Case("zo-num-samples", ZO, "num_samples=0", ValueError, "num_samples must be an int >= 1",
         lambda c: esmaml.zero_order(num_samples=0)),
    Case("zo-num-samples-float", ZO, "num_samples=2.5", ValueError,
         "num_samples must be an int >= 1", lambda c: esmaml.zero_order(num_samples=2.5)),
    Case("zo-argnums-type", ZO, "argnums='0'", TypeError,
         "argnums must be an int or a tuple of ints", lambda c: esmaml.zero_order(argnums="0")),
    Case("zo-argnums-empty", ZO, "argnums=()", ValueError, "argnums must name at least one",
         lambda c: esmaml.zero_order(argnums=())),
    Case("zo-argnums-twice", ZO, "argnums=(0, 0)", ValueError, "names the same argument twice",
         lambda c: esmaml.zero_order(argnums=(0, 0))),
    Case("zo-sampling", ZO, "sampling='sobol'", ValueError, "is not a noise kind",
         lambda c: esmaml.zero_order(sampling="sobol")),
    Case("zo-shaping", ZO, "shaping='rank'", ValueError, "is not a fitness shaping",
         lambda c: esmaml.zero_order(shaping="rank")),
    Case("zo-nan-policy", ZO, "nan_policy='ignore'", ValueError, "nan_policy='ignore' is not valid",
         lambda c: esmaml.zero_order(nan_policy="ignore")),
    Case("zo-value", ZO, "value='mean'", ValueError, "value='mean' is not valid",
         lambda c: esmaml.zero_order(value="mean")),
    Case("zo-batch", ZO, "batch='parallel'", ValueError, "is not a batch mode",
         lambda c: esmaml.zero_order(batch="parallel")),
    Case("zo-chunk-size", ZO, "chunk_size=0", ValueError, "chunk_size must be a positive int",
         lambda c: esmaml.zero_order(chunk_size=0)),
    Case("zo-compile-type", ZO, "compile='yes'", TypeError, "compile must be True or False",
         lambda c: esmaml.zero_order(compile="yes")),
    Case("zo-compile-sequential", ZO, "compile=True, batch='sequential'", ValueError,
         "needs batch='auto', 'vmap' or 'population'",
         lambda c: esmaml.zero_order(compile=True, batch="sequential")),
    Case("zo-generator-type", ZO, "generator=0", TypeError, "generator must be a torch.Generator",
         lambda c: esmaml.zero_order(generator=0)),
    Case("zo-seed-type", ZO, "seed='1'", TypeError, "seed must be an int or None",
         lambda c: esmaml.zero_order(seed="1")),
    Case("zo-seed-and-generator", ZO, "seed=1, generator=Generator()", ValueError,
         "pass either seed or generator, not both",
         lambda c: esmaml.zero_order(seed=1, generator=torch.Generator())),
    Case("zo-distribution-type", ZO, "distribution=5", TypeError,
         "distribution must be None", lambda c: esmaml.zero_order(distribution=5)),
    Case("zo-orthogonal-custom", ZO, "distribution=Uniform(-1, 1), sampling='orthogonal'",
         ValueError, "needs the built-in Gaussian",
         lambda c: esmaml.zero_order(
             torch.distributions.Uniform(-1.0, 1.0), sampling="orthogonal")),
    Case("zo-decorate-non-callable", ZO, "zero_order()(5)", TypeError,
         "zero_order decorates a callable", lambda c: esmaml.zero_order()(5)),
    Case("zo-shaping-one-sample", ZO, "shaping='zscore', num_samples=1", ValueError,
         "gives a zero gradient (one shaped value is always 0)",
         lambda c: esmaml.zero_order(shaping="zscore", num_samples=1)),
    Case("zo-distribution-mean", ZO, "distribution=Normal(5, 1)", ValueError,
         "the estimators need zero mean and unit variance",
         lambda c: esmaml.zero_order(torch.distributions.Normal(5.0, 1.0))),
    Case("zo-distribution-bernoulli", ZO, "distribution=Bernoulli(0.5)", ValueError,
         "has mean 0.5, variance 0.25; the estimators need zero mean and unit variance",
         lambda c: esmaml.zero_order(torch.distributions.Bernoulli(0.5))),
    Case("zo-on-stats", ZO, "on_stats='print'", TypeError,
         "on_stats must be None or a callable taking a ZeroOrderStats, got 'print'",
         lambda c: esmaml.zero_order(on_stats="print")),
    Case("zo-enable-grad", ZO, "enable_grad='yes'", TypeError,
         "enable_grad must be True or False, got 'yes'",
         lambda c: esmaml.zero_order(enable_grad="yes")),
    # esmaml.zero_order: what the decorated function receives and returns
    Case("zo-argnums-out-of-range", ZO, "argnums=1, f called with 1 argument", ValueError,
         "argnums=1 is out of range", lambda c: decorated(lambda p: p.sum(), argnums=1)(theta())),
    Case("zo-arg-not-tensor", ZO, "f(3.0) with argnums=0", TypeError, "holds no tensor",
         lambda c: decorated(lambda p: torch.tensor(p))(3.0)),
    Case("zo-leaf-not-tensor", ZO, "f({'w': tensor, 'b': 1.0})", TypeError,
         "holds a float leaf",
         lambda c: decorated(lambda p: p["w"].sum())({"w": theta(), "b": 1.0})),
    Case("zo-output-vector", ZO, "f returns shape (3,)", ObjectiveShapeError,
         "must return a scalar (0-dim) tensor, got shape (3,)",
         lambda c: backward(lambda p: p * 2, theta())),
    Case("zo-output-float", ZO, "f returns a Python float", ObjectiveTypeError,
         "must return a scalar (0-dim) tensor, got float",
         lambda c: decorated(lambda p: 1.0)(theta())),
    Case("zo-sample-shape", ZO, "distribution returns the wrong shape", ValueError,
         "it must return exactly sample_shape", lambda c: wrong_sample_shape()),
    Case("zo-nan-values", ZO, "f is NaN at every perturbation", FloatingPointError,
         "are NaN or inf", lambda c: nan_objective()),
    Case("zo-output-complex", ZO, "f returns a complex scalar", ObjectiveTypeError,
         "must return a real tensor, got dtype torch.complex64", lambda c: complex_objective()),
    # ZeroOrderGradientModule
    Case("zom-no-parameters", "ZeroOrderGradientModule", "a module without parameters",
         RuntimeError, "has no trainable parameters", lambda c: module_without_parameters()),
    Case("zom-enable-twice", "ZeroOrderGradientModule", "enable_zero_order_gradients twice",
         TypeError, "already enabled", lambda c: enable_twice()),
    Case("zom-bad-option", "ZeroOrderGradientModule", "class Net(..., method='central')",
         ValueError, "is not an estimator", lambda c: module_bad_option()),
    Case("zom-no-forward", "ZeroOrderGradientModule", "a class without forward", TypeError,
         "must define forward", lambda c: module_without_forward()),
    # adaptation operators
    Case("es-num-queries", "adaptation", "ESGradientAdaptation(num_queries=0)", ValueError,
         "num_queries must be a positive int", lambda c: ESGradientAdaptation(num_queries=0)),
    Case("es-sigma", "adaptation", "ESGradientAdaptation(sigma=-1)", ValueError,
         "sigma must be a positive finite number", lambda c: ESGradientAdaptation(sigma=-1)),
    Case("es-step-size", "adaptation", "ESGradientAdaptation(step_size='big')", TypeError,
         "step_size must be a positive number", lambda c: ESGradientAdaptation(step_size="big")),
    Case("es-sampling", "adaptation", "ESGradientAdaptation(sampling='sobol')", ValueError,
         "sampling='sobol' is unknown", lambda c: ESGradientAdaptation(sampling="sobol")),
    Case("es-method", "adaptation", "ESGradientAdaptation(method='central')", ValueError,
         "is not an estimator", lambda c: ESGradientAdaptation(method="central")),
    Case("es-num-steps", "adaptation", "ESGradientAdaptation(num_steps=-1)", ValueError,
         "num_steps must be an int >= 0", lambda c: ESGradientAdaptation(num_steps=-1)),
    Case("hc-mode", "adaptation", "HillClimbingAdaptation(mode='greedy')", ValueError,
         "mode='greedy' is unknown", lambda c: HillClimbingAdaptation(mode="greedy")),
    Case("hc-evaluations", "adaptation", "HillClimbingAdaptation(evaluations=0)", ValueError,
         "evaluations must be a positive int", lambda c: HillClimbingAdaptation(evaluations=0)),
    Case("gd-lr", "adaptation", "GradientDescentAdaptation(lr=0)", ValueError,
         "lr must be a positive finite number", lambda c: GradientDescentAdaptation(lr=0)),
    Case("gd-non-differentiable", "adaptation",
         "GradientDescentAdaptation on NonDifferentiableSine", ValueError,
         "needs a differentiable family",
         lambda c: GradientDescentAdaptation().adapt(
             NonDifferentiableSine(hidden=(4,)),
             torch.zeros(2, NonDifferentiableSine(hidden=(4,)).num_params),
             tasks(), torch.arange(2), seed=0)),
    Case("adapt-negative-steps", "adaptation", "operator.adapt(..., num_steps=-1)", ValueError,
         "num_steps must be >= 0",
         lambda c: ESGradientAdaptation().adapt(
             family(), params(), tasks(), torch.arange(2), seed=0, num_steps=-1)),
    Case("dpp-k", "adaptation", "sample_k_dpp(3x3 kernel, k=5)", ValueError,
         "k must be in [1, 3]", lambda c: sample_k_dpp(torch.eye(3), 5)),
    # meta-learners
    Case("esmaml-num-perturbations", "meta-learner", "ESMAML(num_perturbations=0)", ValueError,
         "num_perturbations must be a positive int",
         lambda c: ESMAML(family(), ESGradientAdaptation(), num_perturbations=0)),
    Case("esmaml-sigma", "meta-learner", "ESMAML(sigma=0)", ValueError,
         "sigma must be a positive finite number",
         lambda c: ESMAML(family(), ESGradientAdaptation(), sigma=0)),
    Case("esmaml-method", "meta-learner", "ESMAML(method='central')", ValueError,
         "is not an estimator",
         lambda c: ESMAML(family(), ESGradientAdaptation(), method="central")),
    Case("esmaml-tasks", "meta-learner", "ESMAML(tasks_per_iteration=-2)", ValueError,
         "tasks_per_iteration must be a positive int",
         lambda c: ESMAML(family(), ESGradientAdaptation(), tasks_per_iteration=-2)),
    Case("esmaml-tasks-over-directions", "meta-learner",
         "ESMAML(num_perturbations=4, tasks_per_iteration=6)", ValueError,
         "tasks_per_iteration (6) must be at most num_perturbations (4)",
         lambda c: ESMAML(family(), ESGradientAdaptation(), num_perturbations=4,
                          tasks_per_iteration=6)),
    Case("first-order-operator", "meta-learner", "FirstOrderESMAML with hill climbing",
         TypeError, "needs adaptation=ESGradientAdaptation",
         lambda c: FirstOrderESMAML(family(), HillClimbingAdaptation())),
    Case("first-order-hessian-steps", "meta-learner",
         "FirstOrderESMAML(hessian_correction=True), 2 adaptation steps", ValueError,
         "hessian_correction supports a single adaptation step",
         lambda c: FirstOrderESMAML(
             family(), ESGradientAdaptation(num_steps=2), hessian_correction=True)),
    Case("first-order-hessian-shaping", "meta-learner",
         "FirstOrderESMAML(hessian_correction=True), z-scored adaptation", ValueError,
         "hessian_correction needs an unshaped inner step",
         lambda c: FirstOrderESMAML(
             family(), ESGradientAdaptation(shaping="zscore"), hessian_correction=True)),
    Case("first-order-sampling", "meta-learner", "FirstOrderESMAML(sampling='sobol')",
         ValueError, "sampling='sobol' is not a noise kind",
         lambda c: FirstOrderESMAML(family(), ESGradientAdaptation(), sampling="sobol")),
    Case("esmaml-optimizer-name", "meta-learner", "ESMAML(optimizer='adam')", TypeError,
         "optimizer must be a callable",
         lambda c: ESMAML(family(), ESGradientAdaptation(), optimizer="adam")),
    Case("esmaml-step-none", "meta-learner", "ESMAML.step(None)", TypeError,
         "tasks must be a non-empty dict of tensors, got NoneType",
         lambda c: ESMAML(family(), ESGradientAdaptation(), num_perturbations=2).step(None)),
    # task samplers
    Case("sampler-pool", "task sampler", "TaskSampler(train_pool=0)", ValueError,
         "train_pool must be -1 (fresh tasks) or a positive int",
         lambda c: TaskSampler(family(), train_pool=0)),
    Case("sampler-count", "task sampler", "sampler.sample(0)", ValueError,
         "number of tasks must be a positive int", lambda c: TaskSampler(family()).sample(0)),
    Case("sampler-split", "task sampler", "sampler.sample(2, 'val')", ValueError,
         "split='val' is unknown", lambda c: TaskSampler(family()).sample(2, "val")),
    Case("tasks-not-dict", "task sampler", "validate_tasks([1, 2])", TypeError,
         "must return a non-empty dict of tensors", lambda c: validate_tasks([1, 2])),
    Case("tasks-disagree", "task sampler", "task fields with 2 and 3 tasks", ValueError,
         "disagree on the number of tasks",
         lambda c: validate_tasks({"a": torch.zeros(2), "b": torch.zeros(3)})),
    Case("tasks-empty-dim", "task sampler", "a task field of shape (2, 0)", ValueError,
         "has an empty dimension", lambda c: validate_tasks({"x": torch.zeros(2, 0)})),
    # families
    Case("sine-shots", "family", "SineRegression(shots=0)", ValueError,
         "shots must be a positive int", lambda c: SineRegression(shots=0)),
    Case("sine-range", "family", "SineRegression(amplitude_range=(5, 0.1))", ValueError,
         "amplitude_range must be (low, high) with low <= high",
         lambda c: SineRegression(amplitude_range=(5.0, 0.1))),
    Case("sine-activation", "family", "SineRegression(activation='swish2')", ValueError,
         "activation='swish2' is unknown", lambda c: SineRegression(activation="swish2")),
    Case("sine-quantize", "family", "NonDifferentiableSine(quantize=0)", ValueError,
         "needs quantize > 0", lambda c: NonDifferentiableSine(quantize=0)),
    Case("sine-params-dim", "family", "loss(params with the wrong last dim)", ValueError,
         "params must have last dim num_params",
         lambda c: family().loss(torch.zeros(2, 3), tasks(), torch.arange(2))),
    Case("sine-params-int", "family", "loss(integer params)", TypeError,
         "params must be a floating tensor",
         lambda c: family().loss(params().long(), tasks(), torch.arange(2))),
    Case("sine-task-ids-range", "family", "loss(task_ids=[0, 5]) with 2 tasks", IndexError,
         "task_ids must lie in [0, 2)",
         lambda c: family().loss(params(), tasks(), torch.tensor([0, 5]))),
    Case("sine-task-ids-float", "family", "loss(task_ids=float tensor)", TypeError,
         "task_ids must be an int64 tensor",
         lambda c: family().loss(params(), tasks(), torch.zeros(2))),
    Case("sine-task-ids-shape", "family", "loss(params [2, D], task_ids [3])", ValueError,
         "does not broadcast",
         lambda c: family().loss(params(), tasks(), torch.zeros(3, dtype=torch.long))),
    Case("sine-phase", "family", "loss(phase='train')", ValueError, "phase='train' is unknown",
         lambda c: family().loss(params(), tasks(), torch.arange(2), phase="train")),
    Case("sine-missing-field", "family", "loss(tasks without x_query)", KeyError,
         "tasks lack the field 'x_query'",
         lambda c: family().loss(
             params(), {k: v for k, v in tasks().items() if k != "x_query"}, torch.arange(2))),
    Case("sine-split", "family", "sample_tasks(2, split='val')", ValueError,
         "split='val' is unknown", lambda c: family().sample_tasks(2, split="val")),
    Case("sine-range-inf", "family", "SineRegression(amplitude_range=(0.1, inf))", ValueError,
         "amplitude_range must be finite (low, high), got (0.1, inf)",
         lambda c: SineRegression(amplitude_range=(0.1, math.inf))),
    Case("sine-hidden-int", "family", "SineRegression(hidden=8)", ValueError,
         "hidden=8 is invalid; it must be a list of positive ints",
         lambda c: SineRegression(hidden=8)),
    Case("rl-horizon-zero", "family", "RLFamily(horizon=0)", ValueError,
         "horizon must be None (the env's default, 100) or an int >= 1, got 0",
         lambda c: rl_family(horizon=0)),
    Case("rl-horizon-negative", "family", "RLFamily(horizon=-5)", ValueError,
         "horizon must be None (the env's default, 100) or an int >= 1, got -5",
         lambda c: rl_family(horizon=-5)),
    # environments (envs/)
    Case("env-goal-range", "envs", "Navigation2D(goal_range=5)", ValueError,
         "goal_range must be in (0, 1.0]", lambda c: navigation(goal_range=5)),
    Case("env-horizon", "envs", "Navigation2D(max_episode_steps=0)", ValueError,
         "max_episode_steps must be >= 1", lambda c: navigation(max_episode_steps=0)),
    Case("env-task-count", "envs", "sample_task_params(-1)", ValueError,
         "n must be a non-negative int", lambda c: navigation().sample_task_params(-1)),
    Case("env-name", "envs", "make_batched_env('Nope')", ValueError,
         "unknown batched env 'Nope'", lambda c: batched_env("Nope")),
    Case("env-action-shape", "envs", "step with a [2, 5] action (action_dim 2)", ValueError,
         "action", lambda c: navigation_step_bad_action()),
    Case("env-vector-seed-list", "envs", "BatchedMetaVectorEnv(num_envs=3).reset(seed=[1, 2])",
         ValueError, "seed must hold one entry per sub-env (3), got 2",
         lambda c: vector_env_short_seed_list()),
    Case("env-nan-goal", "envs", "Navigation2D.reset(task with a NaN goal)", ValueError,
         "task['goal'] contains NaN or inf values (Navigation2D)",
         lambda c: navigation_nan_goal()),
    Case("gym-nan-goal", "envs", "gymnasium env.set_task({'goal': [nan, 0]})", ValueError,
         "task['goal'] contains NaN or inf values",
         lambda c: gym_navigation().unwrapped.set_task({"goal": [math.nan, 0.0]})),
    Case("gym-step-str", "envs", "gymnasium env.step('left')", TypeError,
         "action must be numbers (a tensor, numpy array, float or list of floats), got 'left'",
         lambda c: gym_navigation().step("left")),
    Case("env-mujoco-batch-name", "envs", "MujocoMetaBatch('Navigation2D', 4)", ValueError,
         "env='Navigation2D' has no batched path", lambda c: mujoco_batch("Navigation2D", 4)),
    Case("env-mujoco-batch-actions", "envs", "MujocoMetaBatch(HalfCheetah, 2).step([2, 5] actions)",
         ValueError, "actions must have shape (2, 6)", lambda c: mujoco_batch_bad_actions()),
    Case("family-mujoco-backend", "family", "RLFamily(HalfCheetah, mujoco_backend='bullet')",
         ValueError, "mujoco_backend must be 'batch', 'warp' or 'gymnasium', got 'bullet'",
         lambda c: rl_family("HalfCheetahForwardBackward", mujoco_backend="bullet")),
    Case("family-mujoco-threads", "family", "RLFamily(AntDirection, mujoco_threads=0)",
         ValueError, "mujoco_threads must be a positive int, got 0",
         lambda c: rl_family("AntDirection", mujoco_threads=0)),
    # user code (a user's family or env), checked where its output enters esmaml
    Case("user-loss-shape", "user code", "a family whose loss returns [B, 10], not [B]",
         ValueError, "WrongLossShape.loss returned shape (2, 10), expected (2,)",
         lambda c: user_loss_wrong_shape()),
    Case("user-env-obs-shape", "user code", "an env whose _observe returns [*B, 3] (dim 2)",
         ValueError, "UserNav._observe returned an observation of shape (2, 3), expected (2, 2)",
         lambda c: user_env(observe=lambda s, t: torch.zeros(2, 3))),
    Case("user-env-obs-dtype", "user code", "an env whose _observe returns int64", TypeError,
         "UserNav._observe returned an observation of dtype torch.int64",
         lambda c: user_env(observe=lambda s, t: torch.zeros(2, 2, dtype=torch.long))),
    Case("user-env-obs-nan", "user code", "an env whose _observe returns NaN", ValueError,
         "UserNav._observe returned an observation with NaN or inf values",
         lambda c: user_env(observe=lambda s, t: torch.full((2, 2), math.nan))),
    Case("user-env-reward-shape", "user code", "an env whose _step returns a [*B, 2] reward",
         ValueError, "UserNav._step returned a reward of shape (2, 2), expected (2,)",
         lambda c: user_env(step=reward_per_dim)),
    Case("cfg-param-type-int", "config", "task.params.shots=ten", ConfigError,
         "task.params.shots='ten' has the wrong type: SineRegression takes an int for shots, "
         "got str 'ten'",
         lambda c: Trainer(load_config(CONFIG, [*TINY, "task.params.shots=ten"]), c.path("run"))),
    Case("cfg-param-type-float", "config", "adaptation.params.sigma=abc", ConfigError,
         "adaptation.params.sigma='abc' has the wrong type: ESGradientAdaptation takes a number",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "adaptation.params.sigma=abc"]), c.path("run"))),
    Case("cfg-switch-operator", "config", "adaptation.operator=identity (es_gradient params set)",
         ConfigError, "IdentityAdaptation does not take 'num_queries'",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "adaptation.operator=identity"]), c.path("run"))),
    Case("cfg-switch-operator-one-key", "config",
         "adaptation.operator=hill_climbing adaptation.params={sampling: gaussian}", ConfigError,
         "or reset the section with the override adaptation.params={}",
         lambda c: Trainer(load_config(CONFIG, [
             *TINY, "adaptation.operator=hill_climbing", "adaptation.params={sampling: gaussian}"]),
             c.path("run"))),
    # configs (esmaml.config.load_config and the builders)
    Case("cfg-unknown-key", "config", "override iteration=5", ConfigError,
         "unknown key 'iteration'; did you mean 'iterations'",
         lambda c: load_config(CONFIG, ["iteration=5"])),
    Case("cfg-no-equals", "config", "override iterations", ConfigError,
         "must look like key=value", lambda c: load_config(CONFIG, ["iterations"])),
    Case("cfg-wrong-type", "config", "override iterations=ten", ConfigError,
         "'iterations' has the wrong type", lambda c: load_config(CONFIG, ["iterations=ten"])),
    Case("cfg-iterations", "config", "override iterations=0", ConfigError,
         "iterations=0 is invalid; it must be an int >= 1",
         lambda c: load_config(CONFIG, ["iterations=0"])),
    Case("cfg-checkpoint-every", "config", "override checkpoint.every=0", ConfigError,
         "checkpoint.every=0 is invalid", lambda c: load_config(CONFIG, ["checkpoint.every=0"])),
    Case("cfg-wandb-mode", "config", "override wandb.mode=cloud", ConfigError,
         "wandb.mode='cloud' is invalid; it must be one of online, offline, disabled, auto",
         lambda c: load_config(CONFIG, ["wandb.mode=cloud"])),
    Case("cfg-missing-file", "config", "load_config('nope.yaml')", ConfigError,
         "does not exist", lambda c: load_config(c.path("nope.yaml"))),
    Case("cfg-not-mapping", "config", "a YAML file holding a list", ConfigError,
         "must hold a mapping", lambda c: load_config(c.file("list.yaml", "- 1\n- 2\n"))),
    Case("cfg-invalid-yaml", "config", "a YAML file with 'iterations: [1'", ConfigError,
         "is not valid YAML", lambda c: load_config(c.file("bad.yaml", "iterations: [1\n"))),
    Case("cfg-yaml-unknown-key", "config", "a YAML file with 'iteratons: 5'", ConfigError,
         "unknown key 'iteratons'",
         lambda c: load_config(c.file("typo.yaml", "iteratons: 5\n"))),
    Case("cfg-empty-file", "config", "an empty YAML file", ConfigError,
         "is empty; start from a file in configs/",
         lambda c: load_config(c.file("empty.yaml", ""))),
    Case("cfg-non-utf8", "config", "a Latin-1 YAML file ('name: café')", ConfigError,
         "is not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8",
         lambda c: load_config(c.bytes_file("latin.yaml", "name: café\n".encode("latin-1")))),
    Case("cfg-file-is-directory", "config", "load_config(a directory)", ConfigError,
         "is a directory, not a YAML file", lambda c: load_config(c.root)),
    Case("cfg-lr-inf", "config", "override optimizer.lr=inf", ConfigError,
         "optimizer.lr=inf is invalid; it must be a positive finite number",
         lambda c: load_config(CONFIG, ["optimizer.lr=inf"])),
    Case("cfg-seed-overflow", "config", "override seed=18446744073709551616 (2**64)", ConfigError,
         "seed=18446744073709551616 is invalid; it must be an int in [0, 9223372036854775807]",
         lambda c: load_config(CONFIG, [f"seed={2**64}"])),
    Case("cfg-device", "config", "override device=banana", ConfigError,
         "device='banana' is invalid; it must be a torch device such as cpu, cuda or cuda:1",
         lambda c: load_config(CONFIG, ["device=banana"])),
    Case("cfg-device-unavailable", "config", "device=cuda without a GPU", ConfigError,
         "but this machine has",
         lambda c: Trainer(load_config(CONFIG, [*TINY, f"device={unavailable_device()}"]),
                           c.path("run"))),
    Case("cfg-wandb-mode-env", "config", "WANDB_MODE=banana in the environment", ConfigError,
         "environment variable WANDB_MODE='banana' is not a wandb mode",
         lambda c: with_wandb_mode("banana")),
    Case("cfg-hidden-int", "config", "task.params.hidden=8", ConfigError,
         "task.params.hidden=8 is invalid; it must be a list of positive ints",
         lambda c: Trainer(load_config(CONFIG, [*TINY, "task.params.hidden=8"]), c.path("run"))),
    Case("cfg-horizon-zero", "config", "configs/nav2d_smoke.yaml task.params.horizon=0",
         ConfigError, "task.params: horizon must be None (the env's default, 100) or an int >= 1",
         lambda c: Trainer(load_config(NAV_CONFIG, [*NAV_TINY, "task.params.horizon=0"]),
                           c.path("run"))),
    Case("cfg-horizon-negative", "config", "configs/nav2d_smoke.yaml task.params.horizon=-5",
         ConfigError, "horizon must be None (the env's default, 100) or an int >= 1, got -5",
         lambda c: Trainer(load_config(NAV_CONFIG, [*NAV_TINY, "task.params.horizon=-5"]),
                           c.path("run"))),
    Case("cfg-unknown-family", "config", "task.family=sin", ConfigError,
         "task.family='sin' is unknown; did you mean 'sine'",
         lambda c: Trainer(load_config(CONFIG, [*TINY, "task.family=sin"]), c.path("run"))),
    Case("cfg-unknown-param", "config", "meta.params.num_perturbation=8", ConfigError,
         "meta.params: unknown key 'num_perturbation'; did you mean 'num_perturbations'",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "meta.params.num_perturbation=8"]), c.path("run"))),
    Case("cfg-unknown-operator", "config", "adaptation.operator=hill_climb", ConfigError,
         "adaptation.operator='hill_climb' is unknown",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "adaptation.operator=hill_climb"]), c.path("run"))),
    Case("cfg-unknown-optimizer", "config", "optimizer.name=adagrad", ConfigError,
         "optimizer.name='adagrad' is unknown",
         lambda c: Trainer(load_config(CONFIG, [*TINY, "optimizer.name=adagrad"]), c.path("r"))),
    Case("cfg-import-no-module", "config", "task.family=nosuch_module:Family", ConfigError,
         "task.family='nosuch_module:Family': no module named 'nosuch_module' in the current "
         "directory or the installed packages", lambda c: resolve("tasks", "nosuch_module:Family")),
    Case("cfg-import-no-attribute", "config", "task.family=esmaml.tasks.sine:SineRegresion",
         ConfigError, "'esmaml.tasks.sine' has no attribute 'SineRegresion'; did you mean "
         "'SineRegression'", lambda c: resolve("tasks", "esmaml.tasks.sine:SineRegresion")),
    Case("cfg-import-wrong-kind", "config",
         "adaptation.operator=esmaml.tasks.sine:SineRegression", ConfigError,
         "adaptation.operator='esmaml.tasks.sine:SineRegression' is a class 'SineRegression', "
         "not a subclass of esmaml.adaptation.base.AdaptationOperator",
         lambda c: resolve("adaptation", "esmaml.tasks.sine:SineRegression")),
    Case("cfg-import-not-a-class", "config", "meta.algorithm=math:pi", ConfigError,
         "meta.algorithm='math:pi' is an object of type 'float', not a subclass of "
         "esmaml.meta.base.MetaLearner", lambda c: resolve("meta", "math:pi")),
    Case("cfg-env-import-path", "config", "task.params.env=nosuch_envs:GoalLine", ConfigError,
         "task.params.env='nosuch_envs:GoalLine': no module named 'nosuch_envs'",
         lambda c: rl_family("nosuch_envs:GoalLine")),
    Case("cfg-env-wrong-kind", "config", "task.params.env=esmaml.tasks.sine:SineRegression",
         ConfigError, "not a subclass of gymnasium.Env or envs.core.BatchedMetaEnv",
         lambda c: rl_family("esmaml.tasks.sine:SineRegression")),
    Case("cfg-entry-point-broken", "config",
         "task.family=broken (an installed entry point whose module is missing)", ConfigError,
         "task.family='broken': the entry point 'nosuch_plugin_module:Family' (group "
         "'esmaml.tasks', from broken-plugin 0.1) failed to load: ModuleNotFoundError",
         lambda c: broken_entry_point(c)),
    Case("cfg-bad-param-value", "config", "adaptation.params.num_queries=0", ConfigError,
         "num_queries must be a positive int",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "adaptation.params.num_queries=0"]), c.path("run"))),
    Case("cfg-bad-meta-value", "config", "meta.params.num_perturbations=0", ConfigError,
         "meta.params: num_perturbations must be a positive int",
         lambda c: Trainer(
             load_config(CONFIG, [*TINY, "meta.params.num_perturbations=0"]), c.path("run"))),
    Case("cfg-l2l-optimizer-params", "config",
         "configs/sine_maml.yaml optimizer.params.weight_decay=0.5", ConfigError,
         "optimizer.params are not used by meta.algorithm=l2l_maml",
         lambda c: Trainer(
             load_config(MAML_CONFIG, [*MAML_TINY, "optimizer.params.weight_decay=0.5"]),
             c.path("run"))),
    Case("cfg-l2l-optimizer-name", "config", "configs/sine_maml.yaml optimizer.name=adamw",
         ConfigError, "optimizer.name='adamw' is not available with meta.algorithm=l2l_maml",
         lambda c: Trainer(
             load_config(MAML_CONFIG, [*MAML_TINY, "optimizer.name=adamw"]), c.path("run"))),
    Case("cfg-l2l-adaptation", "config",
         "configs/sine_maml.yaml adaptation.params.num_steps=3 (meta: adaptation_steps=1)",
         ConfigError, "meta.algorithm=l2l_maml adapts with its own inner loop",
         lambda c: Trainer(
             load_config(MAML_CONFIG, [*MAML_TINY, "adaptation.params.num_steps=3"]),
             c.path("run"))),
    # checkpoints
    Case("ckpt-foreign", "checkpoint", "a torch file that is not an esmaml checkpoint",
         CheckpointError, "is not an esmaml checkpoint (missing iteration",
         foreign_checkpoint),
    Case("ckpt-other-model", "checkpoint", "resume with task.params.hidden=[16] (another model)",
         ConfigError, "changed experiment keys: task.params.hidden", resume_with_other_model),
    Case("ckpt-pool-override", "checkpoint", "resume with task.test_pool=5 (the run has 2)",
         ConfigError, "cannot resume with task.test_pool=5: checkpoint",
         resume_with("task.test_pool=5")),
    Case("ckpt-seed-override", "checkpoint", "resume with seed=9 (the run has another)",
         ConfigError, "cannot resume with seed=9: checkpoint", resume_with("seed=9")),
    Case("ckpt-experiment-change", "checkpoint", "resume with meta.params.sigma=0.5", ConfigError,
         "changed experiment keys: meta.params.sigma (a resume may change only",
         resume_with("meta.params.sigma=0.5")),
    Case("ckpt-is-directory", "checkpoint", "read_checkpoint(a directory)", CheckpointError,
         "is a directory, not a checkpoint file", lambda c: read_checkpoint(c.root)),
    Case("ckpt-pickle-payload", "checkpoint", "esmaml evaluate RUN (checkpoint with a payload)",
         CLIExit, "holds a pickled posix.system, not only tensors and plain values: refused",
         payload_checkpoint),
    Case("ckpt-existing-run-dir", "checkpoint", "a fresh run into a directory holding a run",
         ConfigError, "already holds a run",
         lambda c: Trainer(load_config(CONFIG, TINY), c.run_dir)),
    # the command line
    Case("cli-no-command", "CLI", "esmaml", CLIExit,
         "exit 2: esmaml: error: the following arguments are required: command",
         lambda c: cli()),
    Case("cli-unknown-command", "CLI", "esmaml fit", CLIExit, "invalid choice: 'fit'",
         lambda c: cli("fit")),
    Case("cli-train-no-config", "CLI", "esmaml train", CLIExit,
         "exit 2: esmaml train: error: give a CONFIG file", lambda c: cli("train")),
    Case("cli-list-kind", "CLI", "esmaml list task", CLIExit,
         "exit 2: esmaml list: error: unknown kind 'task'; valid: tasks, envs, adaptation, meta, "
         "policies, optimizers", lambda c: cli("list", "task")),
    Case("cli-train-override-first", "CLI", "esmaml train iterations=5", CLIExit,
         "the first argument must be a CONFIG file", lambda c: cli("train", "iterations=5")),
    Case("cli-train-unknown-key", "CLI", "esmaml train configs/sine.yaml iteration=3", CLIExit,
         "unknown key 'iteration'; did you mean 'iterations'",
         lambda c: cli("train", CONFIG, "iteration=3")),
    Case("cli-train-missing-config", "CLI", "esmaml train missing.yaml", CLIExit,
         "config file", lambda c: cli("train", c.path("missing.yaml"))),
    Case("cli-resume-missing-dir", "CLI", "esmaml train --resume /no/such/dir", CLIExit,
         "run directory '/no/such/dir' does not exist",
         lambda c: cli("train", "--resume", "/no/such/dir")),
    Case("cli-resume-file", "CLI", "esmaml train --resume FILE", CLIExit,
         "is a file, not a directory", lambda c: cli("train", "--resume", c.file("f.txt", "x"))),
    Case("cli-resume-live-run", "CLI", "esmaml train --resume RUN (RUN is being trained)",
         CLIExit, "is in use by another esmaml writer (pid", resume_live_run),
    Case("cli-run-dir-file", "CLI", "esmaml train configs/sine.yaml --run-dir FILE", CLIExit,
         "is a file, not a directory; choose a directory",
         lambda c: cli("train", CONFIG, *TINY, "--run-dir", c.file("f.txt", "x"))),
    Case("cli-run-dir-read-only", "CLI", "esmaml train configs/sine.yaml --run-dir /sys/kernel",
         CLIExit, "is not writable; choose a writable --run-dir",
         lambda c: cli("train", CONFIG, *TINY, "--run-dir", "/sys/kernel")),
    Case("cli-resume-not-a-run", "CLI", "esmaml train --resume EMPTY_DIR", CLIExit,
         "is not an esmaml run directory (no config.yaml)",
         lambda c: cli("train", "--resume", c.root)),
    Case("cli-resume-and-config", "CLI", "esmaml train configs/sine.yaml --resume RUN", CLIExit,
         "give either a CONFIG file or --resume RUN_DIR, not both",
         lambda c: cli("train", CONFIG, "--resume", c.run_dir)),
    Case("cli-resume-and-run-dir", "CLI", "esmaml train --resume RUN --run-dir D", CLIExit,
         "--run-dir cannot be combined with --resume",
         lambda c: cli("train", "--resume", c.run_dir, "--run-dir", c.path("d"))),
    Case("cli-resume-corrupt", "CLI", "esmaml train --resume RUN (checkpoint.pt garbage)",
         CLIExit, "checkpoint.pt' is corrupt or truncated", corrupt_checkpoint_cli),
    Case("cli-evaluate-no-checkpoint", "CLI", "esmaml evaluate RUN (no checkpoint yet)", CLIExit,
         "no checkpoint in", lambda c: cli("evaluate", c.empty_run_dir())),
    Case("cli-evaluate-missing-dir", "CLI", "esmaml evaluate /no/such/dir", CLIExit,
         "does not exist", lambda c: cli("evaluate", "/no/such/dir")),
    Case("cli-evaluate-negative-steps", "CLI", "esmaml evaluate RUN --steps 0 -1", CLIExit,
         "argument --steps: must be >= 0, got -1",
         lambda c: cli("evaluate", c.run_dir, "--steps", "0", "-1")),
    Case("cli-evaluate-steps-type", "CLI", "esmaml evaluate RUN --steps two", CLIExit,
         "argument --steps: 'two' is not an int",
         lambda c: cli("evaluate", c.run_dir, "--steps", "two")),
    Case("cli-evaluate-num-tasks", "CLI", "esmaml evaluate RUN --num-tasks 0", CLIExit,
         "argument --num-tasks: must be >= 1, got 0",
         lambda c: cli("evaluate", c.run_dir, "--num-tasks", "0")),
    Case("cli-evaluate-out-dir", "CLI", "esmaml evaluate RUN --out DIR", CLIExit,
         "--out", evaluate_into_directory),
    Case("cli-evaluate-file", "CLI", "esmaml evaluate FILE", CLIExit,
         "is a file, not a directory", lambda c: cli("evaluate", c.file("f.txt", "x"))),
    Case("cli-evaluate-split", "CLI", "esmaml evaluate RUN --split val", CLIExit,
         "argument --split: invalid choice: 'val'",
         lambda c: cli("evaluate", c.run_dir, "--split", "val")),
    Case("cli-plot-no-runs", "CLI", "esmaml plot", CLIExit,
         "the following arguments are required: RUN_DIR", lambda c: cli("plot")),
    Case("cli-plot-missing-dir", "CLI", "esmaml plot /no/such/dir", CLIExit,
         "run directory '/no/such/dir' does not exist", lambda c: cli("plot", "/no/such/dir")),
    Case("cli-plot-file", "CLI", "esmaml plot FILE", CLIExit,
         "is a file, not a directory", lambda c: cli("plot", c.file("f.txt", "x"))),
    Case("cli-plot-not-a-run", "CLI", "esmaml plot EMPTY_DIR", CLIExit,
         "has no metrics.jsonl", lambda c: cli("plot", c.root)),
]
# fmt: on


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    return Context(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[case.id for case in CASES],
)
def test_bad_input(case: Case, context: Context) -> None:
    with pytest.raises(case.error, match=re.escape(case.match)) as raised:
        case.call(context)
    assert type(raised.value) is case.error  # the documented type, not only a subclass


def test_rows_are_unique_and_enough() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


def test_doc_lists_every_row() -> None:
    text = DOC.read_text()
    missing = [case.id for case in CASES if f"`{case.id}`" not in text]
    assert not missing, f"rerun `python tests/test_bad_inputs.py > {DOC}`; missing: {missing}"


# -- the table ---------------------------------------------------------------------------------


def _excerpt(error: BaseException, limit: int = 150) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("`", "'")


def _table(context: Context) -> Iterator[str]:
    """The markdown rows; scratch and repository paths are shortened so the table is stable."""
    yield "| id | area | bad input | error | message (excerpt) |"
    yield "|---|---|---|---|---|"
    for case in CASES:
        try:
            case.call(context)
            error_name, message = "**no error**", ""
        except BaseException as error:  # the table records whatever is raised
            error_name, message = type(error).__name__, _excerpt(error)
            message = message.replace(str(context.root), "<tmp>").replace(f"{ROOT}/", "")
            # A lock holder's pid, host and start time differ from run to run.
            message = re.sub(
                r"pid \d+ on host \S+, since [^)]*",
                "pid <pid> on host <host>, since <time>",
                message,
            )
        if case.error is CLIExit:
            error_name = "exit status 2"
        what = case.input.replace("|", "\\|")
        yield f"| `{case.id}` | {case.area} | `{what}` | {error_name} | {message} |"


HEADER = """# Bad inputs and the errors they get

Every row is a test: `tests/test_bad_inputs.py` runs the input and asserts the exception type and
a fragment of the message (the excerpt below is what the code raises today). Regenerate this
file with `python tests/test_bad_inputs.py > docs/bad_inputs.md`.

Areas: `esmaml.zero_order` (the decorator's options, then what the decorated function receives
and returns), `ZeroOrderGradientModule`, adaptation operators, meta-learners, task samplers and
task dicts, task families, `envs/`, user code (what a user's family or env returns, checked
where it enters esmaml: shapes and dtypes on every call, values where NaN policies apply),
configs (`load_config` and the component builders, component options typed from the
constructor's annotations),
checkpoints, and the `esmaml` command line. Command-line rows print
`esmaml <command>: error: ...` (or argparse's usage line) to stderr and exit with status 2; the
message column shows `exit 2: <stderr>`.

Conventions the rows show: a wrong *type* raises `TypeError`, a wrong *value* `ValueError`
(`ConfigError`, a `ValueError`, for configs), an out-of-range index `IndexError`, a missing task
field `KeyError`, non-finite numbers `FloatingPointError`, an unreadable checkpoint
`CheckpointError` naming the file; messages name the argument, echo the bad value and say what
would be valid.

The run directory's own guarantees are tested with real processes in `tests/test_run_dir.py`: a
second `esmaml train` on a run directory that is being written exits 2 naming the writer's pid
and host (`esmaml evaluate` and `esmaml plot` may run beside it; a killed writer leaves no stale
lock); a resume that changes a key defining the experiment is refused naming the keys, and an
allowed change (logging, progress, evaluation or checkpoint cadence, the evaluator, a larger
`iterations`) is saved in config.yaml and recorded in `resumes.jsonl`; a corrupt `checkpoint.pt`
is moved aside to `checkpoint.pt.corrupt`, never rotated over the last readable checkpoint; a
full disk or a file-size limit while writing a checkpoint exits 2 (`cannot write checkpoint
...: File too large (the previous checkpoint is intact)`), while writing a metrics row exits 1
(`'RUN/metrics.jsonl': File too large`), with no traceback and no `.tmp` left behind; a
checkpoint that needs more than tensors and plain values to unpickle is refused, and never
loaded unsafely.

"""


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        rows = list(_table(Context(Path(scratch))))
    sys.stdout.write(HEADER + "\n".join(rows) + f"\n\n{len(CASES)} rows.\n")
