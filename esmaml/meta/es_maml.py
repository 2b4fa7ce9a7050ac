"""Zero-order ES-MAML (Song et al., ICLR 2020), read top to bottom.

Objective: J(theta) = E_T[ f_T(U(theta, T)) ] with any adaptation operator U, differentiable or
not. One iteration is an explicit ask / evaluate / tell, as in evosax:

- :meth:`ESMAML.ask` draws a 63-bit seed that names N directions z_i and the population
  ``theta +- sigma z_i`` (M = 2N members when antithetic), and a seed for the inner noise;
- :meth:`ESMAML.evaluate` scores every member through the evaluator: member i adapts on task
  ``(i mod N) mod n`` and is scored on its query phase. The forward estimator also gets the
  pivots ``f_t(U(theta, t))``, one per task with the same inner noise as the members on that
  task (common random numbers), so its baseline cancels each task's own difficulty;
- :meth:`ESMAML.tell` turns the values into the estimate with the shared estimator
  (:func:`esmaml.zero_order.estimators.es_gradient`)

      antithetic: g = 1/N sum_i (f_i(U(th + sigma z_i)) - f_i(U(th - sigma z_i))) z_i / (2 sigma)
      forward:    g = 1/N sum_i (f_i(U(th + sigma z_i)) - f_i(U(th))) z_i / sigma

  (values z-scored or rank-shaped first when ``shaping`` says so), and applies it through the
  guarded step every meta-learner shares: ``theta.grad = g``, then any ``torch.optim``
  optimizer steps (plain SGD with lr beta is the paper's update).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import (
    AdaptationOperator,
    check_positive_float,
    check_positive_int,
    num_tasks,
)
from esmaml.evaluators import (
    Evaluator,
    LocalEvaluator,
    PopulationSpec,
    member_losses,
    population_rows,
    regenerate_noise,
)
from esmaml.meta.base import FlatThetaLearner
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order import draw_seed
from esmaml.zero_order.estimators import check_method, check_shaping, es_gradient
from esmaml.zero_order.noise import check_noise_kind


@dataclass(frozen=True)
class Population:
    """What :meth:`ESMAML.ask` drew: the seeds, the directions ``noise [N, D]`` and the
    ``members [M, D]`` (antithetic: the N ``+z`` members, then the N ``-z`` members)."""

    seed: int
    inner_seed: int
    noise: Tensor
    members: Tensor


@dataclass(frozen=True)
class Fitness:
    """The population's post-adaptation query losses ``values [M]`` (NaN: a lost evaluation)
    and, for the forward estimator, the unperturbed pivot of each task ``pivots [n]``."""

    values: Tensor
    pivots: Tensor | None = None


class ESMAML(FlatThetaLearner):
    """Zero-order ES-MAML.

    Args:
        family: the task family.
        adaptation: the operator U.
        optimizer: a factory ``params -> torch.optim.Optimizer`` (default SGD(lr=0.01)).
        num_perturbations: N directions per iteration (2N evaluations when antithetic).
        sigma: meta smoothing scale.
        method: ``antithetic`` (pairs share task and inner noise), ``forward`` (per-task
            pivots, n more evaluations) or ``naive``.
        sampling: ``gaussian`` or ``orthogonal`` directions.
        shaping: fitness shaping of the values (of the differences to the pivots, forward).
        tasks_per_iteration: n tasks per iteration; default N (one task per direction). With
            n < N, directions share tasks round-robin.
        common_random_numbers: members that share a task share its adaptation noise (default).
        nan_policy: ``raise`` on a NaN/inf evaluation, or ``drop`` the sample (logged).
        generator: the run's random stream (task sampling is done by the caller).
        evaluator: computes the population's values (default: a :class:`LocalEvaluator`, in
            process); e.g. a :class:`esmaml.evaluators.RayEvaluator`. :meth:`close` closes it.
    """

    takes_evaluator = True

    def __init__(
        self,
        family: TaskFamily,
        adaptation: AdaptationOperator,
        *,
        optimizer: Any = None,
        num_perturbations: int = 150,
        sigma: float = 0.1,
        method: str = "antithetic",
        sampling: str = "gaussian",
        shaping: str = "zscore",
        tasks_per_iteration: int | None = None,
        common_random_numbers: bool = True,
        nan_policy: str = "raise",
        generator: torch.Generator | None = None,
        init_params: Tensor | None = None,
        evaluator: Evaluator | None = None,
    ):
        self.family, self.adaptation = family, adaptation
        self.num_perturbations = check_positive_int("num_perturbations", num_perturbations)
        self.sigma = check_positive_float("sigma", sigma)
        self.method, self.shaping = check_method(method), check_shaping(shaping)
        self.sampling = check_noise_kind(sampling)
        self._tasks = check_positive_int(
            "tasks_per_iteration", tasks_per_iteration or num_perturbations
        )
        if self._tasks > self.num_perturbations:
            # Member i uses task (i mod N) mod n: tasks N..n-1 would be sampled but never used.
            raise ValueError(
                f"tasks_per_iteration ({self._tasks}) must be at most num_perturbations "
                f"({self.num_perturbations}): each direction evaluates one task"
            )
        if nan_policy not in ("raise", "drop"):
            raise ValueError(f"nan_policy={nan_policy!r} is not valid; valid: raise, drop")
        self.nan_policy = nan_policy
        self.common_random_numbers = bool(common_random_numbers)
        self._init_theta(family, optimizer, generator, init_params)
        self.spec = PopulationSpec(
            self.num_perturbations, self.sigma, method, sampling, self.common_random_numbers
        )
        self.evaluator = evaluator if evaluator is not None else LocalEvaluator(family, adaptation)
        self.last_fitness: Fitness | None = None

    @property
    def tasks_per_iteration(self) -> int:
        return self._tasks

    @property
    def evaluations_per_iteration(self) -> int:
        """Members M, plus the n pivots of the forward estimator."""
        return self.spec.size + (self._tasks if self.method == "forward" else 0)

    # -- ask / evaluate / tell -------------------------------------------------------------------
    def ask(self) -> Population:
        """Draw the iteration's seeds and the population they name (remote evaluators
        regenerate it from ``seed``: :func:`esmaml.evaluators.regenerate_population`)."""
        seed, inner_seed = draw_seed(self.generator), draw_seed(self.generator)
        theta = self.theta.detach()
        noise = regenerate_noise(seed, self.spec, theta.shape[-1], theta.device, theta.dtype)
        members = population_rows(theta, noise, self.spec, range(self.num_perturbations))
        return Population(seed, inner_seed, noise, members)

    @torch.no_grad()
    def evaluate(self, population: Population, tasks: Tasks) -> Fitness:
        """Post-adaptation query loss of every member (and the forward pivots) on ``tasks``."""
        if not isinstance(tasks, dict) or not tasks:
            raise TypeError(
                "tasks must be a non-empty dict of tensors, got "
                f"{type(tasks).__name__} (draw them with family.sample_tasks(n))"
            )
        theta = self.theta.detach()
        values = self.evaluator.evaluate(
            theta,
            population.seed,
            tasks,
            population.inner_seed,
            self.spec,
            population=population.members,
        )
        pivots = None
        if self.method == "forward":
            # Row j < n of a population is on task j with that task's inner noise, so the
            # pivot of task j sees exactly the adaptation noise and start states its members saw.
            n = num_tasks(tasks)
            pivots = member_losses(
                self.family,
                self.adaptation,
                theta.expand(n, -1),
                torch.arange(n, device=theta.device),
                tasks,
                population.inner_seed,
                num_perturbations=self.num_perturbations,
                members=self.spec.size,
                common_random_numbers=self.common_random_numbers,
            )
        return Fitness(values, pivots)

    def estimate(self, population: Population, fitness: Fitness) -> tuple[Tensor, int]:
        """The meta-gradient estimate ``[D]`` of the query loss and the number of dropped
        directions, with the NaN policy applied."""
        num = self.num_perturbations
        values = fitness.values
        baseline = None
        finite = torch.isfinite(values)
        if fitness.pivots is not None:
            members = torch.arange(values.shape[0], device=values.device)
            baseline = fitness.pivots[members % num % fitness.pivots.shape[0]]
            finite = finite & torch.isfinite(baseline)
        valid = finite[:num] & finite[num:] if self.method == "antithetic" else finite
        dropped = int((~valid).sum())
        if dropped and self.nan_policy == "raise":
            bad = torch.nonzero(~finite).flatten()
            raise FloatingPointError(
                f"ES-MAML: {bad.numel()} of {values.numel()} population evaluations are NaN or "
                f"inf (first at member {int(bad[0])}); set meta.params.nan_policy=drop to drop "
                "those directions, or lower sigma / the adaptation step"
            )
        if dropped == num:
            raise FloatingPointError(
                f"ES-MAML: every one of the {num} directions had a NaN or inf evaluation "
                "(meta.params.nan_policy=drop drops only some); lower meta.params.sigma or the "
                "adaptation step, or check the family's loss"
            )
        clean = torch.where(finite, values, torch.zeros_like(values))
        if baseline is not None:
            baseline = torch.where(finite, baseline, torch.zeros_like(baseline))
        gradient = es_gradient(
            population.noise,
            clean,
            method=self.method,  # type: ignore[arg-type]
            sigma=self.sigma,
            baseline=baseline,
            shaping=self.shaping,  # type: ignore[arg-type]
            valid=valid if dropped else None,
        )
        return gradient, dropped

    def tell(self, population: Population, fitness: Fitness) -> dict[str, float]:
        """Estimate, take the guarded optimizer step, fold the iteration into the family."""
        gradient, dropped = self.estimate(population, fitness)
        grad_norm = self.apply_gradient(gradient, name="ES-MAML")
        self.last_fitness = fitness
        values = fitness.values[torch.isfinite(fitness.values)]
        evaluations = fitness.values.numel()
        if fitness.pivots is not None:
            evaluations += fitness.pivots.numel()
        return {
            "meta_objective": float(values.mean()),
            "grad_norm": grad_norm,
            "sigma": self.sigma,
            "perturbed_mean": float(values.mean()),
            "perturbed_std": float(values.std(unbiased=False)),
            "dropped_samples": float(dropped),
            "queries": float(evaluations * (self.adaptation.queries + 1)),
            **self.evaluator.metrics,
        }

    def step(self, tasks: Tasks) -> dict[str, float]:
        population = self.ask()
        return self.tell(population, self.evaluate(population, tasks))

    # -- the MetaLearner protocol ------------------------------------------------------------------
    def perturbed_values(self) -> Tensor | None:
        return None if self.last_fitness is None else self.last_fitness.values

    def close(self) -> None:
        """Release the evaluator's workers (the trainer calls this when training ends)."""
        self.evaluator.close()
