"""Typed experiment configs: YAML files plus ``key=value`` overrides, validated up front.

The schema is a tree of dataclasses (OmegaConf structured configs). Component options live in
free-form ``params`` mappings that are checked against the component's constructor signature, so
an unknown key anywhere is an error that lists the near matches.
"""

from __future__ import annotations

import difflib
import inspect
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    ValidationError,
)


class ConfigError(ValueError):
    """A config that cannot run: the message names the key and what would be valid."""


INT64_MAX = 2**63 - 1


@dataclass
class TaskConfig:
    family: str = "sine"
    params: dict[str, Any] = field(default_factory=dict)
    train_pool: int = -1
    test_pool: int = 100


@dataclass
class AdaptationConfig:
    operator: str = "es_gradient"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetaConfig:
    algorithm: str = "es_maml"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationConfig:
    every: int = 50
    num_tasks: int = 100
    num_steps: int | None = None
    # Evaluate the initial meta-parameters before the first update (the metrics row with
    # iteration -1): the baseline that meta-training must beat.
    initial: bool = True


@dataclass
class CheckpointConfig:
    every: int = 25
    keep_previous: bool = True


@dataclass
class WandbConfig:
    # auto: online when logged in (an API key is configured), else offline; WANDB_MODE wins.
    mode: str = "auto"
    project: str = "esmaml"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    log_checkpoint: bool = True


@dataclass
class EvaluatorConfig:
    backend: str = "local"  # local | ray
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    device: str = "cpu"
    iterations: int = 100
    task: TaskConfig = field(default_factory=TaskConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    progress: bool = True
    run_dir: str | None = None


def _near(key: str, options: Sequence[str]) -> str:
    matches = difflib.get_close_matches(key, list(options), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "."
    return f"{hint} Valid: {', '.join(sorted(options))}"


def _keys_of(node: Any) -> list[str]:
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as error:
        key = str(getattr(error, "key", "")) or str(error)
        parent = getattr(error, "full_key", key).rsplit(".", 1)
        node = OmegaConf.select(base, parent[0]) if len(parent) == 2 else base
        raise ConfigError(
            f"{source}: unknown key {getattr(error, 'full_key', key)!r}{_near(key, _keys_of(node))}"
        ) from None
    except ValidationError as error:
        full_key = getattr(error, "full_key", None)
        message = str(error.msg or error).splitlines()[0]
        if not full_key:  # e.g. a scalar given for a whole section (task=5)
            raise ConfigError(f"{source}: wrong type: {message}") from None
        raise ConfigError(f"{source}: {full_key!r} has the wrong type: {message}") from None


def load_config(
    path: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """The schema defaults, then the YAML file (or a mapping of the same shape), then
    ``key=value`` overrides (dotted keys)."""
    config: DictConfig = OmegaConf.structured(ExperimentConfig)
    if isinstance(path, Mapping):
        if not path:
            raise ConfigError("the config dict is empty; it must set at least one key")
        config = _merge(config, OmegaConf.create(dict(path)), "config dict")
    elif path is not None:
        file = Path(path)
        if file.is_dir():
            raise ConfigError(f"config file {str(file)!r} is a directory, not a YAML file")
        if not file.exists():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} is not a regular file")
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            byte = error.object[error.start]
            raise ConfigError(
                f"config file {str(file)!r} is not UTF-8 text (byte {byte:#04x} at offset "
                f"{error.start}); save it as UTF-8"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"config file {str(file)!r} cannot be read: {error.strerror}"
            ) from None
        try:
            loaded = OmegaConf.load(io.StringIO(text))
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {str(file)!r} is not valid YAML: {error}") from None
        except OSError:  # a bare scalar (``5``): OmegaConf's "invalid loaded object type"
            raise ConfigError(f"config file {str(file)!r} must hold a mapping") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {str(file)!r} must hold a mapping")
        if not loaded:
            # The schema defaults under the file's name would run an experiment nobody wrote.
            raise ConfigError(
                f"config file {str(file)!r} is empty; start from a file in configs/ (a config "
                "must set at least one key)"
            )
        if "name" not in loaded:
            loaded.name = file.stem
        config = _merge(config, loaded, str(file))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. iterations=10)")
        key, _ = item.split("=", 1)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        free_form = "params" in key.split(".")[:-1]  # component options: checked when built
        if not free_form and (not isinstance(node, DictConfig) or leaf not in node):
            options = _keys_of(node) if isinstance(node, DictConfig) else _keys_of(config)
            raise ConfigError(
                f"override {item!r}: unknown key {key!r}{_near(leaf or key, options)}"
            )
        try:
            parsed = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as error:
            message = str(error).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({message})"
            ) from None
        value = OmegaConf.select(parsed, key) if leaf == "params" else None
        if isinstance(value, DictConfig):
            # ``section.params={...}`` sets the whole section (a merge would keep the old keys):
            # how an override that switches a component drops the previous one's options.
            OmegaConf.update(config, key, value, merge=False)
            continue
        config = _merge(config, parsed, f"override {item!r}")
    try:
        result: ExperimentConfig = OmegaConf.to_object(config)  # type: ignore[assignment]
    except InterpolationResolutionError as error:
        raise ConfigError(
            f"{getattr(error, 'full_key', '')!r}: cannot resolve an interpolation: "
            f"{str(error.msg or error).splitlines()[0]}"
        ) from None
    validate(result)
    return result


def validate(config: ExperimentConfig) -> None:
    """Value checks the types cannot express."""
    checks: list[tuple[str, bool, str]] = [
        ("iterations", config.iterations >= 1, "an int >= 1"),
        ("evaluation.every", config.evaluation.every >= 1, "an int >= 1"),
        ("evaluation.num_tasks", config.evaluation.num_tasks >= 1, "an int >= 1"),
        (
            "evaluation.num_steps",
            config.evaluation.num_steps is None or config.evaluation.num_steps >= 0,
            "null (the operator's num_steps) or an int >= 0",
        ),
        ("checkpoint.every", config.checkpoint.every >= 1, "an int >= 1"),
        ("optimizer.lr", 0 < config.optimizer.lr < math.inf, "a positive finite number"),
        ("seed", 0 <= config.seed <= INT64_MAX, f"an int in [0, {INT64_MAX}] (2**63 - 1)"),
        (
            "task.train_pool",
            config.task.train_pool == -1 or config.task.train_pool >= 1,
            "-1 or >= 1",
        ),
        ("task.test_pool", config.task.test_pool == -1 or config.task.test_pool >= 1, "-1 or >= 1"),
        (
            "wandb.mode",
            config.wandb.mode in ("online", "offline", "disabled", "auto"),
            "one of online, offline, disabled, auto",
        ),
        ("evaluator.backend", config.evaluator.backend in ("local", "ray"), "local or ray"),
    ]
    for key, ok, valid in checks:
        if not ok:
            value = OmegaConf.select(OmegaConf.structured(config), key)
            raise ConfigError(f"{key}={value!r} is invalid; it must be {valid}")
    check_device(config.device)
    if config.wandb.mode != "disabled":
        check_wandb_environment()


def check_device(device: str) -> None:
    """``device`` must name a torch device type (cpu, cuda, cuda:1, mps, ...)."""
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(
            f"device={device!r} is invalid; it must be a torch device such as cpu, cuda or cuda:1"
        ) from None


def check_device_available(device: str) -> None:
    """A CUDA or MPS ``device`` must exist on this machine (checked when a run is built, not
    when its config is read)."""
    import torch

    parsed = torch.device(device)
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device={device!r} but this machine has no usable CUDA device "
                "(torch.cuda.is_available() is False); use device=cpu"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"device={device!r} but this machine has {count} CUDA device(s): "
                f"valid: cuda, {', '.join(f'cuda:{i}' for i in range(count))}"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} but MPS is not available here; use device=cpu")


#: WANDB_MODE values wandb understands (``dryrun`` is its old name for offline, ``run`` online).
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun", "run")


def check_wandb_environment() -> None:
    """An unknown ``WANDB_MODE`` in the environment would be ignored (or make wandb fail and
    the run log nothing) without a word: refuse it."""
    value = os.environ.get("WANDB_MODE")
    if value is not None and value.strip() and value.strip().lower() not in WANDB_ENV_MODES:
        raise ConfigError(
            f"environment variable WANDB_MODE={value!r} is not a wandb mode; valid: "
            f"{', '.join(WANDB_ENV_MODES)} (or unset it and use wandb.mode)"
        )


def check_params(
    where: str, target: Callable[..., Any], params: Mapping[str, Any], skip: Sequence[str] = ()
) -> dict[str, Any]:
    """``params`` must be keyword arguments that ``target`` accepts, each of the type its
    annotation declares (see :mod:`esmaml.typecheck`)."""
    from esmaml.typecheck import describe, matches, parameter_hints

    accepted: list[str] = []
    hints: dict[str, Any] = {}
    open_ended = False
    # A constructor that forwards **kwargs to its base class accepts the base's keywords too.
    targets = list(target.__mro__) if inspect.isclass(target) else [target]
    for candidate in targets:
        if candidate is object:
            break
        function = candidate.__init__ if inspect.isclass(candidate) else candidate
        if inspect.isclass(candidate) and "__init__" not in vars(candidate):
            continue
        signature = inspect.signature(function)
        own_hints = parameter_hints(function)
        for name, p in signature.parameters.items():
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            if name in ("self", *skip) or name in accepted:
                continue
            accepted.append(name)
            if name in own_hints:
                hints[name] = own_hints[name]
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
        if not inspect.isclass(target):
            open_ended = True  # a plain function with **kwargs: any further key is accepted
            break
    else:
        open_ended = True
    owner = getattr(target, "__name__", repr(target))
    unknown = [key for key in params if key not in accepted]
    if unknown and not open_ended:
        _refuse_unknown(where, owner, unknown, accepted)
    for key, value in params.items():
        if key in hints and matches(value, hints[key]) is False:
            raise ConfigError(
                f"{where}.{key}={value!r} has the wrong type: {owner} takes "
                f"{describe(hints[key])} for {key}, got {type(value).__name__} {value!r}"
            )
    return dict(params)


def _refuse_unknown(where: str, owner: str, unknown: list[str], accepted: list[str]) -> None:
    """One unknown key near a valid one is a typo; several, or one with no near match, are
    options of the component this section held before an override switched it."""
    section = where.rpartition(".")[0]
    if len(unknown) == 1:
        key = unknown[0]
        hint = ""
        if not difflib.get_close_matches(key, accepted, n=1, cutoff=0.5):
            hint = (
                f". If it is an option of the {section} component an override replaced, remove "
                f"it or reset the section with the override {where}={{}}"
            )
        raise ConfigError(f"{where}: unknown key {key!r}{_near(key, accepted)}{hint}")
    takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes no options"
    raise ConfigError(
        f"{where}: {owner} does not take {', '.join(repr(k) for k in unknown)} (options of "
        f"another {section} component?); {takes}. Remove them from the config, or reset the "
        f"section with the override {where}={{}}"
    )


def to_yaml(config: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]
