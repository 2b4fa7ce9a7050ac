"""Throughput of the batched meta-environments against gymnasium's SyncVectorEnv.

Measures, in one run (env-steps/s = sub-env transitions per second of wall time):

1. ``gymnasium.make_vec(id, num_envs, vectorization_mode='vector_entry_point')`` (one batched
   torch env; numpy in/out, and torch in/out on ``--device``) stepping random actions;
2. ``gymnasium.make_vec(id, num_envs, vectorization_mode='sync')`` (``num_envs`` single envs in
   a Python loop) on the same kind of actions, over fewer steps. The single form is the same
   torch implementation at batch size 1 (the issue's baseline); for Navigation2D the run also
   times a SyncVectorEnv of a plain-numpy single Navigation2D with the same dynamics, i.e. what a
   hand-written gymnasium env would cost, and prints the speed-up over that too;
3. the raw functional API with a linear policy in the loop: parameters ``[population, D]``,
   ``tasks`` tasks each, ``horizon`` steps, actions by ``torch.bmm``.

Usage: ``python benchmarks/batched_envs.py [--device cuda] [--num-envs 4096] [--env Navigation2D]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium
import numpy as np
import torch

import envs
from envs import BatchedMetaEnv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_vector_env(
    vec: gymnasium.vector.VectorEnv, actions: list, device: torch.device, warmup: int = 2
) -> float:
    """Seconds to step ``vec`` through ``actions`` after ``warmup`` untimed steps."""
    vec.reset(seed=0)
    for a in actions[:warmup]:
        vec.step(a)
    _sync(device)
    start = time.perf_counter()
    for a in actions:
        vec.step(a)
    _sync(device)
    return time.perf_counter() - start


def linear_policy_rollout(
    env: BatchedMetaEnv, population: int, tasks: int, horizon: int, device: torch.device
) -> Callable[[], torch.Tensor]:
    """A closure running one rollout of ``population`` linear policies on ``tasks`` tasks each."""
    gen = torch.Generator().manual_seed(0)
    obs_dim, act_dim = env.observation_dim, env.action_dim
    params = 0.1 * torch.randn(population, obs_dim * act_dim + act_dim, generator=gen)
    params = params.to(device)
    weight = params[:, : obs_dim * act_dim].view(population, obs_dim, act_dim)
    bias = params[:, obs_dim * act_dim :].view(population, 1, act_dim)
    task_params = env.sample_task_params(tasks, gen, device=device)
    # every population member sees the same tasks (common random numbers across members)
    task = {
        k: v.unsqueeze(0).expand(population, *v.shape).contiguous() for k, v in task_params.items()
    }

    def run() -> torch.Tensor:
        state = env.reset(task)
        total = torch.zeros(population, tasks, device=device)
        for _ in range(horizon):
            obs = env.observe(state, task)
            action = torch.baddbmm(bias, obs, weight)  # [population, tasks, act_dim]
            state, reward, _ = env.step(state, task, action)
            total = total + reward
        return total

    return run


class NumpyNavigation2D(gymnasium.Env):
    """Navigation2D as a plain-numpy single gymnasium env: ``p' = clip(p + clip(a, +-0.1), -1,
    1)``, reward ``-||p' - goal||^2``, terminated within 0.1 of the goal, 100 steps."""

    def __init__(self) -> None:
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self.goal = np.zeros(2, np.float32)
        self.pos = np.zeros(2, np.float32)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self.goal = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        self.pos = np.zeros(2, np.float32)
        self.steps = 0
        return self.pos.copy(), {}

    def step(self, action: np.ndarray):  # type: ignore[override]
        self.pos = np.clip(self.pos + np.clip(action, -0.1, 0.1), -1.0, 1.0).astype(np.float32)
        reward = -float(np.square(self.pos - self.goal).sum())
        self.steps += 1
        return self.pos.copy(), reward, reward >= -0.01, self.steps >= 100, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument("--env", default="Navigation2D", choices=sorted(envs.BATCHED_ENVS))
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--batched-steps", type=int, default=200)
    parser.add_argument("--sync-steps", type=int, default=5)
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="functional-API repeats (best)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a loaded 2-core machine 1 thread "
        "avoids OpenMP stalls that make float32 sin/cos/tanh on 4096 values take milliseconds",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env_id = f"esmaml/{args.env}-v0"
    n = args.num_envs
    rows: list[tuple[str, int, int, float]] = []

    # 1. batched vector env, numpy in/out (what gymnasium users get by default)
    batched = gymnasium.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point", device=device
    )
    rng = np.random.default_rng(0)
    space = batched.single_action_space
    np_actions = [
        rng.uniform(space.low, space.high, (n, *space.shape)).astype(np.float32)
        for _ in range(args.batched_steps)
    ]
    secs = time_vector_env(batched, np_actions, device)
    rows.append(("make_vec vector_entry_point (numpy)", n, args.batched_steps, secs))

    # 1b. the same with torch tensors on the device (no host round trip)
    batched_t = gymnasium.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        device=device,
        as_torch=True,
    )
    t_actions = [torch.from_numpy(a).to(device) for a in np_actions]
    secs_t = time_vector_env(batched_t, t_actions, device)
    rows.append((f"make_vec vector_entry_point (torch, {device})", n, args.batched_steps, secs_t))

    # 2. gymnasium SyncVectorEnv of single envs
    start = time.perf_counter()
    sync = gymnasium.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    build_sync = time.perf_counter() - start
    secs_sync = time_vector_env(sync, np_actions[: args.sync_steps], torch.device("cpu"), 1)
    rows.append(("make_vec sync (SyncVectorEnv)", n, args.sync_steps, secs_sync))
    sync.close()
    if args.env == "Navigation2D":
        numpy_sync = gymnasium.vector.SyncVectorEnv([NumpyNavigation2D] * n)
        secs_np = time_vector_env(numpy_sync, np_actions[: args.sync_steps], torch.device("cpu"), 1)
        rows.append(("SyncVectorEnv of a plain-numpy Navigation2D", n, args.sync_steps, secs_np))
        numpy_sync.close()

    # 3. raw functional API + linear policy via bmm
    env = envs.make_batched_env(args.env)
    run = linear_policy_rollout(env, args.population, args.tasks, args.horizon, device)
    with torch.inference_mode():
        run()
        _sync(device)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            _sync(device)
            best = min(best, time.perf_counter() - start)
    rows.append(
        (
            f"functional API + linear policy ({args.population}x{args.tasks} batch)",
            args.population * args.tasks,
            args.horizon,
            best,
        )
    )

    rates = {name: envs_ * steps / s for name, envs_, steps, s in rows}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{env_id}, device={device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load average {load} (on {os.cpu_count()} CPUs)"
    )
    print(f"(SyncVectorEnv construction of {n} envs: {build_sync:.1f} s, not timed below)\n")
    print("| mode | batch | steps timed | wall s | env-steps/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, envs_, steps, s in rows:
        print(f"| {name} | {envs_} | {steps} | {s:.3f} | {rates[name]:,.0f} |")
    sync_rate = rates["make_vec sync (SyncVectorEnv)"]
    print(
        f"\nspeed-up of vector_entry_point over sync: "
        f"{rates['make_vec vector_entry_point (numpy)'] / sync_rate:,.0f}x (numpy), "
        f"{rates[rows[1][0]] / sync_rate:,.0f}x (torch) [target >= 300x]"
    )
    numpy_rate = rates.get("SyncVectorEnv of a plain-numpy Navigation2D")
    if numpy_rate is not None:
        print(
            "speed-up over a SyncVectorEnv of a plain-numpy Navigation2D: "
            f"{rates['make_vec vector_entry_point (numpy)'] / numpy_rate:,.0f}x (numpy), "
            f"{rates[rows[1][0]] / numpy_rate:,.0f}x (torch)"
        )


if __name__ == "__main__":
    main()
