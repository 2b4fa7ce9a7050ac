"""Classic-control systems whose physics vary per task: Pendulum and continuous CartPole.

The dynamics and rewards are gymnasium's (``Pendulum-v1``, ``CartPole-v1``) written over batch
dims, with the masses and lengths taken from the task tensors instead of constants.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import BatchedMetaEnv, State, Task

__all__ = ["MetaCartPole", "MetaPendulum"]


def _uniform(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    return torch.rand((n,), generator=generator, device=device, dtype=dtype) * (high - low) + low


def _check_range(name: str, rng: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(rng[0]), float(rng[1])
    if not 0.0 < lo <= hi:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {rng}")
    return lo, hi


class MetaPendulum(BatchedMetaEnv):
    """Gymnasium ``Pendulum-v1`` with per-task mass and length.

    * task: ``mass`` ``[*B]`` ~ U[mass_range] (default U[0.5, 1.5]) and ``length`` ``[*B]`` ~
      U[length_range] (default U[0.5, 1.5]); gymnasium's pendulum is mass 1, length 1;
    * state: ``th``, ``thdot`` ``[*B]``; reset ``th ~ U[-pi, pi]``, ``thdot ~ U[-1, 1]``;
      observation ``(cos th, sin th, thdot)``;
    * with ``u = clip(action, -2, 2)``, ``g = 10``, ``dt = 0.05``::

          r      = -(normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)       (pre-step state)
          thdot' = clip(thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, -8, 8)
          th'    = th + thdot' dt

    * never terminates; horizon 200.
    """

    observation_dim = 3
    action_dim = 1
    action_low = -2.0
    action_high = 2.0
    max_episode_steps = 200
    task_keys = ("mass", "length")
    task_shapes = {"mass": (), "length": ()}  # noqa: RUF012
    state_shapes = {"th": (), "thdot": ()}  # noqa: RUF012
    max_speed = 8.0
    dt = 0.05
    observation_low = (-1.0, -1.0, -8.0)
    observation_high = (1.0, 1.0, 8.0)

    def __init__(
        self,
        mass_range: tuple[float, float] = (0.5, 1.5),
        length_range: tuple[float, float] = (0.5, 1.5),
        g: float = 10.0,
        *,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        self.mass_range = _check_range("mass_range", mass_range)
        self.length_range = _check_range("length_range", length_range)
        self.g = float(g)

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        return {
            "mass": _uniform(n, *self.mass_range, generator, device, dtype),
            "length": _uniform(n, *self.length_range, generator, device, dtype),
        }

    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        ref = task["mass"]
        u = torch.rand((*batch_shape, 2), generator=generator, device=ref.device, dtype=ref.dtype)
        return {"th": (2 * u[..., 0] - 1) * math.pi, "thdot": 2 * u[..., 1] - 1}

    def _observe(self, state: State, task: Task) -> Tensor:
        th = state["th"]
        return torch.stack([th.cos(), th.sin(), state["thdot"]], -1)

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        th, thdot = state["th"], state["thdot"]
        m, l = task["mass"], task["length"]
        u = action[..., 0].clamp(self.action_low, self.action_high)
        th_norm = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        reward = -(th_norm.square() + 0.1 * thdot.square() + 0.001 * u.square())
        acc = 3 * self.g / (2 * l) * th.sin() + 3.0 / (m * l.square()) * u
        new_thdot = (thdot + acc * self.dt).clamp(-self.max_speed, self.max_speed)
        new_th = th + new_thdot * self.dt
        return (
            {"th": new_th, "thdot": new_thdot},
            reward,
            torch.zeros_like(reward, dtype=torch.bool),
        )


class MetaCartPole(BatchedMetaEnv):
    """Gymnasium ``CartPole-v1`` with a continuous force and per-task pole length and mass.

    * task: ``pole_length`` ``[*B]`` (gymnasium's ``length``: *half* the pole length) ~
      U[pole_length_range] (default U[0.25, 1.0]; gymnasium 0.5) and ``pole_mass`` ``[*B]`` ~
      U[pole_mass_range] (default U[0.05, 0.5]; gymnasium 0.1); cart mass 1, gravity 9.8;
    * state: ``x, x_dot, theta, theta_dot`` ``[*B]``, each ~ U[-0.05, 0.05] at reset;
      observation = those four values;
    * action ``a in [-1, 1]`` gives force ``F = 10 a`` (gymnasium's discrete actions are
      ``a = +-1``); Euler step with ``tau = 0.02``::

          temp   = (F + m_p l theta_dot^2 sin theta) / (m_c + m_p)
          th_acc = (g sin theta - cos theta temp) / (l (4/3 - m_p cos^2 theta / (m_c + m_p)))
          x_acc  = temp - m_p l th_acc cos theta / (m_c + m_p)
          x' = x + tau x_dot;  x_dot' = x_dot + tau x_acc
          theta' = theta + tau theta_dot;  theta_dot' = theta_dot + tau th_acc

    * reward +1 every step (gymnasium also pays the terminating step); terminated when
      ``|x'| > 2.4`` or ``|theta'| > 12 degrees``. Steps after termination are undefined (as
      in gymnasium): batched rollouts must mask rewards once ``terminated`` was returned.
    * horizon 500 (CartPole-v1).
    """

    observation_dim = 4
    action_dim = 1
    action_low = -1.0
    action_high = 1.0
    max_episode_steps = 500
    task_keys = ("pole_length", "pole_mass")
    task_shapes = {"pole_length": (), "pole_mass": ()}  # noqa: RUF012
    state_shapes = {"x": (), "x_dot": (), "theta": (), "theta_dot": ()}  # noqa: RUF012
    gravity = 9.8
    cart_mass = 1.0
    force_mag = 10.0
    tau = 0.02
    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360
    observation_low = (-4.8, -math.inf, -24 * 2 * math.pi / 360, -math.inf)
    observation_high = (4.8, math.inf, 24 * 2 * math.pi / 360, math.inf)

    def __init__(
        self,
        pole_length_range: tuple[float, float] = (0.25, 1.0),
        pole_mass_range: tuple[float, float] = (0.05, 0.5),
        *,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        self.pole_length_range = _check_range("pole_length_range", pole_length_range)
        self.pole_mass_range = _check_range("pole_mass_range", pole_mass_range)

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        return {
            "pole_length": _uniform(n, *self.pole_length_range, generator, device, dtype),
            "pole_mass": _uniform(n, *self.pole_mass_range, generator, device, dtype),
        }

    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        ref = task["pole_length"]
        u = torch.rand((*batch_shape, 4), generator=generator, device=ref.device, dtype=ref.dtype)
        s = (u * 2 - 1) * 0.05
        return {"x": s[..., 0], "x_dot": s[..., 1], "theta": s[..., 2], "theta_dot": s[..., 3]}

    def _observe(self, state: State, task: Task) -> Tensor:
        return torch.stack([state["x"], state["x_dot"], state["theta"], state["theta_dot"]], -1)

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        x, x_dot, theta, theta_dot = state["x"], state["x_dot"], state["theta"], state["theta_dot"]
        length, m_pole = task["pole_length"], task["pole_mass"]
        force = self.force_mag * action[..., 0].clamp(self.action_low, self.action_high)
        total_mass = m_pole + self.cart_mass
        polemass_length = m_pole * length
        cos, sin = theta.cos(), theta.sin()
        temp = (force + polemass_length * theta_dot.square() * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            length * (4.0 / 3.0 - m_pole * cos.square() / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        new = {
            "x": x + self.tau * x_dot,
            "x_dot": x_dot + self.tau * x_acc,
            "theta": theta + self.tau * theta_dot,
            "theta_dot": theta_dot + self.tau * theta_acc,
        }
        terminated = (new["x"].abs() > self.x_threshold) | (
            new["theta"].abs() > self.theta_threshold
        )
        return new, torch.ones_like(x_acc), terminated
