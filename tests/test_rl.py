"""Tests of the RL stack: policies, the batched rollout engine, observation normalisation and
the RL task family (torch-native environments; MuJoCo is in test_rl_mujoco.py)."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import envs
from esmaml.adaptation.es_gradient import ESGradientAdaptation
from esmaml.adaptation.hill_climbing import HillClimbingAdaptation
from esmaml.meta.es_maml import ESMAML
from esmaml.rl import (
    MLPPolicy,
    ObservationNormalizer,
    RLFamily,
    RunningStats,
    rollout,
    rollout_gym,
)
from esmaml.rl import family as family_module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the tensors here are tiny, two threads stall on a loaded 2-core
    machine, and reductions then do not depend on the thread count (determinism)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def committed_normalizer(
    dim: int, seed: int, dtype: torch.dtype = torch.float64
) -> ObservationNormalizer:
    """An enabled normaliser with non-trivial committed statistics."""
    generator = torch.Generator().manual_seed(seed)
    normalizer = ObservationNormalizer(dim)
    values = 0.3 + 0.5 * torch.randn(64, dim, generator=generator, dtype=dtype)
    normalizer.observe(RunningStats.from_batch(values))
    normalizer.commit()
    return normalizer


def replay(
    env: envs.BatchedMetaEnv,
    policy: MLPPolicy,
    params: Tensor,
    task: dict[str, Tensor],
    state: dict[str, Tensor],
    horizon: int,
    normalize: Callable[[Tensor], Tensor],
) -> tuple[float, int, list[Tensor]]:
    """One episode by hand, unbatched: (return, alive steps, observations seen)."""
    total, steps, seen = 0.0, 0, []
    for _ in range(horizon):
        obs = env.observe(state, task)
        seen.append(obs)
        action = policy.act(params[None], normalize(obs)[None, None])[0, 0]
        state, reward, terminated = env.step(state, task, action)
        total += float(reward)
        steps += 1
        if bool(terminated):
            break
    return total, steps, seen


def check_against_replay(
    env: envs.BatchedMetaEnv,
    policy: MLPPolicy,
    params: Tensor,
    task: dict[str, Tensor],
    initial: dict[str, Tensor] | None,
    horizon: int,
    normalize: Callable[[Tensor], Tensor],
    rtol: float,
) -> list[int]:
    """Runs the batched engine and the hand replay; returns the replayed episode lengths."""
    n = params.shape[0]
    episodes = next(iter(initial.values())).shape[1] if initial is not None else 3
    result = rollout(
        env,
        policy,
        params,
        task,
        episodes=episodes,
        horizon=horizon,
        normalize=normalize,
        initial_state=initial,
    )
    assert result.episode_returns.shape == (n, episodes)
    assert result.returns.shape == (n,)
    lengths, seen = [], []
    for i in range(n):
        row_task = {k: v[i] for k, v in task.items()}
        for e in range(episodes):
            state = (
                {k: v[i, e] for k, v in initial.items()}
                if initial is not None
                else env.reset(row_task)
            )
            total, steps, observations = replay(
                env, policy, params[i], row_task, state, horizon, normalize
            )
            expected = torch.tensor(total, dtype=result.episode_returns.dtype)
            torch.testing.assert_close(result.episode_returns[i, e], expected, rtol=rtol, atol=0)
            lengths.append(steps)
            seen.extend(observations)
    torch.testing.assert_close(result.returns, result.episode_returns.mean(1))
    assert result.steps == sum(lengths)
    one_pass = RunningStats.from_batch(torch.stack(seen))
    stats = result.observation_stats
    assert float(stats.count) == sum(lengths)
    # The engine sums in the observation dtype: float32 rounding only.
    tolerance = 1e-10 if seen[0].dtype == torch.float64 else 1e-4
    torch.testing.assert_close(stats.mean, one_pass.mean, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(stats.var, one_pass.var, rtol=tolerance, atol=tolerance)
    return lengths


# ------------------------------------------------------------------------------ rollout engine
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rollout_navigation_returns_are_per_step_sums_until_termination(
    dtype: torch.dtype,
) -> None:
    env = envs.Navigation2D(check_finite=False)
    policy = MLPPolicy(2, 2, (), "tanh", env.action_low, env.action_high)
    generator = torch.Generator().manual_seed(3)
    n, episodes, horizon = 5, 3, 40
    goals = torch.tensor(
        [[0.3, 0.0], [-0.2, 0.25], [0.6, -0.7], [0.05, 0.02], [-0.9, 0.9]], dtype=dtype
    )
    # Bias towards the goal (a straight walk at up to 0.1 per step terminates within 0.1 of
    # it) plus a random linear part, so some episodes end early and others run out the horizon.
    params = torch.zeros(n, policy.num_params, dtype=dtype)
    params[:, :4] = 0.5 * torch.randn(n, 4, generator=generator, dtype=dtype)
    params[:, 4:] = 3.0 * goals / goals.norm(dim=-1, keepdim=True)
    params[4, :4] = torch.tensor([4.0, 0.0, 0.0, 4.0], dtype=dtype)  # pushed off the goal
    # Different random starts per episode (replacing the origin reset) make the E episodes of a
    # row differ.
    start = 0.2 * torch.rand(n, episodes, 2, generator=generator, dtype=dtype) - 0.1
    normalize = committed_normalizer(2, seed=1)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    lengths = check_against_replay(
        env, policy, params, {"goal": goals}, {"pos": start}, horizon, normalize, rtol
    )
    assert min(lengths) < horizon / 2, lengths  # terminated early
    assert max(lengths) == horizon, lengths  # and some never reached the goal


def test_rollout_navigation_default_reset_terminates_on_the_first_step() -> None:
    env = envs.Navigation2D(check_finite=False)
    policy = MLPPolicy(2, 2, (), "tanh", env.action_low, env.action_high)
    params = torch.zeros(2, policy.num_params, dtype=torch.float64)
    goals = torch.tensor([[0.05, 0.05], [0.9, 0.9]], dtype=torch.float64)
    lengths = check_against_replay(
        env, policy, params, {"goal": goals}, None, 15, lambda obs: obs, rtol=1e-12
    )
    # Zero policy at the origin: the near goal ends every episode at once, the far one never.
    assert lengths == [1, 1, 1, 15, 15, 15]


def test_rollout_four_corners_returns_are_per_step_sums() -> None:
    env = envs.FourCorners(check_finite=False)
    policy = MLPPolicy(2, 2, (8,), "tanh", env.action_low, env.action_high)
    generator = torch.Generator().manual_seed(4)
    n, episodes, horizon = 4, 2, 60
    params = 2.0 * torch.randn(n, policy.num_params, generator=generator)
    goals = env.corner_goals(torch.arange(n))
    start = 3.0 * torch.rand(n, episodes, 2, generator=generator) - 1.5
    lengths = check_against_replay(
        env, policy, params, {"goal": goals}, {"pos": start}, horizon, lambda obs: obs, 1e-5
    )
    assert lengths == [horizon] * (n * episodes)  # FourCorners never terminates


def test_rollout_gym_on_the_batched_vector_env_seeds_every_episode() -> None:
    # rollout_gym resets its vector env with one seed per sub-env; episode e of row i must start
    # where a single env reset with seed seeds[i] * 1000 + e starts.
    env = envs.MetaPendulum()
    policy = MLPPolicy(
        env.observation_dim, env.action_dim, (), "tanh", env.action_low, env.action_high
    )
    generator = torch.Generator().manual_seed(0)
    n, episodes, horizon = 3, 2, 20
    params = 0.5 * torch.randn(n, policy.num_params, generator=generator)
    params[1] = params[0]
    task_params = env.sample_task_params(n, generator)
    task_params = {k: torch.stack([v[0], v[0], v[2]]) for k, v in task_params.items()}
    seeds = [5, 5, 6]
    result = rollout_gym(
        lambda k: envs.BatchedMetaVectorEnv(env, k),
        policy,
        params,
        envs.params_to_tasks(task_params),
        episodes=episodes,
        horizon=horizon,
        seeds=seeds,
        chunk=4,  # 6 episodes: a second, padded chunk
    )
    assert torch.equal(result.episode_returns[1], result.episode_returns[0])  # same seeds
    assert not torch.allclose(result.episode_returns[2], result.episode_returns[0])
    single = envs.SingleMetaEnv(env)
    starts: dict[str, list[Tensor]] = {}
    for i in range(n):
        for e in range(episodes):
            single.reset(seed=seeds[i] * 1000 + e)
            for k, v in (single.state or {}).items():
                starts.setdefault(k, []).append(v)
    initial = {k: torch.stack(v).view(n, episodes) for k, v in starts.items()}
    expected = rollout(
        env, policy, params, task_params, episodes=episodes, horizon=horizon, initial_state=initial
    )
    torch.testing.assert_close(result.episode_returns, expected.episode_returns)
    assert result.steps == expected.steps == n * episodes * horizon


# -------------------------------------------------------------------- common random numbers
class RolloutSpy:
    """Wraps esmaml.rl.family.rollout and records what each call received."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(
            {
                "params": args[2].clone(),
                "initial_state": {k: v.clone() for k, v in kwargs["initial_state"].items()},
            }
        )
        return rollout(*args, **kwargs)


def start_rows(call: dict[str, Any]) -> Tensor:
    """The start states of a call as one [M, E, S] tensor."""
    state = call["initial_state"]
    return torch.stack([state[k] for k in sorted(state)], -1)


def test_members_on_one_task_id_share_start_states(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = RolloutSpy()
    monkeypatch.setattr(family_module, "rollout", spy)
    family = RLFamily("MetaPendulum", episodes=3, horizon=25)
    tasks = family.sample_tasks(3, generator=torch.Generator().manual_seed(0))
    tasks = {k: v.clone() for k, v in tasks.items()}
    for key in tasks:  # task 2 is a copy of task 0: same physics, its own start states
        tasks[key][2] = tasks[key][0]
    generator = torch.Generator().manual_seed(1)
    params = 0.5 * torch.randn(6, family.num_params, generator=generator)
    params[3] = params[0]
    params[5] = params[0]
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    losses = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(7))
    starts = start_rows(spy.calls[-1])  # [6, 3, 2]
    for i in range(6):
        for j in range(6):
            same = bool(torch.equal(starts[i], starts[j]))
            assert same == (int(ids[i]) == int(ids[j])), (i, j)
    assert not torch.equal(starts[0, 0], starts[0, 1])  # random resets: episodes differ
    # Same parameters on the same task id: the same return; on an identical task with its own
    # id: other start states, another return.
    assert losses[3] == losses[0]
    assert losses[5] != losses[0]
    # The same generator seed reproduces every start; another seed draws new ones.
    again = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(again, losses, rtol=0, atol=0)
    torch.testing.assert_close(start_rows(spy.calls[-1]), starts, rtol=0, atol=0)
    family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(start_rows(spy.calls[-1]), starts)


def test_antithetic_pairs_see_identical_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = RolloutSpy()
    monkeypatch.setattr(family_module, "rollout", spy)
    family = RLFamily("MetaPendulum", episodes=2, horizon=10)
    # Raw values (shaping none): the forward estimator evaluates its pivot f(theta) too.
    adaptation = ESGradientAdaptation(num_queries=3, sigma=0.1, step_size=0.05, shaping="none")
    pairs = 4
    learner = ESMAML(
        family,
        adaptation,
        num_perturbations=pairs,
        tasks_per_iteration=3,  # does not divide the 4 directions: pairs still share a task
        generator=torch.Generator().manual_seed(0),
    )
    learner.step(family.sample_tasks(3, generator=torch.Generator().manual_seed(1)))
    assert len(spy.calls) == 3  # adaptation queries, adaptation pivot, query phase
    for call in spy.calls:
        starts = start_rows(call)
        members = starts.shape[0]
        assert members % (2 * pairs) == 0
        block = members // (2 * pairs)  # rows per member (K queries per member, or one)
        for i in range(pairs):
            plus = starts[i * block : (i + 1) * block]
            minus = starts[(i + pairs) * block : (i + pairs + 1) * block]
            assert torch.equal(plus, minus), i
        assert not torch.equal(starts[0], starts[block])  # directions 0 and 1: other tasks
    # The query phase scored theta + sigma z and theta - sigma z on those shared starts.
    query = spy.calls[-1]["params"]
    assert not torch.equal(query[0], query[pairs])


# ----------------------------------------------------------------------------- normalisation
def test_merged_statistics_equal_one_pass_statistics() -> None:
    generator = torch.Generator().manual_seed(0)
    dim = 3
    values = 1000.0 + 2.0 * torch.randn(400, dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(400, generator=generator) < 0.7
    junk = torch.rand(int((~mask).sum()), dim, generator=generator, dtype=torch.float64)
    values[~mask] = junk.masked_fill(junk < 0.5, math.nan).masked_fill(junk >= 0.5, 1e30)
    reference = RunningStats.from_batch(values[mask])
    assert torch.isfinite(RunningStats.from_batch(values, mask).mean).all()
    bounds = [0, 0, 1, 57, 57, 200, 203, 400]  # empty, single-row and uneven chunks
    chunks = [(values[a:b], mask[a:b]) for a, b in itertools.pairwise(bounds)]
    chunks.append((values[:0], mask[:0]))
    chunks.append((values[:5], torch.zeros(5, dtype=torch.bool)))  # fully masked
    merged = RunningStats.zeros(dim, "cpu")
    for chunk, chunk_mask in chunks:
        merged = merged.merge(RunningStats.from_batch(chunk, chunk_mask))
    masked_one_pass = RunningStats.from_batch(values, mask)
    for stats in (merged, masked_one_pass):
        assert float(stats.count) == int(mask.sum())
        torch.testing.assert_close(stats.mean, reference.mean, rtol=1e-12, atol=0)
        torch.testing.assert_close(stats.m2, reference.m2, rtol=1e-9, atol=0)
        torch.testing.assert_close(
            stats.var, values[mask].var(0, unbiased=False), rtol=1e-9, atol=0
        )
    # Merging is order-free (up to rounding) and the empty statistics are its identity.
    backwards = RunningStats.zeros(dim)
    for chunk, chunk_mask in reversed(chunks):
        backwards = RunningStats.from_batch(chunk, chunk_mask).merge(backwards)
    torch.testing.assert_close(backwards.m2, reference.m2, rtol=1e-9, atol=0)
    empty = RunningStats.zeros(dim).merge(RunningStats.zeros(dim))
    assert float(empty.count) == 0 and torch.equal(empty.m2, torch.zeros(dim, dtype=torch.float64))


def test_normalizer_transform_and_commit() -> None:
    normalizer = ObservationNormalizer(2, clip=3.0, mode="legacy")
    obs = torch.tensor([[0.5, -2.0]])
    assert torch.equal(normalizer(obs), obs)  # no statistics yet: the identity
    values = torch.tensor([[0.0, 10.0], [2.0, 14.0], [4.0, 12.0]], dtype=torch.float64)
    normalizer.observe(RunningStats.from_batch(values))
    assert torch.equal(normalizer(obs), obs)  # pending only
    normalizer.commit()
    assert float(normalizer.pending.count) == 0
    mean, std = values.mean(0), values.std(0, unbiased=False)
    expected = ((obs.double() - mean) / std).clamp(-3.0, 3.0).float()
    torch.testing.assert_close(normalizer(obs), expected)
    assert normalizer(obs).dtype == torch.float32
    assert normalizer(obs.double()).dtype == torch.float64
    # The default (the reference's): no clipping, no epsilon, a constant dimension's std is 1.
    preserving = ObservationNormalizer(2)
    constant = torch.tensor([[1.0, 10.0], [3.0, 10.0]], dtype=torch.float64)
    preserving.observe(RunningStats.from_batch(constant))
    preserving.commit()
    far = torch.tensor([[1000.0, 13.0]], dtype=torch.float64)
    torch.testing.assert_close(preserving(far), torch.tensor([[998.0, 3.0]], dtype=torch.float64))
    disabled = ObservationNormalizer(2, enabled=False)
    disabled.observe(RunningStats.from_batch(values))
    disabled.commit()
    assert float(disabled.stats.count) == 0 and torch.equal(disabled(obs), obs)


def nav_family(**kwargs: Any) -> tuple[RLFamily, dict[str, Tensor], Tensor, Tensor]:
    family = RLFamily("Navigation2D", horizon=20, **kwargs)
    tasks = family.sample_tasks(4, generator=torch.Generator().manual_seed(0))
    params = 0.5 * torch.randn(8, family.num_params, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(8) % 4
    return family, tasks, params, ids


def test_normalizer_is_frozen_within_an_iteration() -> None:
    family, tasks, params, ids = nav_family(normalize_observations="legacy")
    first = family.loss(params, tasks, ids)
    assert float(family.normalizer.stats.count) == 0
    assert float(family.normalizer.pending.count) == family.env_steps > 0
    assert torch.equal(family.end_iteration(params), params)  # legacy: theta left as it is
    committed = family.normalizer.stats.state_dict()
    assert float(family.normalizer.pending.count) == 0
    second = family.loss(params, tasks, ids)
    assert not torch.equal(second, first)  # the policy now sees normalised observations
    for _ in range(2):  # more loss calls in the same iteration: the same normalisation
        torch.testing.assert_close(family.loss(params, tasks, ids), second, rtol=0, atol=0)
    for key, value in family.normalizer.stats.state_dict().items():
        assert torch.equal(value, committed[key]), key
    assert float(family.normalizer.pending.count) == family.env_steps - committed["count"]
    family.end_iteration(params)
    assert float(family.normalizer.stats.count) == family.env_steps
    assert not torch.equal(family.loss(params, tasks, ids), second)


@pytest.mark.parametrize("hidden", [(), (8,)])
@pytest.mark.parametrize("parametrization", ["scaled", "reference"])
def test_preserving_normalizer_keeps_the_policy_function(
    hidden: tuple[int, ...], parametrization: str
) -> None:
    """Statistics come from query rollouts only, and when they move theta is re-expressed: the
    same actions on every observation, hence the same returns (to float64 rounding)."""
    family, tasks, params, ids = nav_family(hidden=hidden, parametrization=parametrization)
    params = params.double()
    family.loss(params, tasks, ids, phase="adapt")
    assert float(family.normalizer.pending.count) == 0  # adaptation rollouts do not count
    before = family.loss(params, tasks, ids, phase="query")
    assert float(family.normalizer.pending.count) == family.env_steps / 2 > 0
    with family.frozen():
        for _ in range(3):
            rebased = family.end_iteration(params)
            assert float(family.normalizer.stats.count) > 0
            after = family.loss(rebased, tasks, ids)
            torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)
            obs = 3 * torch.randn(8, 5, 2, dtype=torch.float64)
            family.normalizer.observe(RunningStats.from_batch(obs + 2.0))
            old = family.policy.act(rebased, family.normalizer(obs))
            params = rebased
            rebased = family.end_iteration(params)
            new = family.policy.act(rebased, family.normalizer(obs))
            torch.testing.assert_close(new, old, rtol=1e-9, atol=1e-12)
            params = rebased


def test_frozen_context_stops_collection() -> None:
    family, tasks, params, ids = nav_family()
    family.loss(params, tasks, ids)
    pending = family.normalizer.pending.state_dict()
    with family.frozen():
        family.loss(params, tasks, ids)
        with family.frozen():  # nested
            family.loss(params, tasks, ids)
        family.loss(params, tasks, ids)
    for key, value in family.normalizer.pending.state_dict().items():
        assert torch.equal(value, pending[key]), key
    with pytest.raises(RuntimeError), family.frozen():
        raise RuntimeError("evaluation failed")
    assert family.collect_statistics
    family.loss(params, tasks, ids)
    assert float(family.normalizer.pending.count) > float(pending["count"])


def test_state_dict_round_trip() -> None:
    family, tasks, params, ids = nav_family()
    family.loss(params, tasks, ids)
    params = family.end_iteration(params)
    family.loss(params, tasks, ids)  # pending statistics too
    buffer = io.BytesIO()
    torch.save(family.state_dict(), buffer)
    buffer.seek(0)
    restored, _, _, _ = nav_family()
    restored.load_state_dict(torch.load(buffer))
    for part in ("stats", "pending"):
        ours = getattr(family.normalizer, part).state_dict()
        for key, value in getattr(restored.normalizer, part).state_dict().items():
            assert torch.equal(value, ours[key]), (part, key)
    torch.testing.assert_close(
        restored.loss(params, tasks, ids), family.loss(params, tasks, ids), rtol=0, atol=0
    )
    params_after = family.end_iteration(params)
    assert torch.equal(restored.end_iteration(params), params_after)
    torch.testing.assert_close(
        restored.loss(params, tasks, ids), family.loss(params, tasks, ids), rtol=0, atol=0
    )
    # The saved state is a copy: later updates do not reach it.
    state = family.state_dict()
    family.loss(params, tasks, ids)
    family.end_iteration(params)
    assert float(state["normalizer"]["stats"]["count"]) < float(family.normalizer.stats.count)


# ---------------------------------------------------------------------------------- policies
def hand_built(
    sizes: list[int], activation: type[nn.Module], flat: Tensor, low: float, high: float
) -> Callable[[Tensor], Tensor]:
    """nn.Sequential with weights copied slice by slice from ``flat``, tanh output, scaled."""
    layers: list[nn.Module] = []
    offset = 0
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(fan_in, fan_out, dtype=flat.dtype)
        with torch.no_grad():
            linear.weight.copy_(flat[offset : offset + fan_out * fan_in].view(fan_out, fan_in))
            offset += fan_out * fan_in
            linear.bias.copy_(flat[offset : offset + fan_out])
            offset += fan_out
        layers.append(linear)
        layers.append(nn.Tanh() if i == len(sizes) - 2 else activation())
    assert offset == flat.numel()
    module = nn.Sequential(*layers)
    return lambda obs: module(obs) * (high - low) / 2 + (high + low) / 2


@pytest.mark.parametrize(
    ("obs_dim", "act_dim", "hidden", "activation", "low", "high"),
    [
        (2, 2, (), "tanh", -0.1, 0.1),
        (17, 6, (), "tanh", -1.0, 1.0),
        (3, 1, (16, 8), "tanh", -2.0, 2.0),
        (17, 6, (32,), "relu", -1.0, 1.0),
        (4, 2, (5,), "relu", 0.0, 3.0),
    ],
)
def test_mlp_policy_equals_hand_built_sequential(
    obs_dim: int,
    act_dim: int,
    hidden: tuple[int, ...],
    activation: str,
    low: float,
    high: float,
) -> None:
    policy = MLPPolicy(obs_dim, act_dim, hidden, activation, low, high)
    sizes = [obs_dim, *hidden, act_dim]
    assert policy.num_params == sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    generator = torch.Generator().manual_seed(0)
    n, episodes = 3, 5
    params = torch.randn(n, policy.num_params, generator=generator, dtype=torch.float64)
    obs = 2.0 * torch.randn(n, episodes, obs_dim, generator=generator, dtype=torch.float64)
    actions = policy.act(params, obs)
    assert actions.shape == (n, episodes, act_dim)
    module_activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    for i in range(n):
        expected = hand_built(sizes, module_activation, params[i], low, high)(obs[i])
        torch.testing.assert_close(actions[i], expected, rtol=1e-12, atol=1e-12)
    bound = policy.bind(params)
    torch.testing.assert_close(bound(obs), actions, rtol=0, atol=0)
    torch.testing.assert_close(bound(obs + 1.0), policy.act(params, obs + 1.0), rtol=0, atol=0)
    # Huge inputs saturate inside the box.
    extreme = policy.act(1e3 * params, 1e3 * obs)
    assert bool((extreme >= low).all()) and bool((extreme <= high).all())
    # float32 works the same way.
    torch.testing.assert_close(
        policy.act(params.float(), obs.float()), actions.float(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(("hidden", "low", "high"), [((), -0.1, 0.1), ((8, 4), 0.0, 3.0)])
def test_zero_initialised_output_acts_at_the_box_centre(
    hidden: tuple[int, ...], low: float, high: float
) -> None:
    policy = MLPPolicy(3, 2, hidden, "tanh", low, high)
    params = policy.init_params(torch.Generator().manual_seed(0))
    assert params.shape == (policy.num_params,)
    torch.testing.assert_close(
        policy.init_params(torch.Generator().manual_seed(0)), params, rtol=0, atol=0
    )
    output_layer = (hidden[-1] if hidden else 3) * 2 + 2
    assert torch.equal(params[-output_layer:], torch.zeros(output_layer))
    if hidden:
        assert bool((params[:-output_layer] != 0).any())  # hidden layers keep their init
    obs = 5.0 * torch.randn(1, 7, 3)
    torch.testing.assert_close(
        policy.act(params[None], obs), torch.full((1, 7, 2), (low + high) / 2)
    )


def test_mlp_policy_rejects_an_empty_box() -> None:
    with pytest.raises(ValueError, match="low < high"):
        MLPPolicy(2, 2, (), "tanh", 1.0, 1.0)


# ------------------------------------------------------------------------- family bad inputs
def test_family_unknown_env_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        RLFamily("Navigation3D")
    message = str(error.value)
    assert "'Navigation3D'" in message
    for name in (*envs.BATCHED_ENVS, "HalfCheetahForwardBackward", "AntDirection"):
        assert name in message
    with pytest.raises(ValueError, match=r"(?i)valid"):
        RLFamily("esmaml/Nope-v0")


def test_family_accepts_registered_ids_and_rejects_bad_settings() -> None:
    family = RLFamily("esmaml/FourCorners-v0")
    assert family.horizon == envs.FourCorners.max_episode_steps
    assert family.num_params == 2 * 2 + 2
    with pytest.raises(ValueError, match="episodes"):
        RLFamily("Navigation2D", episodes=0)
    # device='cuda' selects MuJoCo Warp for the MuJoCo tasks (docs/mujoco.md); gymnasium's
    # path runs on the CPU only.
    if importlib.util.find_spec("mujoco_warp") is None:
        with pytest.raises(ImportError, match="mujoco-warp"):
            RLFamily("HalfCheetahForwardBackward", device="cuda")
    with pytest.raises(ValueError, match="CPU"):
        RLFamily("esmaml/AntDirection-v0", device="cuda:0", mujoco_backend="gymnasium")


def test_family_rejects_bad_params_and_task_ids() -> None:
    family, tasks, params, ids = nav_family()
    with pytest.raises(ValueError, match=f"last dim {family.num_params}"):
        family.loss(params[:, :-1], tasks, ids)
    with pytest.raises(ValueError, match=f"last dim {family.num_params}"):
        family.loss(torch.zeros(8, family.num_params + 3), tasks, ids)
    with pytest.raises(TypeError, match="int64"):
        family.loss(params, tasks, ids.float())
    with pytest.raises(TypeError, match="int64"):
        family.loss(params, tasks, ids.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="broadcast"):
        family.loss(params, tasks, ids[:3])
    with pytest.raises(ValueError, match="broadcast"):
        family.loss(params, tasks, ids.expand(2, 8))  # more dims than the batch
    assert float(family.normalizer.pending.count) == 0 and family.env_steps == 0
    # Broadcastable ids and batched parameter grids work.
    grid = params.view(2, 4, -1)
    losses = family.loss(grid, tasks, torch.arange(4))
    assert losses.shape == (2, 4)
    torch.testing.assert_close(losses.reshape(-1), family.loss(params, tasks, ids))
    single = family.loss(params[0], tasks, torch.tensor(0))
    assert single.shape == ()
    torch.testing.assert_close(single, losses[0, 0])
    assert family.loss(params, tasks, ids.int()).shape == (8,)


def test_family_float64_params_with_float32_tasks() -> None:
    family, tasks, params, ids = nav_family()
    assert tasks["goal"].dtype == torch.float32
    loss64 = family.loss(params.double(), tasks, ids)
    assert loss64.dtype == torch.float64
    torch.testing.assert_close(
        loss64.float(), family.loss(params, tasks, ids), rtol=1e-4, atol=1e-4
    )


def test_family_returns_minus_the_mean_return() -> None:
    family = RLFamily("FourCorners", episodes=2, horizon=30, normalize_observations=False)
    tasks = {"goal": envs.FourCorners.corner_goals(torch.arange(4))}
    params = torch.zeros(4, family.num_params)
    params[:, 4:] = 3.0 * tasks["goal"] / 2.0  # bias towards each corner at ~0.1 per step
    losses = family.loss(params, tasks, torch.arange(4))
    expected = rollout(family.env, family.policy, params, tasks, episodes=2, horizon=30).returns
    torch.testing.assert_close(losses, -expected, rtol=0, atol=0)
    assert bool((losses < 4.0 * 30).all())  # the corner's signal was reached
    assert family.env_steps == 4 * 2 * 30


# ---------------------------------------------------------------------------- ES-MAML learns
def rows(path: Path) -> list[dict[str, Any]]:
    drop = ("time_s", "iteration_time_s")
    lines = path.read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


@pytest.mark.slow
def test_es_maml_improves_held_out_post_adaptation_on_navigation(tmp_path: Path) -> None:
    from esmaml.config import load_config
    from esmaml.training.trainer import Trainer

    # The paper's Navigation2D setup as shipped (configs/nav2d_es.yaml: K=20, sigma 0.1,
    # alpha 0.05, 150 pairs, SGD 0.01, the reference policy and normaliser), 40 iterations.
    overrides = [
        "iterations=40",
        "evaluation.every=40",
        "checkpoint.every=40",
        "progress=false",
    ]
    config = load_config(REPO / "configs" / "nav2d_es.yaml", overrides)
    trainer = Trainer(config, tmp_path / "run")
    initial = trainer.evaluate().summary("eval")  # iteration 0: theta0 on the held-out tasks
    summary = trainer.train()
    before = initial["eval_post_adaptation"]
    after = summary["eval_post_adaptation"]
    # The trainer's own iteration -1 row is that same evaluation.
    assert rows(tmp_path / "run" / "metrics.jsonl")[0]["eval_post_adaptation"] == before
    # Meta-training makes adaptation work better: here 81.8 -> 39.7 (minus the return).
    assert after < 0.6 * before, (before, after)
    assert summary["eval_return_post_adaptation"] == -after
    metrics = rows(tmp_path / "run" / "metrics.jsonl")
    assert [row["iteration"] for row in metrics] == list(range(-1, 40))
    metrics = metrics[1:]  # the iteration -1 row evaluates the initial parameters
    assert all(row["env_steps"] > 0 for row in metrics)
    # Deterministic: a second run from the same seed repeats the first iterations exactly.
    short = load_config(REPO / "configs" / "nav2d_es.yaml", [*overrides, "iterations=3"])
    Trainer(short, tmp_path / "again").train()
    again = rows(tmp_path / "again" / "metrics.jsonl")[1:]
    keys = ("meta_objective", "grad_norm", "perturbed_std", "env_steps", "queries_total")
    assert [{k: r[k] for k in keys} for r in again] == [
        {k: r[k] for k in keys} for r in metrics[:3]
    ]


# ---------------------------------------------------------------------------------- CUDA
# Every CUDA test has a CPU twin that runs everywhere: the CUDA-only versions went stale
# unnoticed (a changed signature, a new metrics row) until a GPU machine ran them.
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
@pytest.mark.parametrize("env", ["Navigation2D", "FourCorners", "SixCircles"])
def test_device_loss_equals_cpu_loss(env: str, device: str) -> None:
    losses = {}
    for where in ("cpu", device):
        family = RLFamily(env, hidden=(16,), episodes=2, horizon=40, device=where)
        tasks = family.sample_tasks(4, generator=torch.Generator().manual_seed(0))
        assert tasks[next(iter(tasks))].device.type == where
        generator = torch.Generator().manual_seed(1)
        params = (0.5 * torch.randn(8, family.num_params, generator=generator)).double()
        params = params.to(where)
        ids = (torch.arange(8) % 4).to(where)
        first = family.loss(params, tasks, ids)
        params = family.end_iteration(params)  # normalisation statistics from the first call
        assert params.device.type == where
        second = family.loss(params, tasks, ids)
        assert first.device.type == where and first.dtype == torch.float64
        assert torch.isfinite(first).all() and torch.isfinite(second).all()
        losses[where] = (first.cpu(), second.cpu(), family.env_steps)
    assert losses["cpu"][2] > 0
    torch.testing.assert_close(losses[device][0], losses["cpu"][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(losses[device][1], losses["cpu"][1], rtol=1e-9, atol=1e-9)
    assert losses[device][2] == losses["cpu"][2]


def test_hill_climbing_average_mode_gives_each_evaluation_its_own_rollouts() -> None:
    """MetaPendulum draws start states per task id: the m evaluations of one point must not
    share them, or the average costs m queries and removes no noise."""
    family = RLFamily("MetaPendulum", normalize_observations=False, horizon=20)
    tasks = family.sample_tasks(2, generator=torch.Generator().manual_seed(1))
    theta = torch.randn(family.num_params, generator=torch.Generator().manual_seed(2)) * 0.5
    scored: list[Tensor] = []
    loss = family.loss

    def spy(params: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        scored.append(loss(params, *args, **kwargs))
        return scored[-1]

    family.loss = spy  # type: ignore[method-assign]
    operator = HillClimbingAdaptation(num_queries=3, sigma=0.1, mode="average", evaluations=4)
    adapted = operator.adapt(family, theta.expand(2, -1), tasks, torch.arange(2), seed=123)
    assert len(scored) == 4 and all(values.shape == (2, 4) for values in scored)
    for values in scored:  # the same parameters on different start states
        assert values.std(-1).min() > 1.0
    # The same seed repeats every rollout.
    again = operator.adapt(family, theta.expand(2, -1), tasks, torch.arange(2), seed=123)
    torch.testing.assert_close(again, adapted, rtol=0, atol=0)


def test_first_order_meta_directions_do_not_reuse_the_adaptation_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPU randn builds normals from the same uniforms rand gives: meta directions drawn from
    the adaptation rollouts' seed were an exact function of the adaptation start angles
    (r^2 = -2 log(1 - u) with the angle (2u - 1) pi), which makes theta' depend on them."""
    from esmaml.adaptation import ESGradientAdaptation
    from esmaml.meta import first_order as first_order_module
    from esmaml.meta.first_order import FirstOrderESMAML

    family = RLFamily("MetaPendulum", normalize_observations=False, horizon=5)
    adaptation = ESGradientAdaptation(num_queries=4, sigma=0.1, step_size=0.05)
    learner = FirstOrderESMAML(
        family,
        adaptation,
        num_perturbations=4,
        tasks_per_iteration=4,
        generator=torch.Generator().manual_seed(0),
    )
    tasks = family.sample_tasks(4, generator=torch.Generator().manual_seed(1))
    seen: dict[str, Tensor] = {}
    reset, sample_noise = family.env.reset, first_order_module.sample_noise

    def spy_reset(task: Any, generator: Any = None) -> Any:
        state = reset(task, generator)
        seen.setdefault("angles", state["th"].clone())  # the first reset: adaptation queries
        return state

    def spy_noise(*args: Any, **kwargs: Any) -> Tensor:
        seen["directions"] = sample_noise(*args, **kwargs)
        return seen["directions"]

    monkeypatch.setattr(family.env, "reset", spy_reset)
    monkeypatch.setattr(first_order_module, "sample_noise", spy_noise)
    deviations = []
    for seed in range(20):
        seen.clear()
        learner.meta_gradient(tasks, seed)
        flat = seen["directions"].reshape(-1)
        angle = seen["angles"][0, 0]
        predicted = -2 * torch.log1p(-((angle / torch.pi + 1) / 2))
        deviations.append(float((flat[0] ** 2 + flat[8] ** 2 - predicted).abs()))
    assert max(deviations) > 0.1  # with the shared stream: below 1e-5 for every seed


def test_reference_normalizer_learns_from_queries_and_leaves_theta() -> None:
    """normalize_observations=reference: the google-research code's normaliser, statistics of
    the query rollouts only, theta untouched when they move (its function changes)."""
    family, tasks, params, ids = nav_family(normalize_observations="reference")
    family.loss(params, tasks, ids, phase="adapt")
    assert float(family.normalizer.pending.count) == 0
    before = family.loss(params, tasks, ids, phase="query")
    assert float(family.normalizer.pending.count) > 0
    assert torch.equal(family.end_iteration(params), params)
    assert not torch.equal(family.loss(params, tasks, ids), before)
    with pytest.raises(ValueError, match="normalize_observations='sometimes' is not valid"):
        RLFamily("Navigation2D", normalize_observations="sometimes")
