"""The MuJoCo meta-tasks on MuJoCo Warp: states, actions and rewards as torch tensors on the GPU.

:class:`MujocoWarpMetaBatch` is the GPU twin of :class:`envs.mujoco_batch.MujocoMetaBatch`: the
same four meta-tasks, the same gymnasium v5 semantics (reset draws, ``frame_skip`` substeps,
``mj_rnePostConstraint`` after an Ant step, gymnasium's reward terms and the meta-task's task
reward, Ant termination), with the ``num_sims`` simulations as the worlds of one MuJoCo Warp
``Data``. Its state arrays are read and written through ``warp.to_torch`` views, so a rollout's
observations, actions and rewards stay on the device; only reset draws cross from the host
(gymnasium's per-seed numpy draws), once per episode.

Status: **unverified on a GPU.** It was written and tested here on MuJoCo Warp's CPU device
(``device='cpu'``, ``tests/test_mujoco_warp.py``, which runs only where ``mujoco_warp`` is
installed); no GPU was available. It is not bit-identical to gymnasium: MuJoCo Warp computes in
float32 (HalfCheetah observations differ from gymnasium's by ~3e-3 after 20 steps on the CPU
twin; Ant contacts diverge faster, as any two float precisions do on a chaotic system).

Requirements: ``pip install mujoco-warp`` (it pulls ``warp-lang``, about 400 MB, so it is not
part of ``scripts/setup.sh``). Everything here imports ``warp`` and ``mujoco_warp`` lazily: the
rest of esmaml never needs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .mujoco import MujocoMetaEnv
from .mujoco_batch import MetaTaskConstants, _env_class

__all__ = ["MujocoWarpMetaBatch", "warp_task_reward"]


def _import_warp() -> tuple[Any, Any]:
    try:
        import mujoco_warp
        import warp
    except ImportError as e:
        raise ImportError(
            "the MuJoCo Warp path needs the mujoco-warp package (pip install mujoco-warp); "
            f"it could not be imported: {e}"
        ) from e
    warp.config.quiet = True
    return warp, mujoco_warp


def warp_task_reward(name: str, task: Mapping[str, Tensor], info: Mapping[str, Tensor]) -> Tensor:
    """The meta-task rewards of :mod:`envs.mujoco` on torch tensors (same formulas and order).

    ``info`` holds gymnasium's terms: ``x_velocity``, ``reward_ctrl`` (HalfCheetah) or also
    ``y_velocity``, ``reward_contact``, ``reward_survive`` (Ant), and for
    HalfCheetahGoalVelocity ``ctrl_cost_goal`` (its own 0.05 ``||a||^2``).
    """
    if name == "HalfCheetahForwardBackward":
        return task["direction"] * info["x_velocity"] - (-info["reward_ctrl"])
    if name == "HalfCheetahGoalVelocity":
        return -(info["x_velocity"] - task["goal_velocity"]).abs() - info["ctrl_cost_goal"]
    if name == "AntForwardBackward":
        forward = task["direction"] * info["x_velocity"]
    elif name == "AntDirection":
        direction = task["direction"]
        forward = direction[..., 0] * info["x_velocity"] + direction[..., 1] * info["y_velocity"]
    else:
        raise ValueError(f"no Warp task reward for {name!r}")
    costs = -info["reward_ctrl"] + -info["reward_contact"]
    return (forward + info["reward_survive"]) - costs


class MujocoWarpMetaBatch(MetaTaskConstants):
    """``num_sims`` worlds of one MuJoCo meta-task on MuJoCo Warp, as torch tensors.

    Args:
        env: the meta-task's name or class (as :class:`envs.mujoco_batch.MujocoMetaBatch`).
        num_sims: number of worlds.
        device: ``'cuda'``/``'cuda:N'`` (the purpose) or ``'cpu'`` (MuJoCo Warp's CPU device,
            for development and tests).
        nconmax, njmax: MuJoCo Warp's contact and constraint capacities per world (its
            defaults when None).
        cuda_graph: on CUDA, capture a control step's substeps as one CUDA graph.
        **env_kwargs: the meta-task's constructor arguments.

    All worlds step together: a finished episode keeps being simulated and the caller masks
    it (:func:`esmaml.rl.rollout_mujoco.rollout_mujoco_warp`).
    """

    def __init__(
        self,
        env: str | type[MujocoMetaEnv],
        num_sims: int,
        *,
        device: str | torch.device = "cuda",
        nconmax: int | None = None,
        njmax: int | None = None,
        cuda_graph: bool = True,
        **env_kwargs: Any,
    ) -> None:
        wp, mjw = _import_warp()
        self._wp, self._mjw = wp, mjw
        cls = _env_class(env)
        if isinstance(num_sims, bool) or not isinstance(num_sims, int) or num_sims < 1:
            raise ValueError(f"num_sims must be a positive int, got {num_sims!r}")
        self.device = torch.device(device)
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
        self._read_task(cls, env_kwargs)
        self.num_sims = num_sims
        index = 0 if self.device.index is None else self.device.index
        self.wp_device = "cpu" if self.device.type == "cpu" else f"cuda:{index}"
        with wp.ScopedDevice(self.wp_device):
            self.m = mjw.put_model(self.model)
            self.d = mjw.make_data(self.model, nworld=num_sims, nconmax=nconmax, njmax=njmax)
        # zero-copy torch views of the worlds' state (float32)
        self.qpos = wp.to_torch(self.d.qpos)
        self.qvel = wp.to_torch(self.d.qvel)
        self.ctrl = wp.to_torch(self.d.ctrl)
        self.xpos = wp.to_torch(self.d.xpos)
        self.cfrc_ext = wp.to_torch(self.d.cfrc_ext) if self.is_ant else None
        self.dtype = self.qpos.dtype
        self._cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self._graph: Any = None
        self._tasks: dict[str, Tensor] | None = None

    def __repr__(self) -> str:
        return f"MujocoWarpMetaBatch({self.name}, num_sims={self.num_sims}, device={self.device})"

    @contextlib.contextmanager
    def _on_torch_stream(self) -> Iterator[Any]:
        """Warp launches on torch's current CUDA stream, so the two order their work."""
        wp = self._wp
        if self.device.type != "cuda":
            yield None
            return
        stream = wp.stream_from_torch(torch.cuda.current_stream(self.device))
        with wp.ScopedDevice(self.wp_device), wp.ScopedStream(stream):
            yield stream

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task per world, checked as the meta-env's ``set_task`` checks them."""
        if len(tasks) != self.num_sims:
            raise ValueError(
                f"tasks must be a list of {self.num_sims} task dicts (one per world), "
                f"got {len(tasks)}"
            )
        values = self.validated_tasks(tasks)
        self._tasks = {
            k: torch.as_tensor(v, dtype=self.dtype, device=self.device) for k, v in values.items()
        }

    def reset(self, seeds: Sequence[int]) -> Tensor:
        """Every world as gymnasium's ``reset(seed=seeds[i])`` (draws on the host, as
        gymnasium's); returns the observations ``[num_sims, observation_dim]``."""
        if len(seeds) != self.num_sims:
            raise ValueError(
                f"seeds must hold one seed per world ({self.num_sims}), got {len(seeds)}"
            )
        qpos, qvel = self.reset_states(seeds)
        with self._on_torch_stream():
            self._mjw.reset_data(self.m, self.d)
            self.qpos.copy_(torch.as_tensor(qpos, dtype=self.dtype))
            self.qvel.copy_(torch.as_tensor(qvel, dtype=self.dtype))
            self._mjw.forward(self.m, self.d)
        if self.cfrc_ext is not None:
            self.cfrc_ext.zero_()  # as after mj_resetData: mj_forward does not compute them
        return self.observe()

    def observe(self) -> Tensor:
        parts = [self.qpos[:, self._skip :], self.qvel]
        if self.is_ant and self.include_cfrc_ext:
            low, high = self.contact_force_range
            parts.append(self.cfrc_ext[:, 1:].clamp(low, high).flatten(1))
        return torch.cat(parts, dim=1)

    def _physics(self) -> None:
        for _ in range(self.frame_skip):
            self._mjw.step(self.m, self.d)
        if self.is_ant:
            self._mjw.rne_postconstraint(self.m, self.d)  # gymnasium's post-step call

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One control step of every world: ``(observations, rewards, terminated)``."""
        if self._tasks is None:
            raise RuntimeError("call set_tasks() before stepping")
        if tuple(actions.shape) != (self.num_sims, self.action_dim):
            raise ValueError(
                f"actions must have shape ({self.num_sims}, {self.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        if self.is_ant:
            before = self.xpos[:, self.main_body, :2].clone()
        else:
            before = self.qpos[:, 0].clone()
        self.ctrl.copy_(actions)
        with self._on_torch_stream() as stream:
            if not self._cuda_graph:
                self._physics()
            else:
                if self._graph is None:
                    with self._wp.ScopedCapture(device=self.wp_device, stream=stream) as capture:
                        self._physics()
                    self._graph = capture.graph
                self._wp.capture_launch(self._graph, stream=stream)
        info: dict[str, Tensor] = {}
        squares = actions.square().sum(-1)
        info["reward_ctrl"] = -(self.ctrl_cost_weight * squares)
        if self.name == "HalfCheetahGoalVelocity":
            ctrl_weight = getattr(self.meta_env, "ctrl_cost_weight", self.ctrl_cost_weight)
            info["ctrl_cost_goal"] = ctrl_weight * squares
        if self.is_ant:
            velocity = (self.xpos[:, self.main_body, :2] - before) / self.dt
            info["x_velocity"], info["y_velocity"] = velocity[:, 0], velocity[:, 1]
            low, high = self.contact_force_range
            forces = self.cfrc_ext.clamp(low, high).square().sum((1, 2))
            info["reward_contact"] = -(self.contact_cost_weight * forces)
            z_min, z_max = self.healthy_z_range
            z = self.qpos[:, 2]
            healthy = (
                torch.isfinite(self.qpos).all(1)
                & torch.isfinite(self.qvel).all(1)
                & (z >= z_min)
                & (z <= z_max)
            )
            info["reward_survive"] = healthy.to(self.dtype) * self.healthy_reward
            terminated = ~healthy if self.terminate_when_unhealthy else torch.zeros_like(healthy)
        else:
            info["x_velocity"] = (self.qpos[:, 0] - before) / self.dt
            terminated = torch.zeros(self.num_sims, dtype=torch.bool, device=self.device)
        reward = warp_task_reward(self.name, self._tasks, info)
        return self.observe(), reward, terminated
