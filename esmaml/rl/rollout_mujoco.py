"""The rollout engine on the batched MuJoCo meta-tasks (:class:`envs.mujoco_batch.MujocoMetaBatch`).

``rollout_mujoco(batch, policy, params [N, D], tasks, episodes=E, seeds=...)`` plays the N x E
episodes as N x E rows of one threaded MuJoCo batch: each control step is one ``batch.step``
of the running rows (``frame_skip`` substeps on the batch's threads), with the policy applied
to all their observations as one batched torch call in between.

It has the contract of :func:`esmaml.rl.rollout.rollout_gym`, with the same episodes: episode
``e`` of row ``i`` starts from gymnasium's ``reset(seed=seeds[i] * 1000 + e)``, the physics and
rewards are gymnasium's bit for bit (``tests/test_envs_mujoco_batch.py``), returns are summed in
float64 in step order, and an episode ends at its first termination or at the horizon (nothing
after it is stepped). The two differ only in the last bits of some actions: torch rounds the
policy's sigmoid differently in a vectorised body and in a scalar remainder, and which rows
fall where depends on the batch shape (see ``_policy_blocks``); HalfCheetah's dynamics are
chaotic enough to grow that into visible return differences over 200 steps. Here a row's
numbers never depend on the other rows, so a population split between Ray workers gives the
values it gives in one process: the policy runs on padded blocks (below), and the observation
statistics are kept per episode (:meth:`RunningStats.from_rows`), for the family to merge in
population-member order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esmaml.rl.normalization import RunningStats
from esmaml.rl.policies import Policy
from esmaml.rl.rollout import RolloutResult, _frozen, episode_mean

__all__ = ["rollout_mujoco", "rollout_mujoco_warp"]

# torch's CPU elementwise kernels run a vectorised body over chunks of 2 x the vector width (at
# most 32 floats or 16 doubles) and a scalar loop over the remainder, and their transcendental
# functions (sigmoid, tanh, exp) round differently in the two; tensors above torch's grain size
# (32768 elements) are also split between intra-op threads, each split with its own remainder.
# A row's action would then depend on where it sits in the batch. The policy is therefore
# applied to blocks whose element counts are multiples of 64 and at most the grain size:
# every row goes through the vectorised body, on one thread, whatever its neighbours.
_PAD_ROWS = 64
_GRAIN_SIZE = 32768
_STATS_WINDOW = 16 * 2**20  # observation values kept at once for the statistics


def _policy_blocks(rows: int, widest: int) -> tuple[list[slice], int]:
    """Equal row blocks covering ``rows`` (padded): each a multiple of 64 rows, and at most
    the grain size in elements for a layer ``widest`` wide where that allows 64 rows."""
    cap = max(_PAD_ROWS, _GRAIN_SIZE // widest // _PAD_ROWS * _PAD_ROWS)
    count = math.ceil(rows / cap)
    size = math.ceil(math.ceil(rows / count) / _PAD_ROWS) * _PAD_ROWS
    return [slice(k * size, (k + 1) * size) for k in range(count)], count * size


def rollout_mujoco(
    batch: Any,
    policy: Policy,
    params: Tensor,
    tasks: Sequence[Mapping[str, Any]],
    *,
    episodes: int = 1,
    horizon: int,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
    seeds: Sequence[int] | None = None,
) -> RolloutResult:
    """E episodes of each of N (params, task) pairs on a :class:`MujocoMetaBatch`.

    Args:
        batch: a ``MujocoMetaBatch`` with at least ``N * E`` rows (rows ``i * E + e`` are used).
        policy: the policy; ``params [N, D]`` its flat parameters (their dtype is the
            observations' and actions').
        tasks: one task dict per parameter row.
        episodes: E.
        horizon: maximum episode length.
        normalize: the observation normalisation (frozen for the whole rollout).
        seeds: one reset seed per parameter row (rows with equal seeds share start states);
            default ``range(N)``.
    """
    n = params.shape[0]
    if len(tasks) != n:
        raise ValueError(f"tasks must hold one task per parameter row ({n}), got {len(tasks)}")
    if episodes < 1 or horizon < 1:
        raise ValueError(f"episodes and horizon must be >= 1, got {episodes} and {horizon}")
    rows = n * episodes
    if rows > batch.num_sims:
        raise ValueError(f"the batch has {batch.num_sims} rows, {rows} (N * episodes) are needed")
    row_seeds = list(seeds) if seeds is not None else list(range(n))
    if len(row_seeds) != n:
        raise ValueError(f"seeds must hold one seed per parameter row ({n}), got {len(row_seeds)}")
    ids = np.arange(rows, dtype=np.int32)
    batch.set_tasks([tasks[i] for i in range(n) for _ in range(episodes)], ids)
    obs_np = batch.reset([row_seeds[i] * 1000 + e for i in range(n) for e in range(episodes)], ids)
    dtype = params.dtype
    blocks, padded = _policy_blocks(rows, policy.widest_layer)
    row_params = torch.zeros(padded, params.shape[1], dtype=dtype, device=params.device)
    row_params[:rows] = params.repeat_interleave(episodes, 0)
    acts = [policy.bind(row_params[block]) for block in blocks]
    transform = _frozen(normalize, dtype)
    # Observations are kept for the statistics in windows of at most _STATS_WINDOW values
    # (64 MB of float32), each folded in by RunningStats.from_batch when full: memory stays
    # bounded at the paper's sizes (6000 Ant rows x 200 steps would be 500 MB).
    window = max(1, min(horizon, _STATS_WINDOW // (rows * policy.observation_dim)))
    observations = torch.empty(window, rows, policy.observation_dim, dtype=dtype)
    alive_steps = torch.zeros(window, rows, dtype=torch.bool)
    stats: RunningStats | None = None  # [rows]: per episode, windows merged elementwise
    filled = 0
    # [padded, obs_dim]: the rows' latest observations (finished rows keep their last one,
    # padding rows are zeros)
    current = torch.zeros(padded, policy.observation_dim, dtype=dtype)
    current[:rows] = torch.as_tensor(obs_np, dtype=dtype)
    action = torch.empty(padded, policy.action_dim, dtype=dtype)
    returns = np.zeros(rows)
    alive = np.ones(rows, dtype=bool)
    running = ids  # the rows still in an episode, sorted
    steps = 0
    for _ in range(horizon):
        if filled == window:
            stats = _fold(stats, RunningStats.from_rows(observations, alive_steps))
            filled = 0
        observations[filled] = current[:rows]
        alive_steps[filled] = torch.from_numpy(alive)
        filled += 1
        steps += len(running)
        # Every row is acted for, in blocks of one shape; finished rows' actions are dropped.
        for block, act in zip(blocks, acts):
            action[block] = act(transform(current[block]).unsqueeze(1)).squeeze(1)
        if len(running) == rows:
            obs_np, reward, terminated = batch.step(action[:rows].numpy(), ids=running)
            current[:rows] = torch.as_tensor(obs_np, dtype=dtype)
        else:
            index = torch.from_numpy(running.astype(np.int64))
            obs_np, reward, terminated = batch.step(action[index].numpy(), ids=running)
            current[index] = torch.as_tensor(obs_np, dtype=dtype)
        returns[running] += reward
        if terminated.any():
            alive[running[terminated]] = False
            running = running[~terminated]
            if len(running) == 0:
                break
    stats = _fold(stats, RunningStats.from_rows(observations[:filled], alive_steps[:filled]))
    totals = torch.from_numpy(returns).view(n, episodes).to(dtype)
    return RolloutResult(episode_mean(totals), totals, steps, stats)


def _fold(stats: RunningStats | None, window: RunningStats) -> RunningStats:
    """Per-episode statistics of the windows so far, merged elementwise (row by row)."""
    return window if stats is None else stats.merge(window)


def rollout_mujoco_warp(
    batch: Any,
    policy: Policy,
    params: Tensor,
    tasks: Sequence[Mapping[str, Any]],
    *,
    episodes: int = 1,
    horizon: int,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
    seeds: Sequence[int] | None = None,
) -> RolloutResult:
    """The same contract on :class:`envs.mujoco_warp.MujocoWarpMetaBatch` (MuJoCo Warp).

    Every world steps every control step (a finished episode is simulated on and masked, as in
    :func:`esmaml.rl.rollout.rollout`), so the loop never waits for the device; observations,
    actions and rewards stay on it. Worlds beyond ``N * E`` replay the last row. Unverified on
    a GPU (see :mod:`envs.mujoco_warp`).
    """
    n = params.shape[0]
    if len(tasks) != n:
        raise ValueError(f"tasks must hold one task per parameter row ({n}), got {len(tasks)}")
    if episodes < 1 or horizon < 1:
        raise ValueError(f"episodes and horizon must be >= 1, got {episodes} and {horizon}")
    rows, worlds = n * episodes, batch.num_sims
    if rows > worlds:
        raise ValueError(f"the batch has {worlds} worlds, {rows} (N * episodes) are needed")
    row_seeds = list(seeds) if seeds is not None else list(range(n))
    if len(row_seeds) != n:
        raise ValueError(f"seeds must hold one seed per parameter row ({n}), got {len(row_seeds)}")
    member = [i for i in range(n) for _ in range(episodes)]
    member += [member[-1]] * (worlds - rows)
    episode = [e for _ in range(n) for e in range(episodes)]
    episode += [episode[-1]] * (worlds - rows)
    batch.set_tasks([tasks[i] for i in member])
    current = batch.reset([row_seeds[i] * 1000 + e for i, e in zip(member, episode)])
    dtype, device = params.dtype, params.device
    act = policy.bind(params[torch.tensor(member, device=device)])
    transform = _frozen(normalize, dtype)
    observations = torch.empty(horizon, rows, policy.observation_dim, dtype=dtype, device=device)
    alive_steps = torch.empty(horizon, rows, dtype=torch.bool, device=device)
    alive = torch.ones(rows, dtype=torch.bool, device=device)
    totals = torch.zeros(rows, dtype=torch.float64, device=device)
    for t in range(horizon):
        obs = current.to(dtype)
        observations[t] = obs[:rows]
        alive_steps[t] = alive
        action = act(transform(obs).unsqueeze(1)).squeeze(1)
        current, reward, terminated = batch.step(action.to(batch.dtype))
        totals += torch.where(alive, reward[:rows].double(), 0.0)
        alive &= ~terminated[:rows]
    stats = RunningStats.from_rows(observations, alive_steps)
    steps = int(alive_steps.sum())  # the one host sync
    totals = totals.view(n, episodes).to(dtype)
    return RolloutResult(episode_mean(totals), totals, steps, stats)
