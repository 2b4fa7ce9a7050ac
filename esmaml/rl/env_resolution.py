"""Which environment ``task.params.env`` names: a torch-native batched env class or a
gymnasium id, and the task interface a gymnasium env offers to be a meta-RL task distribution."""

from __future__ import annotations

import inspect
import re
from typing import Any, Protocol, runtime_checkable

from esmaml.registry import import_module, resolve


@runtime_checkable
class GymMetaEnv(Protocol):
    """The task interface a gymnasium env offers to be a meta-RL task distribution (as the
    MuJoCo meta-tasks of :mod:`envs.mujoco` do). Without it, the env is one task.

    ``sample_tasks`` may also take a keyword ``split`` (``"train"`` or ``"test"``): then
    :meth:`RLFamily.sample_tasks` passes it, so held-out tasks can come from a set of their own
    (Meta-World ML1's test goals, :class:`envs.metaworld.ML1`).
    """

    task: Any  # set to one of sample_tasks' dicts before reset

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` tasks, each a dict of numbers or arrays."""
        ...


def _takes_split(sample_tasks: Any) -> bool:
    """Whether an env's ``sample_tasks`` takes the ``split`` keyword."""
    try:
        parameters = inspect.signature(sample_tasks).parameters
    except (TypeError, ValueError):
        return False
    return "split" in parameters


def resolve_env(env: str) -> type | str:
    """``task.params.env``: a batched env's class, or the gymnasium id to make.

    ``env`` is a registered env name (``Navigation2D``, an entry point, ...), an import path
    ``module:Name`` of a :class:`envs.BatchedMetaEnv` or ``gymnasium.Env`` class, or a
    gymnasium id (``esmaml/Name-v0``, ``CartPole-v1``, or ``module:Some-v0``, which imports
    ``module`` first so it can register the id, as ``gymnasium.make`` does).
    """
    import gymnasium

    import envs  # noqa: F401 - registers the esmaml/... ids
    from envs.core import BatchedMetaEnv

    if not isinstance(env, str):
        raise TypeError(f"env must be a string, got {type(env).__name__}")
    module, _, rest = env.rpartition(":")
    if "/" in rest or re.search(r"-v\d+$", rest):  # a gymnasium id
        if module:
            import_module(module, f"task.params.env={env!r}")
        if rest.startswith("esmaml/"):  # esmaml's own: by name (torch-native ones batched)
            env = rest.split("/", 1)[1].rsplit("-v", 1)[0]
        elif rest in gymnasium.registry:
            return rest
        else:
            raise ValueError(
                f"env={env!r} is not a registered gymnasium id; write module:{rest} to import "
                "the module that registers it, or give a registered name or module:Class"
            )
    target = resolve("envs", env, "task.params.env")
    if issubclass(target, BatchedMetaEnv):
        return target
    entry_point = f"{target.__module__}:{target.__qualname__}"
    for env_id, spec in gymnasium.registry.items():
        if spec.entry_point == entry_point:
            return env_id
    env_id = f"esmaml-user/{target.__module__}.{target.__qualname__}-v0"
    gymnasium.register(id=env_id, entry_point=target)
    return env_id
