"""Throughput of the MuJoCo meta-tasks: gymnasium, the batched path, and MuJoCo's own limit.

Measures, side by side in one run, env-steps/s (control steps of one model per second of wall
time) of closed-loop rollouts of ``--models`` linear-tanh policies on HalfCheetah and Ant
(forward-backward):

1. ``gymnasium sync``: the gymnasium path, :func:`esmaml.rl.rollout.rollout_gym` on a
   ``SyncVectorEnv`` of the meta envs (one thread; building it is not timed);
2. ``batched path``: :func:`esmaml.rl.rollout_mujoco.rollout_mujoco` on a
   :class:`envs.mujoco_batch.MujocoMetaBatch`: what ``esmaml train`` runs (normaliser,
   statistics, rewards, Ant contact forces included);
3. ``threaded-rollout limit``: the issue's yardstick. The models stepped through
   ``mujoco.rollout.Rollout(nthread=T)``, one control step (``frame_skip`` substeps) per call,
   with a numpy linear-tanh policy on ``(qpos, qvel)`` between calls and nothing else;
4. ``mujoco.batch limit``: the same physics and policy on ``mujoco.batch.Batch`` (the engine
   of 2. without esmaml's work);
5. ``MuJoCo Warp``: :class:`envs.mujoco_warp.MujocoWarpMetaBatch` on ``--warp-device`` when the
   ``mujoco_warp`` package is installed (else reported as not run);

The Ant runs with ``terminate_when_unhealthy=False``, so that every path steps every model for
the whole horizon. Each is measured with 1 and 2 physics threads (``--threads``).

Then ES-MAML training on ``configs/halfcheetah_fb_es.yaml`` runs a few iterations
(``--iterations``, the first one not timed) on the batched path and on the gymnasium path:
env-steps/s = training env steps / the iterations' wall time (``iteration_time_s`` in
metrics.jsonl, evaluation excluded). Its ratio is to the threaded-rollout limit at ``--models``
models and the most threads, measured just before and just after training (the larger of the
two is used).

    python benchmarks/mujoco_rollouts.py [--threads 1,2] [--models 32] [--iterations 4]

Torch runs with one intra-op thread (the README's advice for ES-MAML on a small machine);
the physics threads are the batch's own.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import mujoco
import mujoco.rollout
import numpy as np
import torch
from mujoco.batch import Batch

from envs.mujoco import make_mujoco_vector, mujoco_warnings_to_python
from envs.mujoco_batch import MujocoMetaBatch
from esmaml.rl import MLPPolicy, ObservationNormalizer, RunningStats, rollout_gym
from esmaml.rl.rollout_mujoco import rollout_mujoco, rollout_mujoco_warp

REPO = Path(__file__).resolve().parents[1]
ENVS = {"HalfCheetah": "HalfCheetahForwardBackward", "Ant": "AntForwardBackward"}
# Ant episodes run the whole horizon, as the limits' do: a random policy tips most Ants over
# within ~30 steps, and what would then be timed is a few rows stepping alone.
KWARGS: dict[str, dict] = {
    "HalfCheetahForwardBackward": {},
    "AntForwardBackward": {"terminate_when_unhealthy": False},
}


def _policy_weights(obs_dim: int, act_dim: int, models: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return 0.1 * rng.standard_normal((models, obs_dim, act_dim)), np.zeros((models, act_dim))


def limit_rollout(name: str, models: int, threads: int, steps: int) -> float:
    """env-steps/s through mujoco.rollout, one control step per call (the issue's limit)."""
    batch = MujocoMetaBatch(name, 1, threads=1)
    model, frame_skip, skip = batch.model, batch.frame_skip, batch._skip
    nq, nv = model.nq, model.nv
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    state0 = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state0, spec)
    state = np.tile(state0, (models, 1))
    weight, bias = _policy_weights(nq - skip + nv, model.nu, models)
    runner = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)
    datas = [mujoco.MjData(model) for _ in range(max(threads, 1))]
    control = np.zeros((models, frame_skip, model.nu))
    out = np.empty((models, frame_skip, state.shape[1]))
    sensors = np.empty((models, frame_skip, model.nsensordata))
    with runner:
        started = time.perf_counter()
        for _ in range(steps):
            obs = state[:, 1 + skip : 1 + nq + nv]  # state = (time, qpos, qvel, ...)
            control[:] = np.tanh(np.einsum("mi,mij->mj", obs, weight) + bias)[:, None, :]
            runner.rollout(
                [model] * models,
                datas,
                state,
                control,
                nstep=frame_skip,
                state=out,
                sensordata=sensors,
            )
            state = np.ascontiguousarray(out[:, -1])
        seconds = time.perf_counter() - started
    return models * steps / seconds


def limit_batch(name: str, models: int, threads: int, steps: int) -> float:
    """env-steps/s of the bare mujoco.batch loop with the same numpy policy."""
    env = MujocoMetaBatch(name, 1, threads=1)
    model, frame_skip, skip = env.model, env.frame_skip, env._skip
    batch = Batch(model, models, nthread=threads)
    qpos, qvel, ctrl = batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl")
    batch.reset()
    weight, bias = _policy_weights(model.nq - skip + model.nv, model.nu, models)
    started = time.perf_counter()
    for _ in range(steps):
        obs = np.concatenate([qpos[:, skip:], qvel], axis=1)
        ctrl[:] = np.tanh(np.einsum("mi,mij->mj", obs, weight) + bias)
        batch.step(nstep=frame_skip)
    return models * steps / (time.perf_counter() - started)


def _policy_and_params(name: str, models: int) -> tuple[MLPPolicy, torch.Tensor, list, object]:
    env = MujocoMetaBatch(name, 1, threads=1)
    low, high = float(env.action_low.min()), float(env.action_high.max())
    policy = MLPPolicy(env.observation_dim, env.action_dim, (), "tanh", low, high)
    generator = torch.Generator().manual_seed(0)
    params = 0.1 * torch.randn(models, policy.num_params, generator=generator)
    tasks = [{"direction": 1.0 if i % 2 else -1.0} for i in range(models)]
    normalizer = ObservationNormalizer(env.observation_dim)
    normalizer.observe(RunningStats.from_batch(torch.randn(64, env.observation_dim)))
    normalizer.commit()
    return policy, params, tasks, normalizer


def batched_path(name: str, models: int, threads: int, horizon: int, repeats: int) -> float:
    policy, params, tasks, normalizer = _policy_and_params(name, models)
    batch = MujocoMetaBatch(name, models, threads=threads, **KWARGS[name])
    steps, seconds = 0, 0.0
    for r in range(repeats + 1):  # the first rollout warms up, untimed
        started = time.perf_counter()
        result = rollout_mujoco(
            batch,
            policy,
            params,
            tasks,
            horizon=horizon,
            normalize=normalizer,
            seeds=[r * 100 + i for i in range(models)],
        )
        if r:
            seconds += time.perf_counter() - started
            steps += result.steps
    return steps / seconds


def gymnasium_sync(name: str, models: int, horizon: int) -> float:
    policy, params, tasks, normalizer = _policy_and_params(name, models)
    vector_env = make_mujoco_vector(f"esmaml/{name}-v0", models, **KWARGS[name])
    started = time.perf_counter()  # construction (model compilation) is not timed
    result = rollout_gym(
        lambda k: vector_env,
        policy,
        params,
        tasks,
        horizon=horizon,
        normalize=normalizer,
        chunk=models,
    )
    return result.steps / (time.perf_counter() - started)


def warp_path(name: str, models: int, horizon: int, device: str) -> float | str:
    try:
        from envs.mujoco_warp import MujocoWarpMetaBatch
    except ImportError as e:  # mujoco_warp / warp-lang not installed
        return f"not run ({e})"
    policy, params, tasks, normalizer = _policy_and_params(name, models)
    try:
        batch = MujocoWarpMetaBatch(name, models, device=device, **KWARGS[name])
    except Exception as e:  # e.g. no CUDA device: report it, do not fail the run
        return f"not run ({type(e).__name__}: {e})"
    params = params.to(device)
    normalizer = ObservationNormalizer(policy.observation_dim, device=device)
    seeds = list(range(models))
    rollout_mujoco_warp(
        batch, policy, params, tasks, horizon=horizon, normalize=normalizer, seeds=seeds
    )
    if params.device.type == "cuda":
        torch.cuda.synchronize(params.device)
    started = time.perf_counter()  # the first rollout compiled and captured; this one is timed
    result = rollout_mujoco_warp(
        batch, policy, params, tasks, horizon=horizon, normalize=normalizer, seeds=seeds
    )
    return result.steps / (time.perf_counter() - started)


def training(backend: str, iterations: int) -> float:
    """env-steps/s of ES-MAML on configs/halfcheetah_fb_es.yaml (first iteration untimed)."""
    from esmaml.config import load_config
    from esmaml.training.trainer import Trainer

    overrides = [
        f"iterations={iterations}",
        "evaluation.every=100000",
        "checkpoint.every=100000",
        "progress=false",
        "wandb.mode=disabled",
        f"task.params.mujoco_backend={backend}",
    ]
    config = load_config(REPO / "configs" / "halfcheetah_fb_es.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config, Path(tmp) / "run").train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    timed = rows[1:] or rows
    return sum(r["env_steps"] for r in timed) / sum(r["iteration_time_s"] for r in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="physics thread counts (default 1,2)")
    parser.add_argument("--models", type=int, default=32, help="policies/models per rollout")
    parser.add_argument("--iterations", type=int, default=4, help="ES-MAML iterations per path")
    parser.add_argument("--warp-device", default="cuda", help="device of the MuJoCo Warp row")
    parser.add_argument("--skip-gym-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threads = [int(t) for t in args.threads.split(",")]
    models = args.models
    # control steps per measurement: about a second of work each on this machine
    steps = {"HalfCheetah": 1000, "Ant": 250}
    rows: list[tuple[str, str, str, float | str]] = []
    with mujoco_warnings_to_python(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # deprecated XML attributes
        for label, name in ENVS.items():
            n = steps[label]
            rows.append(
                (label, "gymnasium sync (rollout_gym)", "1", gymnasium_sync(name, models, 200))
            )
            for t in threads:
                rate = batched_path(name, models, t, 200, max(1, n // 200))
                rows.append((label, "batched path (rollout_mujoco)", str(t), rate))
                rows.append(
                    (label, "threaded-rollout limit", str(t), limit_rollout(name, models, t, n))
                )
                rows.append((label, "mujoco.batch limit", str(t), limit_batch(name, models, t, n)))
            rows.append(
                (
                    label,
                    "MuJoCo Warp",
                    args.warp_device,
                    warp_path(name, models, 200, args.warp_device),
                )
            )
        top = str(max(threads))
        before = limit_rollout(ENVS["HalfCheetah"], models, max(threads), steps["HalfCheetah"])
        trained = training("batch", args.iterations)
        after = limit_rollout(ENVS["HalfCheetah"], models, max(threads), steps["HalfCheetah"])
        trained_gym = None if args.skip_gym_training else training("gymnasium", args.iterations)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nmujoco {mujoco.__version__}, torch {torch.__version__} (1 intra-op thread), "
        f"{os.cpu_count()} CPUs, load average {load}, {models} models"
    )
    print("\n| env | path | threads | env-steps/s |")
    print("| --- | --- | ---: | ---: |")
    for label, path, t, rate in rows:
        shown = f"{rate:,.0f}" if isinstance(rate, float) else rate
        print(f"| {label} | {path} | {t} | {shown} |")
    limit = max(before, after)
    print(
        f"\nES-MAML training, configs/halfcheetah_fb_es.yaml, iterations 2-{args.iterations} "
        f"(torch 1 thread, physics {top} threads):"
    )
    print(
        f"  threaded-rollout limit, HalfCheetah, {models} models, {top} threads: "
        f"{before:,.0f} before, {after:,.0f} after training"
    )
    print(
        f"  batched path:   {trained:,.0f} env-steps/s = {trained / limit:.2f} x the limit "
        "[target >= 0.67]"
    )
    if trained_gym is not None:
        print(
            f"  gymnasium path: {trained_gym:,.0f} env-steps/s = {trained_gym / limit:.2f} x "
            f"the limit; batched / gymnasium = {trained / trained_gym:.2f}x"
        )


if __name__ == "__main__":
    main()
