"""Name -> class catalogue of the batched environments and their gymnasium registration.

Every torch-native environment ``Name`` is registered as ``esmaml/Name-v0`` with

* ``entry_point`` :func:`envs.gym_wrappers.make_single_env` (one :class:`SingleMetaEnv`), so
  ``vectorization_mode='sync'`` builds gymnasium's ``SyncVectorEnv`` of single envs, and
* ``vector_entry_point`` :class:`envs.gym_wrappers.BatchedMetaVectorEnv` (one batched env for all
  sub-envs), used by ``vectorization_mode='vector_entry_point'`` (the default of ``make_vec``).

``spec.max_episode_steps`` is the environment's default horizon: ``gymnasium.make`` adds its
``TimeLimit`` from it and ``make_vec(..., 'vector_entry_point')`` passes it to the vector env, so
``max_episode_steps=N`` given to either call changes the horizon consistently.

The MuJoCo meta-tasks (``envs.mujoco``) are registered with an ``entry_point`` only; their module
(and so MuJoCo) is imported only when such an environment is made.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from .classic import MetaCartPole, MetaPendulum
from .core import BatchedMetaEnv
from .navigation import FourCorners, Navigation2D, SixCircles
from .point_mass import PointMassGoalVelocity

__all__ = [
    "BATCHED_ENVS",
    "ENV_IDS",
    "MUJOCO_ENV_IDS",
    "NAMESPACE",
    "make_batched_env",
    "register_envs",
]

NAMESPACE = "esmaml"

BATCHED_ENVS: dict[str, type[BatchedMetaEnv]] = {
    cls.__name__: cls
    for cls in (
        Navigation2D,
        FourCorners,
        SixCircles,
        PointMassGoalVelocity,
        MetaPendulum,
        MetaCartPole,
    )
}

# MuJoCo meta-task class name -> horizon (200, the ES-MAML locomotion horizon).
_MUJOCO_ENVS: dict[str, int] = {
    "HalfCheetahForwardBackward": 200,
    "HalfCheetahGoalVelocity": 200,
    "AntForwardBackward": 200,
    "AntDirection": 200,
}

ENV_IDS: tuple[str, ...] = tuple(f"{NAMESPACE}/{name}-v0" for name in BATCHED_ENVS)
MUJOCO_ENV_IDS: tuple[str, ...] = tuple(f"{NAMESPACE}/{name}-v0" for name in _MUJOCO_ENVS)


def make_batched_env(env: str | BatchedMetaEnv, **kwargs: Any) -> BatchedMetaEnv:
    """Return ``env`` itself if it is an instance, else construct the class named ``env``.

    ``env`` may be a class name (``'Navigation2D'``) or a registered id
    (``'esmaml/Navigation2D-v0'``); ``kwargs`` go to the constructor.
    """
    if isinstance(env, BatchedMetaEnv):
        if kwargs:
            raise ValueError(
                f"constructor kwargs {sorted(kwargs)} were given with an already built {env.name}"
            )
        return env
    if not isinstance(env, str):
        raise TypeError(f"env must be an env name or a BatchedMetaEnv, got {type(env).__name__}")
    name = env
    if name.startswith(f"{NAMESPACE}/"):
        name = name[len(NAMESPACE) + 1 :].rsplit("-v", 1)[0]
    cls = BATCHED_ENVS.get(name)
    if cls is None:
        raise ValueError(f"unknown batched env {env!r}; valid names: {sorted(BATCHED_ENVS)}")
    return cls(**kwargs)


def register_envs() -> None:
    """Register every environment with gymnasium; calling it again does nothing."""
    for name, cls in BATCHED_ENVS.items():
        env_id = f"{NAMESPACE}/{name}-v0"
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point="envs.gym_wrappers:make_single_env",
            vector_entry_point="envs.gym_wrappers:BatchedMetaVectorEnv",
            max_episode_steps=cls.max_episode_steps,
            kwargs={"env": name},
        )
    for name, horizon in _MUJOCO_ENVS.items():
        env_id = f"{NAMESPACE}/{name}-v0"
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point=f"envs.mujoco:{name}", max_episode_steps=horizon)
