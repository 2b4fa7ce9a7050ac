"""Zero-order ES-MAML (Song et al., ICLR 2020), read top to bottom.

Objective: J(theta) = E_T[ f_T(U(theta, T)) ] with any adaptation operator U, differentiable or
not. Each iteration draws n tasks, perturbs theta into a population, adapts every member on its
task and scores it on the task's query phase; the meta-objective is an ``esmaml.zero_order``
function of theta, so ``loss.backward()`` yields

    grad J ~ 1/N sum_i (f_i(U(theta + sigma z_i)) - f_i(U(theta - sigma z_i))) z_i / (2 sigma)

(antithetic by default) and any ``torch.optim`` optimizer takes the step (plain SGD with lr beta
is the paper's update). Both members of an antithetic pair share the task and the adaptation's
inner noise (common random numbers), so task difficulty cancels in their difference.

The population's values come from an evaluator (``esmaml.evaluators``): in process by default,
or on Ray workers that regenerate the population from the decorator's seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from esmaml.adaptation.base import (
    AdaptationOperator,
    check_positive_float,
    check_positive_int,
    num_tasks,
)
from esmaml.evaluators import Evaluator, LocalEvaluator, PopulationSpec, member_losses
from esmaml.meta.base import MetaLearner, load_optimizer_state
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order import (
    ZeroOrderStats,
    draw_seed,
    make_generator,
    population_size,
    zero_order,
)


class ESMAML(MetaLearner):
    """Zero-order ES-MAML.

    Args:
        family: the task family.
        adaptation: the operator U.
        optimizer: a factory ``params -> torch.optim.Optimizer`` (default SGD(lr=0.01)).
        num_perturbations: N directions per iteration (2N evaluations when antithetic).
        sigma: meta smoothing scale.
        method, sampling, shaping: see :func:`esmaml.zero_order`.
        tasks_per_iteration: n tasks per iteration; default N (one task per direction). With
            n < N, directions share tasks round-robin.
        common_random_numbers: both members of a pair share the adaptation noise (default).
        nan_policy: ``raise`` on a NaN/inf evaluation, or ``drop`` the sample (logged).
        generator: the run's random stream (task sampling is done by the caller).
        evaluator: computes the population's values (default: a :class:`LocalEvaluator`, in
            process); e.g. a :class:`esmaml.evaluators.RayEvaluator`. :meth:`close` closes it.
    """

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
        self._tasks = check_positive_int(
            "tasks_per_iteration", tasks_per_iteration or num_perturbations
        )
        if self._tasks > self.num_perturbations:
            # Member i uses task (i mod N) mod n: tasks N..n-1 would be sampled but never used.
            raise ValueError(
                f"tasks_per_iteration ({self._tasks}) must be at most num_perturbations "
                f"({self.num_perturbations}): each direction evaluates one task"
            )
        if method == "forward" and self.num_perturbations == 1:
            # One perturbed member could not be told apart from the f(theta) baseline call.
            raise ValueError("num_perturbations must be >= 2 with method='forward', got 1")
        self.common_random_numbers = bool(common_random_numbers)
        # Without a generator, seed one from torch's global RNG so torch.manual_seed applies.
        self.generator = generator if generator is not None else make_generator(draw_seed())
        initial = family.init_params(self.generator) if init_params is None else init_params
        self.theta = nn.Parameter(initial.detach().clone().to(family.device))
        self.optimizer = (optimizer or (lambda p: torch.optim.SGD(p, lr=0.01)))([self.theta])
        self.meta_loss = zero_order(
            None,
            method=method,
            argnums=0,
            num_samples=self.num_perturbations,
            sigma=self.sigma,
            generator=self.generator,
            sampling=sampling,
            shaping=shaping,
            batch="population",
            nan_policy=nan_policy,
            value="population_mean",
        )(self._population_loss)
        self.method = method
        self.spec = PopulationSpec(
            self.num_perturbations, self.sigma, method, sampling, self.common_random_numbers
        )
        self.evaluator = evaluator if evaluator is not None else LocalEvaluator(family, adaptation)

    @property
    def tasks_per_iteration(self) -> int:
        return self._tasks

    @property
    def evaluations_per_iteration(self) -> int:
        return population_size(self.num_perturbations, self.meta_loss.method)

    def _population_loss(self, population: Tensor, tasks: Tasks, inner_seed: int) -> Tensor:
        """Post-adaptation query loss of each member ``[M, D]`` -> ``[M]``; member i gets task
        ``(i mod N) mod n`` (antithetic: i and i + N share the task and the inner noise).

        A population of one that is not the real population is f(theta), which the forward
        estimator needs as its baseline: the mean over all n tasks.
        """
        if population.shape[0] == 1 and self.evaluations_per_iteration != 1:
            n = num_tasks(tasks)
            rows = torch.arange(n, device=population.device)
            losses = member_losses(
                self.family,
                self.adaptation,
                population.expand(n, -1),
                rows,
                tasks,
                inner_seed,
                num_perturbations=n,
                members=n,
                common_random_numbers=self.common_random_numbers,
            )
            return losses.mean().reshape(1)
        seed = self.meta_loss.current_seed
        assert seed is not None  # the meta-loss draws from self.generator
        return self.evaluator.evaluate(
            self.theta.detach(), seed, tasks, inner_seed, self.spec, population=population
        )

    def step(self, tasks: Tasks) -> dict[str, float]:
        inner_seed = draw_seed(self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.meta_loss(self.theta, tasks, inner_seed)
        loss.backward()
        grad_norm = float(self.theta.grad.norm()) if self.theta.grad is not None else 0.0
        if self.theta.grad is not None and not bool(torch.isfinite(self.theta.grad).all()):
            # Never step on a NaN/inf estimate: theta and the optimizer state stay unchanged.
            raise FloatingPointError(
                f"ES-MAML: the meta-gradient is NaN/inf (norm {grad_norm}); the step was skipped"
            )
        previous = self.theta.detach().clone()
        self.optimizer.step()
        self.family.end_iteration()
        if not bool(torch.isfinite(self.theta).all()):
            with torch.no_grad():
                self.theta.copy_(previous)  # never leave NaN/inf meta-parameters behind
            raise FloatingPointError(
                "ES-MAML: the meta-parameters became NaN/inf after the optimizer step "
                f"(gradient norm {grad_norm}); lower the learning rate or sigma"
            )
        stats: ZeroOrderStats | None = self.meta_loss.last_stats
        assert stats is not None
        evaluations = stats.num_evaluations
        if self.meta_loss.evaluates_center:
            # f(theta), the forward estimator's baseline, adapted and scored on every task.
            evaluations += num_tasks(tasks)
        return {
            "meta_objective": float(loss.detach()),
            "grad_norm": grad_norm,
            "sigma": self.sigma,
            "perturbed_mean": stats.mean,
            "perturbed_std": stats.std,
            "dropped_samples": float(stats.num_dropped),
            "queries": float(evaluations * (self.adaptation.queries + 1)),
            **self.evaluator.metrics,
        }

    def close(self) -> None:
        """Release the evaluator's workers (the trainer calls this when training ends)."""
        self.evaluator.close()

    def parameters_flat(self) -> Tensor:
        return self.theta.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        load_optimizer_state(self.optimizer, state["optimizer"])
