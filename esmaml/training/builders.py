"""Config -> components. Every component a config names is resolved through
:mod:`esmaml.registry`: a short name (built-in, registered, or an installed entry point) or an
import path ``module:Name`` found from the current directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from esmaml.adaptation.base import AdaptationOperator
from esmaml.config import ConfigError, ExperimentConfig, check_device_available, check_params
from esmaml.meta.base import MetaLearner
from esmaml.models import check_hidden
from esmaml.registry import KINDS, resolve
from esmaml.tasks.base import TaskFamily

# The built-in names of each kind (see esmaml.registry.KINDS for all of them).
FAMILIES: dict[str, str] = KINDS["tasks"].builtins
OPERATORS: dict[str, str] = KINDS["adaptation"].builtins
ALGORITHMS: dict[str, str] = KINDS["meta"].builtins


def build_family(config: ExperimentConfig) -> TaskFamily:
    check_device_available(config.device)
    factory = resolve("tasks", config.task.family)
    if "hidden" in config.task.params:  # every family's MLP; named here, with its valid form
        try:
            check_hidden(config.task.params["hidden"], "task.params.hidden")
        except ValueError as error:
            raise ConfigError(str(error)) from None
    params = check_params("task.params", factory, config.task.params)
    if "device" in _accepted(factory):
        params.setdefault("device", config.device)
    return construct("task.params", factory, params)


def build_adaptation(config: ExperimentConfig) -> AdaptationOperator:
    factory = resolve("adaptation", config.adaptation.operator)
    params = check_params("adaptation.params", factory, config.adaptation.params)
    return construct("adaptation.params", factory, params)


def build_optimizer(
    config: ExperimentConfig,
) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    cls = resolve("optimizers", config.optimizer.name)
    extra = check_params("optimizer.params", cls, config.optimizer.params, skip=("params", "lr"))
    return lambda params: cls(params, lr=config.optimizer.lr, **extra)


def build_learner(
    config: ExperimentConfig,
    family: TaskFamily,
    adaptation: AdaptationOperator,
    generator: torch.Generator,
) -> MetaLearner:
    factory = resolve("meta", config.meta.algorithm)
    # evaluator.backend=ray: a RayEvaluator (ES-MAML only; its workers start on first use).
    evaluator = learner_arguments(config, factory, family, config.meta.params)
    if factory.owns_inner_loop:
        # learn2learn's MAML owns its inner loop (meta.params alpha, adaptation_steps) and its
        # optimizer; the optimizer section gives the outer optimizer and learning rate.
        params = check_params(
            "meta.params",
            factory,
            config.meta.params,
            skip=("family", "meta_lr", "optimizer", "seed", "init_params"),
        )
        if config.meta.algorithm == "l2l_maml":
            check_l2l_sections(config, params)
        return construct(
            "meta.params",
            factory,
            {
                "family": family,
                "meta_lr": config.optimizer.lr,
                "optimizer": config.optimizer.name,
                "seed": config.seed,
                **params,
            },
        )
    params = check_params(
        "meta.params",
        factory,
        config.meta.params,
        skip=("family", "adaptation", "optimizer", "generator", "init_params", "evaluator"),
    )
    return construct(
        "meta.params",
        factory,
        {
            "family": family,
            "adaptation": adaptation,
            "optimizer": build_optimizer(config),
            "generator": generator,
            **params,
            **evaluator,
        },
    )


def learner_arguments(
    config: ExperimentConfig,
    algorithm: type[MetaLearner],
    family: TaskFamily,
    meta_params: dict[str, Any],
) -> dict[str, Any]:
    """Keyword arguments for the meta-learner from ``config.evaluator``: none for the local
    backend; for Ray, ``evaluator=RayEvaluator(...)`` (not started yet) and, when failed
    evaluations may be dropped, ``nan_policy='drop'``. Raises ConfigError on a bad section."""
    section = config.evaluator
    if section.backend == "local":
        if section.params:
            raise ConfigError(
                "evaluator.params configures the ray backend; the local backend takes none "
                f"(got {', '.join(sorted(section.params))}); set evaluator.backend=ray"
            )
        return {}
    if not algorithm.takes_evaluator:
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
        evaluator = RayEvaluator(family, ComponentFactory(config), **params)
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


class ComponentFactory:
    """A picklable ``() -> (family, adaptation)`` of a config, for remote workers (Ray).

    It carries the config as plain data and the directories import paths were resolved from
    (the driver's working directory), which it puts on the worker's ``sys.path`` before it
    resolves anything: a worker finds ``module:Name`` components wherever it runs. Components
    added with :func:`esmaml.register` exist only in the driver's process: name them by import
    path or entry point for remote workers.
    """

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.search_path = [os.getcwd()]

    def __call__(self) -> tuple[TaskFamily, AdaptationOperator]:
        for directory in reversed(self.search_path):
            if directory not in sys.path:
                sys.path.insert(0, directory)
        return build_family(self.config), build_adaptation(self.config)


def check_l2l_sections(config: ExperimentConfig, meta_params: dict[str, Any]) -> None:
    """learn2learn's MAML owns its inner loop and optimizer: refuse config it would ignore."""
    from esmaml.meta.l2l_maml import OPTIMIZERS as L2L_OPTIMIZERS

    if config.optimizer.name not in L2L_OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={config.optimizer.name!r} is not available with meta.algorithm="
            f"l2l_maml; valid: {', '.join(L2L_OPTIMIZERS)}"
        )
    if config.optimizer.params:
        raise ConfigError(
            "optimizer.params are not used by meta.algorithm=l2l_maml (it builds its optimizer "
            f"from optimizer.name and optimizer.lr); remove {sorted(config.optimizer.params)}"
        )
    section = config.adaptation
    if section.operator == "es_gradient" and not section.params:
        return  # the schema's default: no adaptation section was given
    alpha = meta_params.get("alpha", 0.01)
    steps = meta_params.get("adaptation_steps", 1)
    restated = (
        section.operator == "gradient_descent"
        and set(section.params) <= {"lr", "num_steps"}
        and section.params.get("lr", 0.01) == alpha
        and section.params.get("num_steps", 1) == steps
    )
    if not restated:
        raise ConfigError(
            "meta.algorithm=l2l_maml adapts with its own inner loop (meta.params alpha="
            f"{alpha}, adaptation_steps={steps}); leave the adaptation section out or restate "
            f"it as gradient_descent {{lr: {alpha}, num_steps: {steps}}}"
        )


def construct(where: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
    """``factory(**params)``; a bad value is a ConfigError naming the config section."""
    try:
        return factory(**params)
    except ConfigError:
        raise  # already names its key (e.g. task.params.env)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _accepted(factory: Callable[..., Any]) -> set[str]:
    import inspect

    return set(inspect.signature(factory).parameters)


def fewshot_family(
    dataset: str = "synthetic",
    ways: int = 5,
    shots: int = 1,
    query_shots: int | None = None,
    *,
    num_classes: int = 20,
    per_class: int = 20,
    dim: int = 16,
    root: str = "~/data",
    hidden: list[int] | tuple[int, ...] = (64,),
    device: str = "cpu",
) -> TaskFamily:
    """Few-shot classification through learn2learn tasksets, by config: ``dataset`` is
    ``synthetic`` (class-conditional Gaussians, no download) or ``omniglot`` (downloads into
    ``root``: needs internet)."""
    from esmaml.tasks.fewshot import make_fewshot_family, synthetic_metadataset

    if dataset == "synthetic":
        source: Any = synthetic_metadataset(num_classes=num_classes, per_class=per_class, dim=dim)
    elif dataset == "omniglot":
        source = "omniglot"
    else:
        raise ConfigError(f"task.params.dataset={dataset!r} is unknown; valid: synthetic, omniglot")
    return make_fewshot_family(
        source, ways, shots, query_shots, root=root, hidden=tuple(hidden), device=device
    )
