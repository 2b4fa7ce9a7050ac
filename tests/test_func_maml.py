"""torch.func MAML: one step equals learn2learn's MAML, second and first order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from esmaml.adaptation.gradient_descent import GradientDescentAdaptation
from esmaml.config import load_config
from esmaml.meta.func_maml import FuncMAML
from esmaml.meta.l2l_maml import L2LMAML
from esmaml.tasks.sine import SineRegression
from esmaml.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
def test_one_step_equals_learn2learns(first_order: bool, steps: int) -> None:
    family = SineRegression(shots=10, query_shots=10, hidden=(16, 16))
    init = family.init_params(torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(5, generator=torch.Generator().manual_seed(1))
    reference = L2LMAML(
        family,
        meta_lr=0.1,
        alpha=0.3,
        adaptation_steps=steps,
        optimizer="sgd",
        first_order=first_order,
        init_params=init,
    )
    ours = FuncMAML(
        family,
        GradientDescentAdaptation(0.3, num_steps=steps),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        first_order=first_order,
        init_params=init,
    )
    want, got = reference.step(tasks), ours.step(tasks)
    assert got["meta_objective"] == pytest.approx(want["meta_objective"], rel=1e-5)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
    moved = reference.parameters_flat() - init
    assert moved.norm() > 1e-3  # the step is not trivially zero
    torch.testing.assert_close(
        ours.parameters_flat(), reference.parameters_flat(), rtol=1e-4, atol=1e-6
    )


def test_second_order_differs_from_first_order() -> None:
    family = SineRegression(shots=10, query_shots=10, hidden=(16,))
    init = family.init_params(torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(4, generator=torch.Generator().manual_seed(1))
    moves = []
    for first_order in (False, True):
        learner = FuncMAML(
            family,
            GradientDescentAdaptation(0.3),
            optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
            first_order=first_order,
            init_params=init,
        )
        learner.step(tasks)
        moves.append(learner.parameters_flat() - init)
    assert (moves[0] - moves[1]).norm() > 1e-3 * moves[0].norm()


def test_config_trains(tmp_path: Path) -> None:
    overrides = ["iterations=3", "evaluation.every=3", "wandb.mode=disabled", "progress=false"]
    config = load_config(ROOT / "configs" / "sine_func_maml.yaml", overrides)
    summary = Trainer(config, tmp_path / "run").train()
    assert summary["iterations"] == 3 and summary["eval_post_adaptation"] > 0


def test_refuses_what_it_cannot_adapt() -> None:
    family = SineRegression(shots=5)
    from esmaml.adaptation.hill_climbing import HillClimbingAdaptation

    with pytest.raises(TypeError, match=r"adaptation\.operator=gradient_descent"):
        FuncMAML(family, HillClimbingAdaptation())
