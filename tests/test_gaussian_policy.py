"""Gaussian policies for the zero-order learners: ``task.params.action_noise``."""

from __future__ import annotations

import pytest
import torch

from esmaml.adaptation.policy_gradient import PolicyGradientAdaptation
from esmaml.meta.pg_maml import PGMAML
from esmaml.rl import RLFamily


def captured_actions(family: RLFamily, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the actions the env receives (before its clip)."""
    actions: list[torch.Tensor] = []
    step = family.env.step

    def spy(state, task, action):  # type: ignore[no-untyped-def]
        actions.append(action.clone())
        return step(state, task, action)

    monkeypatch.setattr(family.env, "step", spy)
    return actions


def test_actions_are_the_policy_plus_gaussian_noise_of_the_given_std(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    std = 0.03
    noisy = RLFamily(
        "Navigation2D", horizon=1, episodes=4000, action_noise=std, normalize_observations=False
    )
    plain = RLFamily("Navigation2D", horizon=1, episodes=4000, normalize_observations=False)
    generator = torch.Generator().manual_seed(0)
    tasks = noisy.sample_tasks(2, generator=generator)
    params = noisy.init_params(torch.Generator().manual_seed(1)).expand(2, -1).clone()
    ids = torch.tensor([0, 1])
    noisy_actions = captured_actions(noisy, monkeypatch)
    plain_actions = captured_actions(plain, monkeypatch)
    noisy.loss(params, tasks, ids, generator=torch.Generator().manual_seed(2))
    plain.loss(params, tasks, ids, generator=torch.Generator().manual_seed(2))
    # Same starts (the noise is drawn after them), so the difference is the noise alone.
    xi = (noisy_actions[0] - plain_actions[0]).reshape(-1)
    n = xi.numel()
    assert abs(float(xi.mean())) < 4 * std / n**0.5
    # sd of the sample variance of a Gaussian: sigma^2 sqrt(2 / (n - 1)).
    assert abs(float(xi.var()) - std**2) < 4 * std**2 * (2 / (n - 1)) ** 0.5


def test_noise_is_shared_by_a_task_and_independent_of_the_batch() -> None:
    family = RLFamily("Navigation2D", horizon=30, action_noise=0.05, normalize_observations=False)
    tasks = family.sample_tasks(3, generator=torch.Generator().manual_seed(0))
    params = 0.3 * torch.randn(4, family.num_params, generator=torch.Generator().manual_seed(1))
    params[2] = params[0]
    ids = torch.tensor([0, 1, 0, 2])
    losses = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    # Same parameters on the same task: same noise, same return.
    assert losses[2] == losses[0]
    # A member alone gives bitwise the return it had within the batch.
    for i in range(4):
        alone = family.loss(
            params[i : i + 1], tasks, ids[i : i + 1], generator=torch.Generator().manual_seed(5)
        )
        assert alone[0] == losses[i], i
    # The noise changes the return; without noise the same call is deterministic.
    deterministic = RLFamily("Navigation2D", horizon=30, normalize_observations=False)
    plain = deterministic.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(plain, losses)


def test_action_noise_bad_values_and_unsupported_combinations() -> None:
    with pytest.raises(ValueError, match="action_noise"):
        RLFamily("Navigation2D", action_noise=-0.1)
    with pytest.raises(TypeError, match="action_noise"):
        RLFamily("Navigation2D", action_noise="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="torch-native"):
        RLFamily("HalfCheetahForwardBackward", action_noise=0.1)
    family = RLFamily("Navigation2D", action_noise=0.1)
    with pytest.raises(ValueError, match="action_std"):
        PGMAML(family, PolicyGradientAdaptation(lr=0.1, num_queries=4, action_std=0.1))
