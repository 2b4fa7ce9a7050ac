"""The local backend: the whole population in one batched call of the family (the default)."""

from __future__ import annotations

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator
from esmaml.evaluators.base import (
    Evaluator,
    PopulationSpec,
    member_losses,
    regenerate_population,
)
from esmaml.tasks.base import TaskFamily, Tasks


class LocalEvaluator(Evaluator):
    """Evaluates every member in process, batched over the population (no copies, no workers).

    Args:
        family: the task family (its rollouts update its own statistics and step count).
        adaptation: the operator U.
    """

    def __init__(self, family: TaskFamily, adaptation: AdaptationOperator):
        self.family, self.adaptation = family, adaptation

    def evaluate(
        self,
        theta: Tensor,
        seed: int,
        tasks: Tasks,
        inner_seed: int,
        spec: PopulationSpec,
        *,
        population: Tensor | None = None,
    ) -> Tensor:
        if population is None:
            population = regenerate_population(theta, seed, spec)
        rows = torch.arange(spec.size, device=population.device)
        return member_losses(
            self.family,
            self.adaptation,
            population,
            rows,
            tasks,
            inner_seed,
            num_perturbations=spec.num_perturbations,
            members=spec.size,
            common_random_numbers=spec.common_random_numbers,
        )
