"""The evaluator backends: local == Ray, worker faults, the drop policy, config errors.

One local Ray cluster (num_cpus=2) and one pool of two workers serve the whole module: starting
actors (each imports torch) is the slow part. Problems are nav2d_smoke sized.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")

from esmaml.config import ConfigError, ExperimentConfig, load_config  # noqa: E402
from esmaml.evaluators import (  # noqa: E402
    EvaluationError,
    LocalEvaluator,
    PopulationSpec,
    regenerate_population,
)
from esmaml.evaluators.ray_backend import RayEvaluator, SubBatchResult  # noqa: E402
from esmaml.meta.es_maml import ESMAML  # noqa: E402
from esmaml.training.builders import (  # noqa: E402
    ComponentFactory,
    build_adaptation,
    build_family,
    build_learner,
)
from esmaml.training.trainer import Trainer  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nav2d_smoke.yaml"
N = 8  # nav2d_smoke: 8 antithetic pairs, 8 tasks, K=4, horizon 20


def smoke_config(*overrides: str) -> ExperimentConfig:
    return load_config(CONFIG, ["progress=false", *overrides])


@pytest.fixture(scope="module")
def pool() -> Iterator[RayEvaluator]:
    """A local cluster and a started two-worker pool (half a CPU each, so a Trainer's own
    one-worker pool fits beside it)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = smoke_config()
    evaluator = RayEvaluator(
        build_family(config),
        ComponentFactory(config),
        num_workers=2,
        num_cpus_per_worker=0.5,
        sub_batch_size=1,
    )
    try:
        evaluator.start()
        yield evaluator
    finally:
        evaluator.close()
        ray.shutdown()


@pytest.fixture
def policy(pool: RayEvaluator) -> Iterator[Callable[..., RayEvaluator]]:
    """Set the pool's scheduling / fault policy for one test; restored afterwards."""
    saved = {k: getattr(pool, k) for k in ("sub_batch_size", "max_retries", "max_failed_fraction")}

    def set_policy(**values: Any) -> RayEvaluator:
        for key, value in values.items():
            setattr(pool, key, value)
        return pool

    yield set_policy
    set_policy(**saved)
    pool.after_dispatch = None


def make_learner(evaluator: RayEvaluator | None, nan_policy: str = "raise") -> ESMAML:
    """ES-MAML on nav2d_smoke, from scratch (fresh family, same seeds every time)."""
    config = smoke_config()
    family = build_family(config)
    if evaluator is not None:
        evaluator.family = family  # the driver's family: it receives the workers' statistics
    return ESMAML(
        family,
        build_adaptation(config),
        num_perturbations=N,
        sigma=0.1,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
        nan_policy=nan_policy,
        generator=torch.Generator().manual_seed(0),
        evaluator=evaluator,
    )


def run(learner: ESMAML, iterations: int = 2) -> list[dict[str, Any]]:
    """Meta-steps on fixed tasks; per step: gradient, values, metrics, normaliser, env steps."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(iterations):
        tasks = learner.family.sample_tasks(N, generator=generator)
        metrics = learner.step(tasks)
        values = learner.perturbed_values()
        assert values is not None and learner.theta.grad is not None
        rows.append(
            {
                "grad": learner.theta.grad.clone(),
                "values": values.clone(),
                "metrics": metrics,
                "normalizer": learner.family.normalizer.stats.state_dict(),
                "env_steps": learner.family.env_steps,
            }
        )
    return rows


@pytest.fixture(scope="module")
def local_run() -> list[dict[str, Any]]:
    return run(make_learner(None))


# -- regeneration from the seed (no Ray) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "sampling"), [("antithetic", "orthogonal"), ("naive", "gaussian")]
)
def test_population_regenerated_from_the_seed_is_the_decorators(method: str, sampling: str) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    class Spy(LocalEvaluator):
        def evaluate(self, theta, seed, tasks, inner_seed, spec, *, population=None):  # type: ignore[no-untyped-def]
            assert population is not None
            seen.append((theta.clone(), population.clone(), seed))
            return super().evaluate(theta, seed, tasks, inner_seed, spec, population=population)

    config = smoke_config()
    family, adaptation = build_family(config), build_adaptation(config)
    learner = ESMAML(
        family,
        adaptation,
        num_perturbations=5,
        method=method,
        sampling=sampling,
        generator=torch.Generator().manual_seed(3),
        init_params=torch.randn(family.num_params),
        evaluator=Spy(family, adaptation),
    )
    learner.step(family.sample_tasks(5, generator=torch.Generator().manual_seed(4)))
    [(theta, population, seed)] = seen
    spec = PopulationSpec(5, 0.1, method, sampling)
    assert torch.equal(regenerate_population(theta, seed, spec), population)


# -- local == Ray ---------------------------------------------------------------------------------
def test_ray_gives_the_local_meta_gradient_bitwise(
    policy: Callable[..., RayEvaluator], local_run: list[dict[str, Any]]
) -> None:
    # Sub-batches of 3, 3 and 2 pairs: every member is evaluated with different neighbours.
    remote = run(make_learner(policy(sub_batch_size=3)))
    assert local_run[1]["normalizer"]["count"] >= 2  # iteration 2 ran normalised
    for here, there in zip(local_run, remote):
        assert torch.equal(there["values"], here["values"])
        assert torch.equal(there["grad"], here["grad"])
        for key in ("count", "mean", "m2"):
            assert torch.equal(there["normalizer"][key], here["normalizer"][key]), key
        assert there["env_steps"] == here["env_steps"]
        assert there["metrics"]["worker_restarts"] == 0


def test_ray_in_one_sub_batch_is_bitwise_local(
    policy: Callable[..., RayEvaluator], local_run: list[dict[str, Any]]
) -> None:
    remote = run(make_learner(policy(sub_batch_size=N)))
    for here, there in zip(local_run, remote):
        assert torch.equal(there["values"], here["values"])
        assert torch.equal(there["grad"], here["grad"])


#: Ray's own fault counters: not in a local run's rows, and zero in an undisturbed Ray run.
RAY_ONLY = ("worker_restarts", "retried_sub_batches", "failed_evaluations")


def metrics_rows(config: Path, run_dir: Path, *overrides: str) -> list[dict[str, Any]]:
    """metrics.jsonl of a training run, wall-clock columns (``*time_s``) left out."""
    common = ["progress=false", "wandb.mode=disabled"]
    Trainer(load_config(config, [*common, *overrides]), run_dir).train()
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if not k.endswith("time_s")}
        for key in RAY_ONLY:
            assert row.pop(key, 0) == 0, key
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("config", "iterations", "splits"),
    [
        # Four iterations of HalfCheetah (chaotic physics): 2 pairs, at x2 one per worker.
        (
            "halfcheetah_fb_smoke.yaml",
            4,
            [["evaluator.params.num_workers=1"], ["evaluator.params.num_workers=2"]],
        ),
        # Navigation2D (torch-native): 8 pairs as 3 + 3 + 2 on two workers (one worker:
        # test_trainer_with_ray_matches_local_and_closes_its_workers).
        ("nav2d_smoke.yaml", 3, [["evaluator.params.sub_batch_size=3"]]),
    ],
)
def test_training_runs_are_bitwise_the_same_on_any_split(
    pool: RayEvaluator, tmp_path: Path, config: str, iterations: int, splits: list[list[str]]
) -> None:
    """Local and Ray runs, whole or split into sub-batches, write the same metrics.jsonl
    (timing aside): each member's evaluation is the same arithmetic whatever its sub-batch."""
    path = CONFIG.parent / config
    common = [f"iterations={iterations}", f"evaluation.every={iterations}"]
    ray_common = ["evaluator.backend=ray", "evaluator.params.num_cpus_per_worker=0.5"]
    local = metrics_rows(path, tmp_path / "local", *common)
    assert len(local) == iterations + 1  # the initial evaluation's row, then one per iteration
    for index, split in enumerate(splits):
        remote = metrics_rows(path, tmp_path / f"ray{index}", *common, *ray_common, *split)
        for here, there in zip(local, remote, strict=True):
            assert there == here, f"{split}, iteration {here['iteration']}"


# -- faults ---------------------------------------------------------------------------------------
def kill_worker_mid_iteration(pool: RayEvaluator, pid: int) -> None:
    """SIGKILL ``pid`` right after the first sub-batches are handed out."""
    pool.after_dispatch = lambda _: os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_the_iteration_is_identical(
    policy: Callable[..., RayEvaluator],
) -> None:
    pool = policy(sub_batch_size=1)
    undisturbed = run(make_learner(pool), iterations=1)
    victim = pool.worker_pids()[0]
    kill_worker_mid_iteration(pool, victim)
    [disturbed] = run(make_learner(pool), iterations=1)
    assert disturbed["metrics"]["worker_restarts"] == 1
    assert disturbed["metrics"]["retried_sub_batches"] == 1
    assert disturbed["metrics"]["failed_evaluations"] == 0
    assert torch.equal(disturbed["values"], undisturbed[0]["values"])
    assert torch.equal(disturbed["grad"], undisturbed[0]["grad"])
    assert disturbed["env_steps"] == undisturbed[0]["env_steps"]
    pids = pool.worker_pids()  # the replacement works
    assert victim not in pids and len(set(pids)) == 2


def test_failed_evaluations_within_the_limit_are_dropped_and_logged(
    policy: Callable[..., RayEvaluator], local_run: list[dict[str, Any]]
) -> None:
    pool = policy(sub_batch_size=1, max_retries=0, max_failed_fraction=0.4)
    kill_worker_mid_iteration(pool, pool.worker_pids()[1])
    [row] = run(make_learner(pool, nan_policy="drop"), iterations=1)
    values, metrics = row["values"], row["metrics"]
    lost = torch.isnan(values)
    assert metrics["failed_evaluations"] == int(lost.sum()) == 2
    assert metrics["dropped_samples"] == 1  # the pair is dropped whole
    assert torch.equal(lost[:N], lost[N:])
    assert torch.equal(values[~lost], local_run[0]["values"][~lost])
    assert bool(torch.isfinite(row["grad"]).all())


def test_losing_more_than_max_failed_fraction_raises() -> None:
    config = smoke_config()
    evaluator = RayEvaluator(
        build_family(config), ComponentFactory(config), max_failed_fraction=0.25
    )
    spec = PopulationSpec(N, 0.1, "antithetic", "gaussian")
    batches = [(0, 3), (3, 6), (6, 8)]
    ok = SubBatchResult(torch.zeros(6), None, 0)
    with pytest.raises(EvaluationError, match=r"6 of 16 evaluations \(38%\).*0.25"):
        evaluator._assemble(spec, batches, {1: ok, 2: ok}, [0])
    values, lost = evaluator._assemble(spec, batches, {0: ok, 1: ok}, [2])  # 4 of 16: 25%
    assert lost == int(values.isnan().sum()) == 4


# -- config ---------------------------------------------------------------------------------------
def build(*overrides: str) -> Any:
    config = smoke_config(*overrides)
    family = build_family(config)
    return build_learner(config, family, build_adaptation(config), torch.Generator())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["evaluator.backend=ray", "evaluator.params.num_worker=2"], "did you mean 'num_workers'"),
        (["evaluator.backend=ray", "evaluator.params.num_workers=0"], "num_workers must be"),
        (["evaluator.backend=ray", "evaluator.params.max_failed_fraction=1.5"], r"\[0, 1\)"),
        (["evaluator.backend=ray", "evaluator.params.sub_batch_size=0"], "sub_batch_size"),
        (["evaluator.params.num_workers=2"], "local backend takes none"),
        (["evaluator.backend=ray", "meta.algorithm=first_order"], "es_maml"),
        (
            [
                "evaluator.backend=ray",
                "evaluator.params.max_failed_fraction=0.4",
                "meta.params.nan_policy=raise",
            ],
            "nan_policy=drop",
        ),
        (["evaluator.backend=ray", "meta.params.evaluator=x"], "unknown key 'evaluator'"),
    ],
)
def test_bad_evaluator_config_is_a_config_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(*overrides)


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"evaluator\.backend"):
        smoke_config("evaluator.backend=spark")


def test_ray_config_builds_an_unstarted_ray_evaluator() -> None:
    learner = build(
        "evaluator.backend=ray",
        "evaluator.params.num_workers=3",
        "evaluator.params.max_failed_fraction=0.4",
    )
    assert isinstance(learner.evaluator, RayEvaluator)
    assert learner.evaluator.num_workers == 3 and learner.evaluator.family is learner.family
    assert learner.nan_policy == "drop"
    assert learner.evaluator._workers == []  # workers start on the first evaluation
    assert isinstance(build().evaluator, LocalEvaluator)


# -- the trainer ----------------------------------------------------------------------------------
def test_trainer_with_ray_matches_local_and_closes_its_workers(
    pool: RayEvaluator, tmp_path: Path
) -> None:
    common = ["iterations=2", "evaluation.every=2", "checkpoint.every=2", "wandb.mode=disabled"]
    rows = {}
    for backend in ("local", "ray"):
        extra = ["evaluator.params.num_workers=1"] if backend == "ray" else []
        trainer = Trainer(
            smoke_config(*common, f"evaluator.backend={backend}", *extra), tmp_path / backend
        )
        trainer.train()
        lines = (tmp_path / backend / "metrics.jsonl").read_text().splitlines()
        # Training rows (the iteration -1 row evaluates the initial parameters).
        rows[backend] = [json.loads(line) for line in lines if '"iteration": -1' not in line]
    assert trainer.learner.evaluator._workers == []  # closed when training ended
    for here, there in zip(rows["local"], rows["ray"]):
        assert there["env_steps"] == here["env_steps"] > 0
        assert there["meta_objective"] == here["meta_objective"]
        assert there["worker_restarts"] == 0
