"""Population evaluators: one interface, two backends.

- :class:`LocalEvaluator` (``evaluator.backend: local``, the default): in process, batched.
- :class:`RayEvaluator` (``evaluator.backend: ray``): a pool of Ray actors with dynamic
  sub-batches, retries, worker replacement and a drop policy (see ``docs/ray.md``).

:func:`learner_arguments` turns the ``evaluator`` section of a config into the keyword
arguments ES-MAML takes. Ray is imported only when a Ray evaluator starts.
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
    from esmaml.config import ExperimentConfig
    from esmaml.evaluators.ray_backend import RayEvaluator
    from esmaml.tasks.base import TaskFamily

__all__ = [
    "EvaluationError",
    "Evaluator",
    "LocalEvaluator",
    "PopulationSpec",
    "RayEvaluator",
    "learner_arguments",
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


def learner_arguments(
    config: ExperimentConfig, family: TaskFamily, meta_params: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for the meta-learner from ``config.evaluator``: none for the local
    backend; for Ray, ``evaluator=RayEvaluator(...)`` (not started yet) and, when failed
    evaluations may be dropped, ``nan_policy='drop'``. Raises ConfigError on a bad section."""
    from esmaml.config import ConfigError, check_params

    section = config.evaluator
    if section.backend == "local":
        if section.params:
            raise ConfigError(
                "evaluator.params configures the ray backend; the local backend takes none "
                f"(got {', '.join(sorted(section.params))}); set evaluator.backend=ray"
            )
        return {}
    if config.meta.algorithm != "es_maml":
        raise ConfigError(
            f"evaluator.backend=ray supports meta.algorithm=es_maml, not {config.meta.algorithm!r}"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("evaluator.backend=ray needs Ray: pip install 'esmaml[ray]'") from None
    from esmaml.evaluators.ray_backend import RayEvaluator

    params = check_params(
        "evaluator.params", RayEvaluator, section.params, skip=("family", "components")
    )
    try:
        evaluator = RayEvaluator(family, config, **params)
    except ValueError as error:
        raise ConfigError(f"evaluator.params: {error}") from None
    arguments: dict[str, Any] = {"evaluator": evaluator}
    if evaluator.max_failed_fraction > 0:
        if meta_params.get("nan_policy", "drop") != "drop":
            raise ConfigError(
                "evaluator.params.max_failed_fraction > 0 drops failed evaluations, which needs "
                f"meta.params.nan_policy=drop, not {meta_params['nan_policy']!r}"
            )
        arguments["nan_policy"] = "drop"
    return arguments
