"""Silent estimator bugs (issue "Meta-learning that demonstrably learns", section 1).

Each test here failed on the code before its fix: the numbers were wrong without any error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

import esmaml
from esmaml.adaptation import ESGradientAdaptation, GradientDescentAdaptation
from esmaml.adaptation.hill_climbing import HillClimbingAdaptation
from esmaml.meta import ESMAML
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.estimators import shape_fitness


class OffsetQuadratics(TaskFamily):
    """f_t(theta) = 0.5 a ||theta - c_t||^2 + offset_t on both phases: differentiable, and the
    per-task offsets (100 and more) dominate any difference between tasks."""

    differentiable = True

    def __init__(self, dim: int = 4, curvature: float = 1.0, offset_scale: float = 100.0):
        self.num_params, self.curvature, self.offset_scale = dim, curvature, offset_scale

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros(self.num_params, dtype=torch.float64)

    def sample_tasks(self, n, *, split="train", generator=None) -> Tasks:
        centers = torch.randn(n, self.num_params, generator=generator, dtype=torch.float64)
        offsets = self.offset_scale * (1 + 9 * torch.rand(n, generator=generator))
        return {"center": centers, "offset": offsets.double()}

    def loss(self, params, tasks, task_ids, *, phase="query", generator=None) -> Tensor:
        ids = task_ids.expand(params.shape[:-1])
        diff = params - tasks["center"][ids]
        return 0.5 * self.curvature * diff.square().sum(-1) + tasks["offset"][ids]


def _meta_objective(family: OffsetQuadratics, lr: float, tasks: Tasks, theta: Tensor) -> Tensor:
    """J(theta) = mean_t f_t(theta - lr grad f_t(theta)), differentiated by autograd."""
    n = tasks["center"].shape[0]
    ids = torch.arange(n)

    def objective(t: Tensor) -> Tensor:
        params = t.expand(n, -1)
        adapted = params - lr * torch.func.grad(
            lambda p: family.loss(p, tasks, ids, phase="adapt").sum()
        )(params)
        return family.loss(adapted, tasks, ids).mean()

    return torch.func.grad(objective)(theta)


def _es_maml_gradient(method: str, shaping: str, num: int, tasks: Tasks, theta: Tensor) -> Tensor:
    family = OffsetQuadratics()
    learner = ESMAML(
        family,
        GradientDescentAdaptation(lr=0.1),
        num_perturbations=num,
        sigma=0.05,
        method=method,
        shaping=shaping,
        generator=torch.Generator().manual_seed(1),
        init_params=theta,
        optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
    )
    before = learner.parameters_flat()
    learner.step(tasks)
    return before - learner.parameters_flat()  # SGD with lr 1: the step is the estimate


@pytest.mark.parametrize(
    ("method", "shaping"),
    [("forward", "none"), ("forward", "zscore"), ("antithetic", "none"), ("antithetic", "zscore")],
)
def test_meta_gradient_cancels_per_task_offsets(method: str, shaping: str) -> None:
    """2000 directions, one task each: every estimator agrees with the autograd meta-gradient
    (cosine >= 0.9) although the tasks' losses differ by hundreds. The forward estimator's
    baseline must be each member's own task's unperturbed post-adaptation value."""
    family = OffsetQuadratics()
    num = 2000
    tasks = family.sample_tasks(num, generator=torch.Generator().manual_seed(0))
    theta = torch.full((4,), 0.5, dtype=torch.float64)
    exact = _meta_objective(family, 0.1, tasks, theta)
    estimate = _es_maml_gradient(method, shaping, num, tasks, theta)
    cosine = torch.nn.functional.cosine_similarity(estimate, exact, dim=0)
    assert cosine >= 0.9, f"{method}/{shaping}: cosine {float(cosine):.3f}"


@pytest.mark.parametrize("shaping", ["zscore", "centered_rank", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_values_get_zero_weights(shaping: str, dtype: torch.dtype) -> None:
    """A plateau (all values equal, e.g. 0.1 whose mean rounds off by an ulp) is no signal."""
    for value in (0.1, -4.0, 1e6 + 0.3, 1e-30):
        values = torch.full((2, 40), value, dtype=dtype)
        shaped = shape_fitness(values, shaping)  # type: ignore[arg-type]
        if shaping == "none":
            assert torch.equal(shaped, values)
        else:
            assert torch.equal(shaped, torch.zeros_like(values)), (value, shaped)


def test_zscore_ignores_spread_below_rounding_but_keeps_real_spread() -> None:
    base = torch.full((20,), 1000.0, dtype=torch.float32)
    ulp = torch.finfo(torch.float32).eps * 1000.0
    assert torch.equal(
        shape_fitness(base + ulp * (torch.arange(20) % 2), "zscore"), torch.zeros(20)
    )
    spread = base + 0.5 * (torch.arange(20) % 2)
    torch.testing.assert_close(
        shape_fitness(spread, "zscore"), (torch.arange(20) % 2).float() * 2 - 1
    )


@pytest.mark.parametrize("method", ["naive", "forward", "antithetic"])
@pytest.mark.parametrize("shaping", ["none", "zscore", "centered_rank"])
def test_constant_objective_gives_zero_gradient(method: str, shaping: str) -> None:
    @esmaml.zero_order(method=method, num_samples=64, sigma=0.1, shaping=shaping, seed=0, argnums=0)
    def constant(params: Tensor) -> Tensor:
        return (params * 0).sum() + 0.1

    theta = torch.randn(6, requires_grad=True)
    (grad,) = torch.autograd.grad(constant(theta), (theta,))
    if method == "naive" and shaping == "none":
        # The naive estimator on raw values is 0.1/N sum z_i / sigma: zero only in expectation.
        assert grad.abs().max() < 1.0
    else:
        assert torch.equal(grad, torch.zeros_like(grad)), grad


class Plateau(OffsetQuadratics):
    """A flat loss (0.1 everywhere), or NaN on one adaptation query when ``nan_query``."""

    def __init__(self, nan_query: bool = False):
        super().__init__(dim=3)
        self.nan_query = nan_query

    def loss(self, params, tasks, task_ids, *, phase="query", generator=None) -> Tensor:
        # 0 * params: NaN parameters give a NaN loss, as any real model would.
        out = torch.full(params.shape[:-1], 0.1, dtype=params.dtype) + 0 * params.sum(-1)
        if self.nan_query and phase == "adapt" and out.ndim >= 2:
            out[..., 3] = float("nan")
        return out


@pytest.mark.parametrize("shaping", ["none", "zscore", "centered_rank"])
@pytest.mark.parametrize("method", ["forward", "antithetic"])
def test_constant_objective_gives_zero_adaptation_step(shaping: str, method: str) -> None:
    family = Plateau()
    tasks = family.sample_tasks(3, generator=torch.Generator().manual_seed(0))
    params = torch.randn(3, 3, dtype=torch.float64)
    operator = ESGradientAdaptation(num_queries=20, sigma=0.1, method=method, shaping=shaping)
    adapted = operator.adapt(family, params, tasks, torch.arange(3), seed=5)
    assert torch.equal(adapted, params)
    climbed = HillClimbingAdaptation(num_queries=5).adapt(family, params, tasks, torch.arange(3), 5)
    assert torch.equal(climbed, params)


@pytest.mark.parametrize("shaping", ["zscore", "centered_rank", "none"])
def test_nan_in_inner_adaptation_reaches_the_nan_policy(shaping: str) -> None:
    """A NaN query value used to be swallowed by the shaping (all weights 0, no step): the
    adapted parameters must be NaN, so the meta-level NaN policy sees it."""
    family = Plateau(nan_query=True)
    tasks = family.sample_tasks(2, generator=torch.Generator().manual_seed(0))
    params = torch.zeros(2, 3, dtype=torch.float64)
    operator = ESGradientAdaptation(num_queries=10, sigma=0.1, shaping=shaping)
    adapted = operator.adapt(family, params, tasks, torch.arange(2), seed=0)
    assert torch.isnan(adapted).all()
    learner = ESMAML(
        family, operator, num_perturbations=4, generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(FloatingPointError, match="nan_policy"):
        learner.step(tasks)


def test_zscore_and_rank_propagate_nan() -> None:
    values = torch.tensor([[1.0, 2.0, float("nan"), 4.0], [1.0, 2.0, 3.0, 4.0]])
    for shaping in ("zscore", "centered_rank"):
        shaped = shape_fitness(values, shaping)  # type: ignore[arg-type]
        assert torch.isnan(shaped[0]).all() and torch.isfinite(shaped[1]).all()
    # Entries masked invalid (dropped samples) are ignored, NaN or not.
    valid = ~torch.isnan(values)
    assert torch.isfinite(shape_fitness(values, "zscore", valid)).all()


def test_centered_rank_ties_share_their_average_rank() -> None:
    values = torch.tensor([3.0, 1.0, 1.0, 2.0, 3.0])
    # ranks: 1 -> (0+1)/2, 2 -> 2, 3 -> (3+4)/2; scaled by 1/(M-1) and centred
    expected = torch.tensor([3.5, 0.5, 0.5, 2.0, 3.5]) / 4 - 0.5
    torch.testing.assert_close(shape_fitness(values, "centered_rank"), expected)
    mirrored = torch.cat([torch.ones(8), torch.ones(8)])  # the [+z..., -z...] layout on a plateau
    assert torch.equal(shape_fitness(mirrored, "centered_rank"), torch.zeros(16))


def test_rollout_observation_statistics_match_float64_for_large_offsets() -> None:
    """Observations around 1000 with a spread of 0.05: a one-pass float32 variance is off by
    tens of percent; the statistics must match numpy's float64 two-pass ones."""
    from envs.core import BatchedMetaEnv
    from esmaml.rl.policies import MLPPolicy
    from esmaml.rl.rollout import rollout

    class FarLine(BatchedMetaEnv):
        observation_dim, action_dim, max_episode_steps = 1, 1, 30
        action_low, action_high = -0.1, 0.1
        task_keys = ("goal",)
        task_shapes = {"goal": (1,)}  # noqa: RUF012
        state_shapes = {"x": (1,)}  # noqa: RUF012
        observation_low, observation_high = (-float("inf"),), (float("inf"),)

        def _sample_task_params(self, n, generator, device, dtype):
            return {"goal": 1000 + torch.rand(n, 1, generator=generator, dtype=dtype) * 0.1}

        def _reset(self, task, batch_shape, generator):
            noise = torch.rand(*batch_shape, 1, generator=generator, dtype=task["goal"].dtype)
            return {"x": 1000.0 + 0.05 * noise}

        def _observe(self, state, task):
            return state["x"]

        def _step(self, state, task, action):
            x = state["x"] + 0.01 * action.clamp(-0.1, 0.1)
            reward = -(x - task["goal"]).abs().squeeze(-1)
            return {"x": x}, reward, torch.zeros_like(reward, dtype=torch.bool)

    env = FarLine()
    generator = torch.Generator().manual_seed(0)
    tasks = env.sample_task_params(64, generator)
    policy = MLPPolicy(1, 1, (), "tanh", -0.1, 0.1)
    params = torch.randn(64, policy.num_params, generator=generator)
    start = env.reset({k: v.unsqueeze(1) for k, v in tasks.items()}, generator)
    result = rollout(env, policy, params, tasks, initial_state=start)
    # Replay the same deterministic trajectories and keep every observation in float64.
    observations, state = [], dict(start)
    act = policy.bind(params)
    batch = {k: v.unsqueeze(1) for k, v in tasks.items()}
    for _ in range(env.max_episode_steps):
        obs = env.observe(state, batch)
        observations.append(obs.double().numpy().reshape(-1))
        state, _, _ = env.step(state, batch, act(obs))
    flat = np.concatenate(observations)
    stats = result.observation_stats
    assert int(stats.count) == flat.size
    np.testing.assert_allclose(stats.mean.numpy(), [flat.mean()], rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), [flat.var()], rtol=1e-4)


def test_nested_grad_through_a_narrow_mlp() -> None:
    """A narrow layer's cached index tensors must not leak out of nested torch.func transforms
    (they were created, and cached, inside the first transform that bound the layer)."""
    from esmaml import models

    models._shifted_index_lists.cache_clear()
    net = models.FunctionalMLP([2, 3, 1], activation="tanh")
    params = net.init_params(torch.Generator().manual_seed(0))
    x = torch.randn(5, 2)

    def loss(p: Tensor) -> Tensor:
        return net.apply(p, x).square().sum()

    def inner(p: Tensor) -> Tensor:
        return loss(p - 0.1 * torch.func.grad(loss)(p))

    grad = torch.func.grad(inner)(params)
    # Then outside any transform, the cache must still serve plain tensors.
    assert torch.isfinite(grad).all()
    assert torch.isfinite(net.apply(params, x)).all()
    hessian_vector = torch.func.jvp(torch.func.grad(loss), (params,), (torch.ones_like(params),))
    assert torch.isfinite(hessian_vector[1]).all()


class LuckyFirstLook(OffsetQuadratics):
    """A noisy loss whose first evaluation of each call batch member is lucky (0), later ones
    honest (|theta - c|^2 >= 0.5): the incumbent's value comes from a lucky rollout."""

    def __init__(self) -> None:
        super().__init__(dim=2, offset_scale=0.0)
        self.calls = 0

    def loss(self, params, tasks, task_ids, *, phase="query", generator=None) -> Tensor:
        self.calls += 1
        honest = 0.5 + super().loss(params, tasks, task_ids, phase=phase)
        return torch.zeros_like(honest) if self.calls == 1 else honest


def test_hill_climbing_keeps_the_stored_incumbent_value_as_the_reference_does() -> None:
    """The reference never re-evaluates the incumbent: after a lucky first look (0) no honest
    proposal (>= 0.5) is strictly better, so the parameters stay, at 1 + K queries."""
    family = LuckyFirstLook()
    tasks = family.sample_tasks(2, generator=torch.Generator().manual_seed(0))
    params = torch.full((2, 2), 3.0, dtype=torch.float64)  # far from every centre
    operator = HillClimbingAdaptation(num_queries=6, sigma=0.5)
    adapted = operator.adapt(family, params, tasks, torch.arange(2), seed=0)
    assert torch.equal(adapted, params)
    assert family.calls == 1 + 6 == operator.queries_per_step  # no re-evaluation
    # An honest first look: proposals towards the centres are accepted.
    family.calls = 1
    moved = operator.adapt(family, params, tasks, torch.arange(2), seed=0)
    assert not torch.equal(moved, params)


def test_named_substreams_are_deterministic_distinct_and_uncorrelated() -> None:
    from esmaml.seeding import substream, substream_generator

    assert substream(0, "adapt", 3) == substream(0, "adapt", 3)
    seeds = {substream(s, *names) for s in (0, 1) for names in [("a",), ("b",), ("a", 0), ("a", 1)]}
    assert len(seeds) == 8 and all(0 <= x < 2**63 for x in seeds)
    assert substream(0, "1") != substream(0, 1)
    draws = [
        torch.randn(20_000, generator=substream_generator(7, name), dtype=torch.float64)
        for name in ("task_pool", "training")
    ]
    correlation = float(torch.corrcoef(torch.stack(draws))[0, 1])
    assert abs(correlation) < 4 / 20_000**0.5  # 4 standard errors of independent streams
    with pytest.raises(TypeError, match="seed must be an int"):
        substream("0", "a")  # type: ignore[arg-type]


def test_task_pool_and_initial_parameters_come_from_independent_streams(tmp_path) -> None:
    """The pool was drawn from torch.Generator().manual_seed(seed), the very stream the initial
    parameters came from: both are now named substreams of the run's seed."""
    from esmaml.config import load_config
    from esmaml.seeding import substream_generator
    from esmaml.training.trainer import Trainer

    config = load_config(
        "configs/nav2d_smoke.yaml", ["seed=3", "wandb.mode=disabled", "task.train_pool=8"]
    )
    trainer = Trainer(config, tmp_path / "run")
    family = trainer.family
    expected_pool = family.sample_tasks(8, generator=substream_generator(3, "task_pool", "train"))
    pool = trainer.sampler.pool("train")
    assert pool is not None and torch.equal(pool["goal"], expected_pool["goal"])
    init = family.init_params(substream_generator(3, "training"))
    assert torch.equal(trainer.learner.parameters_flat(), init)
    coupled = family.sample_tasks(8, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(pool["goal"], coupled["goal"])
