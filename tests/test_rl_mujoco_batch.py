"""RLFamily's batched MuJoCo path (``mujoco_backend='batch'``, the default) and
:func:`esmaml.rl.rollout_mujoco.rollout_mujoco`, against the gymnasium path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("mujoco")

from envs.mujoco import mujoco_warnings_to_python  # needs the importorskip above
from esmaml.rl import RLFamily, RunningStats

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


def test_batch_backend_options_and_bad_inputs() -> None:
    family = RLFamily("HalfCheetahForwardBackward", horizon=5, mujoco_threads=1)
    assert family.mujoco_backend == "batch"
    tasks, params, ids = draw(family, 4, 0.1)
    family.loss(params, tasks, ids)
    assert family._mujoco_batch.threads == 1 and family._mujoco_batch.num_sims == 4
    family.loss(params[:2], tasks, ids[:2])  # fewer rows: the batch is reused
    assert family._mujoco_batch.num_sims == 4
    assert family.env_steps == (4 + 2) * 5
    with pytest.raises(ValueError, match="mujoco_backend must be 'batch' or 'gymnasium'"):
        RLFamily("HalfCheetahForwardBackward", mujoco_backend="warp")
    with pytest.raises(ValueError, match="mujoco_threads must be a positive int"):
        RLFamily("AntDirection", mujoco_threads=0)
