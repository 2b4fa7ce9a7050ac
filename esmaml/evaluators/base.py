"""The evaluator interface: the objective of every member of ES-MAML's population.

ES-MAML's population is regenerated from one 63-bit seed: the directions are
``z = sample_noise((N, D), kind, generator=make_generator(seed, device))``, member ``i < N`` is
``theta + sigma * z_i`` and, when antithetic, member ``N + i`` is ``theta - sigma * z_i``
(:func:`population_rows`, which ES-MAML's ``ask`` uses too). An evaluator maps

    (theta [D], seed, tasks {k: [n, ...]}, inner_seed, spec) -> values [M]

where ``values[i]`` is :func:`member_losses` of member ``i``: its post-adaptation query loss on
task ``(i mod N) mod n``. Backends:

- :class:`esmaml.evaluators.LocalEvaluator`: in process, the whole population in one batched
  call of the family (the default).
- :class:`esmaml.evaluators.RayEvaluator`: sub-batches on a pool of Ray actors that receive
  only (theta, seed, task tensors, inner seed, normalisation statistics) and return scalars.

Contract every backend honours:

- The values equal the local ones bitwise, however the population is split: a member's
  evaluation is the same arithmetic whatever else is in its call (``docs/ray.md``).
- A NaN value marks a member whose evaluation was lost and dropped (a failed worker, within the
  backend's tolerance); ES-MAML then runs with ``nan_policy='drop'``.
- Side effects land on the driver's family as if it had run the rollouts: observation
  statistics go into ``family.normalizer.pending`` (filed per member inside
  ``family.members(rows)``, merged in member order) and steps into ``family.env_steps``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator, num_tasks
from esmaml.seeding import substream, substream_generator
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.estimators import perturb, population_size
from esmaml.zero_order.noise import make_generator, sample_noise


class EvaluationError(RuntimeError):
    """An evaluation that could not complete (too many failed workers, no cluster)."""


@dataclass(frozen=True)
class PopulationSpec:
    """What, besides theta and the seed, names ES-MAML's population and its task assignment.

    Args:
        num_perturbations: N, the number of directions.
        sigma: the meta smoothing scale.
        method: ``naive``, ``forward`` or ``antithetic`` (2N members).
        sampling: ``gaussian`` or ``orthogonal`` directions.
        common_random_numbers: members that share a task share its adaptation noise.
    """

    num_perturbations: int
    sigma: float
    method: str
    sampling: str
    common_random_numbers: bool = True

    @property
    def size(self) -> int:
        """M, the number of members."""
        return population_size(self.num_perturbations, self.method)

    def rows(self, directions: Sequence[int]) -> list[int]:
        """The members that use ``directions``: ``d`` and, when antithetic, ``N + d``."""
        rows = list(directions)
        if self.method == "antithetic":
            rows += [self.num_perturbations + d for d in directions]
        return rows


def regenerate_noise(
    seed: int, spec: PopulationSpec, dim: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The ``[N, D]`` directions the ``zero_order`` decorator draws for ``seed``."""
    generator = make_generator(seed, device)
    return sample_noise(
        (spec.num_perturbations, dim),
        kind=spec.sampling,  # type: ignore[arg-type]
        generator=generator,
        device=device,
        dtype=dtype,
    )


def population_rows(
    theta: Tensor, noise: Tensor, spec: PopulationSpec, directions: Sequence[int]
) -> Tensor:
    """The members that use ``directions``, ``[R, D]`` in the order of ``spec.rows``: ES-MAML's
    own population and every remote evaluator's sub-batch come from this one function, so they
    are bitwise the same members."""
    index = torch.as_tensor(list(directions), dtype=torch.long, device=noise.device)
    return perturb(theta, noise[index], spec.sigma, spec.method)  # type: ignore[arg-type]


def regenerate_population(theta: Tensor, seed: int, spec: PopulationSpec) -> Tensor:
    """The whole ``[M, D]`` population that ``seed`` names."""
    noise = regenerate_noise(seed, spec, theta.shape[-1], theta.device, theta.dtype)
    return population_rows(theta, noise, spec, range(spec.num_perturbations))


def member_losses(
    family: TaskFamily,
    adaptation: AdaptationOperator,
    params: Tensor,
    rows: Tensor,
    tasks: Tasks,
    inner_seed: int,
    *,
    num_perturbations: int,
    members: int,
    common_random_numbers: bool = True,
) -> Tensor:
    """ES-MAML's objective of population members ``rows`` (parameters ``params [R, D]``) in a
    population of ``members``: adapt each on its task, score it on the task's query phase.

    Member ``i`` uses direction ``i mod N`` and task ``(i mod N) mod n``, so both members of an
    antithetic pair share their task even when n does not divide N. All randomness (start
    states, adaptation directions) is drawn per task slot from ``inner_seed``, never per row,
    so any subset of rows gets exactly the values it has in the whole population.
    """
    n = num_tasks(tasks)
    task_ids = rows % num_perturbations % n
    if not common_random_numbers:
        # A task slot per member: adaptation noise is drawn per slot, so none is shared.
        slots = torch.arange(members, device=rows.device) % num_perturbations % n
        tasks = {key: value[slots] for key, value in tasks.items()}
        task_ids = rows
    with family.members(rows):  # what the rollouts gather is filed per member
        adapted = adaptation.adapt(family, params, tasks, task_ids, substream(inner_seed, "adapt"))
        generator = substream_generator(inner_seed, "query", device=params.device)
        return family.loss(adapted, tasks, task_ids, phase="query", generator=generator)


class Evaluator(abc.ABC):
    """Computes the values of ES-MAML's population (see the module docstring)."""

    @abc.abstractmethod
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
        """Values ``[M]`` of the population ``seed`` names around ``theta`` (NaN: dropped).

        ``population`` is the decorator's materialised ``[M, D]`` population: an in-process
        backend may use it; remote backends regenerate it from ``seed`` where they run.
        """

    @property
    def metrics(self) -> dict[str, float]:
        """Scalar metrics of the latest :meth:`evaluate` (logged with the iteration)."""
        return {}

    def close(self) -> None:  # noqa: B027 - a no-op unless the backend holds resources
        """Release workers and connections; the evaluator restarts them if used again."""
