"""RLFamily's batched MuJoCo path (``mujoco_backend='batch'``, the default) and
:func:`esmaml.rl.rollout_mujoco.rollout_mujoco`, against the gymnasium path."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("mujoco")

from envs.mujoco import mujoco_warnings_to_python  # needs the importorskip above
from envs.mujoco_batch import default_threads
from esmaml.rl import RLFamily, RunningStats

REPO = Path(__file__).resolve().parents[1]
ANT_NARROW = {"healthy_z_range": (0.6, 1.0)}  # Ant episodes end early, at different steps


@pytest.fixture(autouse=True)
def _quiet_mujoco_and_one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with mujoco_warnings_to_python():
        yield
    torch.set_num_threads(threads)


def family_for(env: str, backend: str, **kwargs: Any) -> RLFamily:
    """A family whose normaliser holds statistics (so it is not the identity)."""
    family = RLFamily(env, mujoco_backend=backend, **kwargs)
    generator = torch.Generator().manual_seed(0)
    dim = family.policy.observation_dim
    observations = 3 * torch.randn(64, dim, generator=generator)
    family.normalizer.observe(RunningStats.from_batch(observations))
    family.normalizer.commit()
    return family


def draw(family: RLFamily, members: int, scale: float) -> tuple[dict, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tasks = family.sample_tasks(3, generator=generator)
    params = scale * torch.randn(members, family.num_params, generator=generator)
    ids = torch.arange(members) % 3
    return tasks, params, ids


@pytest.mark.parametrize(
    ("env", "env_params"),
    [("HalfCheetahForwardBackward", {}), ("AntDirection", ANT_NARROW)],
)
def test_batch_member_values_do_not_depend_on_the_batch(env: str, env_params: dict) -> None:
    """What local and Ray runs rely on: a member's loss is the same in any sub-batch."""
    family = family_for(env, "batch", env_params=env_params, horizon=60, episodes=2)
    tasks, params, ids = draw(family, 7, 0.5)
    everyone = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    for part in ([3], [0, 6], [1, 2, 4, 5]):
        index = torch.tensor(part)
        alone = family.loss(
            params[index], tasks, ids[index], generator=torch.Generator().manual_seed(5)
        )
        assert torch.equal(alone, everyone[index]), (part, alone, everyone[index])
    # and with two intra-op threads for the policy and the normaliser
    torch.set_num_threads(2)
    again = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, everyone)


def test_batch_equals_gymnasium_backend_on_the_same_actions() -> None:
    """With actions both paths compute exactly (a policy that ignores the observation), the
    two backends play the same episodes: same returns, steps and statistics."""
    results = {}
    for backend in ("batch", "gymnasium"):
        family = family_for("AntForwardBackward", backend, env_params=ANT_NARROW, horizon=40)
        family.gym_chunk = 4  # several gymnasium chunks
        tasks, params, ids = draw(family, 6, 0.5)
        # zero weights: the action is tanh(bias), a constant per member
        params.view(6, -1)[:, : family.policy.observation_dim * family.policy.action_dim] = 0
        loss = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(9))
        results[backend] = (loss, family.env_steps, family.normalizer.pending)
    (loss_b, steps_b, stats_b), (loss_g, steps_g, stats_g) = results["batch"], results["gymnasium"]
    assert torch.equal(loss_b, loss_g)
    assert steps_b == steps_g < 6 * 40  # some episodes terminated
    assert float(stats_b.count) == float(stats_g.count) == steps_b
    torch.testing.assert_close(stats_b.mean, stats_g.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats_b.m2, stats_g.m2, rtol=1e-10, atol=1e-10)


def test_batch_close_to_gymnasium_backend_with_a_policy() -> None:
    """A real policy: the paths agree up to the policy's last-bit rounding (see
    esmaml.rl.rollout_mujoco), which a short HalfCheetah horizon keeps small."""
    losses = {}
    for backend in ("batch", "gymnasium"):
        family = family_for("HalfCheetahGoalVelocity", backend, horizon=8, episodes=2)
        tasks, params, ids = draw(family, 5, 0.3)
        generator = torch.Generator().manual_seed(3)
        losses[backend] = family.loss(params, tasks, ids, generator=generator)
        assert family.env_steps == 5 * 2 * 8
    torch.testing.assert_close(losses["batch"], losses["gymnasium"], rtol=1e-4, atol=1e-4)


def test_statistics_windows_merge_to_the_one_pass_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Observations kept in windows of 3 steps give the statistics of one pass (the Ant's
    terminations included) and the same returns."""
    import esmaml.rl.rollout_mujoco as engine

    results = []
    for window in (None, 3):
        if window is not None:
            monkeypatch.setattr(engine, "_STATS_WINDOW", window * 4 * 105)  # 4 rows
        family = family_for("AntForwardBackward", "batch", env_params=ANT_NARROW, horizon=40)
        tasks, params, ids = draw(family, 4, 0.5)
        loss = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(2))
        results.append((loss, family.env_steps, family.normalizer.pending))
    (loss, steps, stats), (loss_w, steps_w, stats_w) = results
    assert torch.equal(loss, loss_w) and steps == steps_w < 4 * 40
    assert float(stats.count) == float(stats_w.count) == steps
    torch.testing.assert_close(stats_w.mean, stats.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats_w.m2, stats.m2, rtol=1e-10, atol=1e-10)


def test_batch_backend_options_and_bad_inputs() -> None:
    family = RLFamily("HalfCheetahForwardBackward", horizon=5, mujoco_threads=1)
    assert family.mujoco_backend == "batch"
    tasks, params, ids = draw(family, 4, 0.1)
    family.loss(params, tasks, ids)
    assert family._mujoco_batch.threads == 1 and family._mujoco_batch.num_sims == 4
    family.loss(params[:2], tasks, ids[:2])  # fewer rows: the batch is reused
    assert family._mujoco_batch.num_sims == 4
    assert family.env_steps == (4 + 2) * 5
    with pytest.raises(ValueError, match="mujoco_backend must be 'batch', 'warp' or 'gymnasium'"):
        RLFamily("HalfCheetahForwardBackward", mujoco_backend="bullet")
    with pytest.raises(ValueError, match="mujoco_threads must be a positive int"):
        RLFamily("AntDirection", mujoco_threads=0)
    with pytest.raises(ValueError, match="runs on the CPU; use device='cpu', or device='cuda'"):
        RLFamily("AntDirection", mujoco_backend="gymnasium", device="meta")
    if importlib.util.find_spec("mujoco_warp") is None:
        # the GPU path's package is checked when the family is built, not at its first rollout
        with pytest.raises(ImportError, match=r"needs the mujoco-warp package"):
            RLFamily("HalfCheetahForwardBackward", mujoco_backend="warp")


def test_default_threads_are_the_cores_given_to_the_process() -> None:
    assert default_threads() == len(os.sched_getaffinity(0))
    family = RLFamily("HalfCheetahForwardBackward", horizon=2)
    tasks, params, ids = draw(family, 2, 0.1)
    family.loss(params, tasks, ids)
    assert family._mujoco_batch.threads == default_threads()


@pytest.mark.slow
def test_ray_workers_give_the_local_values_bit_for_bit() -> None:
    """ES-MAML on HalfCheetah with the population split one antithetic pair per Ray worker
    call (each worker with one physics thread) equals the local run (two threads) exactly."""
    ray = pytest.importorskip("ray")
    from esmaml.config import load_config
    from esmaml.evaluators.ray_backend import RayEvaluator
    from esmaml.meta.es_maml import ESMAML
    from esmaml.training.builders import ComponentFactory, build_adaptation, build_family

    config = load_config(REPO / "configs" / "halfcheetah_fb_smoke.yaml", ["progress=false"])

    def one_step(evaluator: RayEvaluator | None) -> tuple[torch.Tensor, torch.Tensor]:
        family = build_family(config)
        if evaluator is not None:
            evaluator.family = family
        learner = ESMAML(
            family,
            build_adaptation(config),
            num_perturbations=4,
            sigma=0.1,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
            generator=torch.Generator().manual_seed(0),
            init_params=0.2 * torch.randn(family.num_params, generator=torch.Generator()),
            evaluator=evaluator,
        )
        learner.step(family.sample_tasks(4, generator=torch.Generator().manual_seed(1)))
        values = learner.perturbed_values()
        assert values is not None and learner.theta.grad is not None
        return values.clone(), learner.theta.grad.clone()

    values, grad = one_step(None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        evaluator = RayEvaluator(
            build_family(config),
            ComponentFactory(config),
            num_workers=2,
            num_cpus_per_worker=1,
            sub_batch_size=1,
        )
        try:
            remote_values, remote_grad = one_step(evaluator)
        finally:
            evaluator.close()
    finally:
        ray.shutdown()
    assert torch.equal(remote_values, values)
    assert torch.equal(remote_grad, grad)
