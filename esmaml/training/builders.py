"""Config -> components. Registries name every component by a short string; entries are
``module:attribute`` paths imported on demand, so optional extras (learn2learn, MuJoCo, Ray)
are imported only by the runs that use them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from esmaml.adaptation.base import AdaptationOperator
from esmaml.config import ConfigError, ExperimentConfig, check_device_available, check_params
from esmaml.evaluators import learner_arguments
from esmaml.meta.base import MetaLearner
from esmaml.models import check_hidden
from esmaml.tasks.base import TaskFamily

FAMILIES: dict[str, str] = {
    "sine": "esmaml.tasks.sine:SineRegression",
    "nondiff_sine": "esmaml.tasks.sine:NonDifferentiableSine",
    "fewshot": "esmaml.training.builders:fewshot_family",
    "rl": "esmaml.rl.family:RLFamily",
}
OPERATORS: dict[str, str] = {
    "es_gradient": "esmaml.adaptation.es_gradient:ESGradientAdaptation",
    "hill_climbing": "esmaml.adaptation.hill_climbing:HillClimbingAdaptation",
    "gradient_descent": "esmaml.adaptation.gradient_descent:GradientDescentAdaptation",
    "identity": "esmaml.adaptation.gradient_descent:IdentityAdaptation",
    "policy_gradient": "esmaml.adaptation.policy_gradient:PolicyGradientAdaptation",
}
ALGORITHMS: dict[str, str] = {
    "es_maml": "esmaml.meta.es_maml:ESMAML",
    "first_order": "esmaml.meta.first_order:FirstOrderESMAML",
    "l2l_maml": "esmaml.meta.l2l_maml:L2LMAML",
    "pg_maml": "esmaml.meta.pg_maml:PGMAML",
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def resolve(registry: dict[str, str], kind: str, name: str) -> Callable[..., Any]:
    if name not in registry:
        from esmaml.config import _near

        raise ConfigError(f"{kind}={name!r} is unknown{_near(name, list(registry))}")
    module, _, attribute = registry[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_family(config: ExperimentConfig) -> TaskFamily:
    check_device_available(config.device)
    factory = resolve(FAMILIES, "task.family", config.task.family)
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
    factory = resolve(OPERATORS, "adaptation.operator", config.adaptation.operator)
    params = check_params("adaptation.params", factory, config.adaptation.params)
    return construct("adaptation.params", factory, params)


def build_optimizer(
    config: ExperimentConfig,
) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    name = config.optimizer.name
    if name not in OPTIMIZERS:
        from esmaml.config import _near

        raise ConfigError(f"optimizer.name={name!r} is unknown{_near(name, list(OPTIMIZERS))}")
    cls = OPTIMIZERS[name]
    extra = check_params("optimizer.params", cls, config.optimizer.params, skip=("params", "lr"))
    return lambda params: cls(params, lr=config.optimizer.lr, **extra)


def build_learner(
    config: ExperimentConfig,
    family: TaskFamily,
    adaptation: AdaptationOperator,
    generator: torch.Generator,
) -> MetaLearner:
    factory = resolve(ALGORITHMS, "meta.algorithm", config.meta.algorithm)
    # evaluator.backend=ray: a RayEvaluator (ES-MAML only; its workers start on first use).
    evaluator = learner_arguments(config, family, config.meta.params)
    if config.meta.algorithm == "l2l_maml":
        # learn2learn's MAML owns its inner loop (meta.params alpha, adaptation_steps) and its
        # optimizer; the optimizer section gives the outer optimizer and learning rate.
        params = check_params(
            "meta.params",
            factory,
            config.meta.params,
            skip=("family", "meta_lr", "optimizer", "seed", "init_params"),
        )
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
