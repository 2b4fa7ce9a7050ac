"""Population evaluators: one interface, two backends.

- :class:`LocalEvaluator` (``evaluator.backend: local``, the default): in process, batched.
- :class:`RayEvaluator` (``evaluator.backend: ray``): a pool of Ray actors with dynamic
  sub-batches, retries, worker replacement and a drop policy (see ``docs/ray.md``).

The ``evaluator`` section of a config becomes ES-MAML's keyword arguments in
:func:`esmaml.training.builders.learner_arguments`. Ray is imported only when a Ray evaluator
starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from esmaml.evaluators.base import (
    EvaluationError,
    Evaluator,
    PopulationSpec,
    member_losses,
    population_rows,
    regenerate_noise,
    regenerate_population,
)
from esmaml.evaluators.local import LocalEvaluator

if TYPE_CHECKING:
    from esmaml.evaluators.ray_backend import RayEvaluator

__all__ = [
    "EvaluationError",
    "Evaluator",
    "LocalEvaluator",
    "PopulationSpec",
    "RayEvaluator",
    "member_losses",
    "population_rows",
    "regenerate_noise",
    "regenerate_population",
]


def __getattr__(name: str) -> Any:
    if name == "RayEvaluator":  # the module imports Ray only when an evaluator starts
        from esmaml.evaluators.ray_backend import RayEvaluator

        return RayEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
