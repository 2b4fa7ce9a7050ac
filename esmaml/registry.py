"""One registry for every kind of component a config names.

A config names a component in one of three ways, all resolved by :func:`resolve`:

- a short name: esmaml's built-ins, names added with :func:`register` (notebooks, scripts), and
  names installed packages declare as entry points, one group per kind
  (``[project.entry-points."esmaml.tasks"] linreg = "mypkg.tasks:LinearRegression"``);
- an import path ``package.module:Name``, imported with the current working directory on the
  import path (as ``python -m`` has it), so a user's folder needs no installation.

The config stores the string, so ``esmaml evaluate`` and ``--resume`` find the component again
in a fresh process. Built-ins are ``module:attribute`` strings imported on demand: optional
extras (learn2learn, MuJoCo, Ray) are imported only by the runs that use them.

This module sits below the task, adaptation and meta-learner packages: it imports none of them
(each kind names its base class as a string, checked when an entry is resolved).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from esmaml.config import ConfigError

__all__ = [
    "KINDS",
    "Kind",
    "describe",
    "entries",
    "import_module",
    "import_object",
    "list_components",
    "register",
    "resolve",
]


@dataclass
class Kind:
    """A kind of component: the config key that names it, its base class and its built-ins."""

    key: str
    base: str  # "module:Class" a component must be (a subclass or an instance factory of)
    builtins: dict[str, str]
    accepts_functions: bool = False  # a plain function returning the component is allowed
    registered: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the kind's own name, set below

    @property
    def group(self) -> str:
        """The entry-point group installed packages add components of this kind to."""
        return f"esmaml.{self.name}"


KINDS: dict[str, Kind] = {
    "tasks": Kind(
        "task.family",
        "esmaml.tasks.base:TaskFamily",
        {
            "sine": "esmaml.tasks.sine:SineRegression",
            "nondiff_sine": "esmaml.tasks.sine:NonDifferentiableSine",
            "fewshot": "esmaml.training.builders:fewshot_family",
            "rl": "esmaml.rl.family:RLFamily",
        },
        accepts_functions=True,
    ),
    "envs": Kind(
        "task.params.env",
        "gymnasium:Env",  # or envs.core:BatchedMetaEnv (see _check_kind)
        {
            **{
                name: f"envs.{module}:{name}"
                for module, names in (
                    ("navigation", ("Navigation2D", "FourCorners", "SixCircles")),
                    ("point_mass", ("PointMassGoalVelocity",)),
                    ("classic", ("MetaPendulum", "MetaCartPole")),
                    (
                        "mujoco",
                        (
                            "HalfCheetahForwardBackward",
                            "HalfCheetahGoalVelocity",
                            "AntForwardBackward",
                            "AntDirection",
                        ),
                    ),
                )
                for name in names
            }
        },
    ),
    "adaptation": Kind(
        "adaptation.operator",
        "esmaml.adaptation.base:AdaptationOperator",
        {
            "es_gradient": "esmaml.adaptation.es_gradient:ESGradientAdaptation",
            "hill_climbing": "esmaml.adaptation.hill_climbing:HillClimbingAdaptation",
            "gradient_descent": "esmaml.adaptation.gradient_descent:GradientDescentAdaptation",
            "identity": "esmaml.adaptation.gradient_descent:IdentityAdaptation",
            "policy_gradient": "esmaml.adaptation.policy_gradient:PolicyGradientAdaptation",
        },
    ),
    "meta": Kind(
        "meta.algorithm",
        "esmaml.meta.base:MetaLearner",
        {
            "es_maml": "esmaml.meta.es_maml:ESMAML",
            "first_order": "esmaml.meta.first_order:FirstOrderESMAML",
            "l2l_maml": "esmaml.meta.l2l_maml:L2LMAML",
            "pg_maml": "esmaml.meta.pg_maml:PGMAML",
            "maml": "esmaml.meta.func_maml:FuncMAML",
        },
    ),
    "policies": Kind(
        "task.params.policy",
        "esmaml.rl.policies:Policy",
        {"mlp": "esmaml.rl.policies:MLPPolicy"},
    ),
    "optimizers": Kind(
        "optimizer.name",
        "torch.optim:Optimizer",
        {"sgd": "torch.optim:SGD", "adam": "torch.optim:Adam", "adamw": "torch.optim:AdamW"},
    ),
}
for _name, _kind in KINDS.items():
    _kind.name = _name


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is unknown; valid: {', '.join(KINDS)}")
    return KINDS[kind]


def register(kind: str, name: str, obj: Any = None, *, replace: bool = False) -> Any:
    """Add ``obj`` as ``name`` of ``kind`` (``tasks``, ``envs``, ``adaptation``, ``meta``,
    ``policies``, ``optimizers``) for this process; without ``obj``, a decorator.

    A registration lives as long as the process: a run that names it must be evaluated or
    resumed by a process that registers it again (an import path ``module:Name`` or an entry
    point needs nothing of the sort). ``replace=True`` may shadow a name already taken.
    """
    entry = _kind(kind)
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a {kind} name must be a non-empty string without ':', got {name!r}")

    def add(target: Any) -> Any:
        _check_kind(entry, target, f"esmaml.register({kind!r}, {name!r}, ...)")
        if not replace and name in entries(kind) and entries(kind)[name] is not target:
            raise ValueError(
                f"{kind} {name!r} is already registered; pass replace=True to shadow it"
            )
        entry.registered[name] = target
        return target

    return add if obj is None else add(obj)


def _entry_points(kind: Kind) -> dict[str, metadata.EntryPoint]:
    return {point.name: point for point in metadata.entry_points(group=kind.group)}


def entries(kind: str) -> dict[str, Any]:
    """Every short name of ``kind``: ``module:attr`` strings (built-ins), entry points (not
    loaded yet) or objects (:func:`register`), in lookup order of precedence last."""
    entry = _kind(kind)
    return {**entry.builtins, **_entry_points(entry), **entry.registered}


def resolve(kind: str, name: str, key: str | None = None) -> Any:
    """The component ``name`` of ``kind`` names: a short name or ``module:Name``.

    Errors are :class:`ConfigError` naming the config ``key`` (default the kind's) and what
    would be valid: an unknown name (with near matches), a module that is not found, a missing
    attribute, an entry point that fails to load, an object of the wrong kind.
    """
    entry = _kind(kind)
    where = key or entry.key
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}={name!r} must be a name or an import path module:Name")
    known = entries(kind)
    if name in known:
        target = known[name]
        if isinstance(target, str):
            target = import_object(target, where)
        elif isinstance(target, metadata.EntryPoint):
            target = _load_entry_point(target, where)
    elif ":" in name:
        target = import_object(name, where)
    else:
        matches = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "."
        raise ConfigError(
            f"{where}={name!r} is unknown{hint} Valid: {', '.join(sorted(known))}, or an import "
            "path module:Name (found from the current directory)"
        )
    _check_kind(entry, target, f"{where}={name!r}")
    return target


def _load_entry_point(point: metadata.EntryPoint, where: str) -> Any:
    dist = getattr(point, "dist", None)  # EntryPoint.dist: None for some finders
    source = f"{dist.name} {dist.version}" if dist is not None else "an installed package"
    try:
        return point.load()
    except Exception as error:
        raise ConfigError(
            f"{where}={point.name!r}: the entry point {point.value!r} (group {point.group!r}, "
            f"from {source}) failed to load: {type(error).__name__}: {error}"
        ) from error


def import_module(name: str, where: str) -> Any:
    """Import module ``name`` with the current directory first on ``sys.path`` (as
    ``python -m`` puts it); ``where`` (``key=value``) starts every error message."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name + ".").startswith(error.name + "."):
            raise ConfigError(
                f"{where}: no module named {error.name!r} in the current directory or the "
                "installed packages"
            ) from None
        raise ConfigError(f"{where}: importing {name!r} failed: {error}") from error
    except Exception as error:  # the user's module raised while importing
        raise ConfigError(
            f"{where}: importing {name!r} failed: {type(error).__name__}: {error}"
        ) from error


def import_object(path: str, where: str) -> Any:
    """``module:attr.attr`` imported with the current directory on ``sys.path`` (first, as
    ``python -m`` puts it)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{where}={path!r} is not an import path; write it as module:Name")
    target: Any = import_module(module_name, f"{where}={path!r}")
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            matches = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
            raise ConfigError(
                f"{where}={path!r}: {getattr(target, '__name__', module_name)!r} has no "
                f"attribute {part!r}{hint}"
            )
        target = getattr(target, part)
    return target


def _check_kind(kind: Kind, target: Any, where: str) -> None:
    """A class of the kind's base (envs: a gymnasium Env or a batched meta-env), or, where
    the kind allows it, a function that builds one."""
    bases = [kind.base]
    if kind.name == "envs":
        bases.append("envs.core:BatchedMetaEnv")
    if inspect.isclass(target):
        classes = []
        for base in bases:
            module, _, attribute = base.partition(":")
            classes.append(getattr(importlib.import_module(module), attribute))
        if issubclass(target, tuple(classes)):
            return
    elif kind.accepts_functions and callable(target):
        return
    wanted = " or ".join(base.replace(":", ".") for base in bases)
    if kind.accepts_functions:
        wanted += " (or a function returning one)"
    what = target.__name__ if inspect.isclass(target) else type(target).__name__
    article = "a class" if inspect.isclass(target) else "an object of type"
    raise ConfigError(f"{where} is {article} {what!r}, not a subclass of {wanted}")


def describe(obj: Any) -> tuple[str, str]:
    """``(parameters, first line of the docstring)`` of a component, for ``esmaml list``."""
    try:
        signature = inspect.signature(obj)
        parameters = ", ".join(
            str(p).split(":")[0].strip() if p.default is p.empty else f"{p.name}={p.default!r}"
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
    except (TypeError, ValueError):
        parameters = "?"
    doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]  # the first paragraph
    return parameters, " ".join(doc.split())


def list_components(kinds: list[str] | None = None) -> list[tuple[str, str, str, str, str]]:
    """``(kind, name, where from, parameters, doc)`` of every registered component; one that
    cannot be imported here (a missing extra) says why instead of its parameters."""
    rows = []
    for kind in kinds or list(KINDS):
        for name, target in sorted(entries(kind).items()):
            if isinstance(target, str):
                source = target
            elif isinstance(target, metadata.EntryPoint):
                dist = getattr(target, "dist", None)
                source = f"{target.value} (entry point of {dist.name if dist else '?'})"
            else:
                module = getattr(target, "__module__", "?")
                source = f"{module}:{getattr(target, '__qualname__', '?')} (registered)"
            try:
                obj = resolve(kind, name)
                parameters, doc = describe(obj)
            except ConfigError as error:
                parameters, doc = "", f"unavailable: {str(error).split(': ', 1)[-1]}"
            rows.append((kind, name, source, parameters, doc))
    return rows
