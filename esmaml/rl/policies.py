"""Deterministic policies on flat parameter vectors, batched over a population.

``act(params [N, D], obs [N, E, obs_dim]) -> [N, E, act_dim]``: one batched matmul per layer
(each of the N parameter vectors drives its own E environments). The output is
``tanh`` scaled to the action box, as in ES-MAML's policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from esmaml.models import FunctionalMLP


class MLPPolicy:
    """A linear (``hidden=()``) or MLP policy with tanh output scaled to ``[low, high]``."""

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        action_low: float = -1.0,
        action_high: float = 1.0,
    ):
        if not action_low < action_high:
            raise ValueError(
                f"action bounds must satisfy low < high, got {action_low}, {action_high}"
            )
        self.net = FunctionalMLP(
            [observation_dim, *hidden, action_dim], activation=activation, output_activation="tanh"
        )
        self.num_params = self.net.num_params
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.scale = (action_high - action_low) / 2.0
        self.offset = (action_high + action_low) / 2.0

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """Default init for hidden layers; a zero output layer so the initial policy is
        neutral (it acts at the centre of the action box)."""
        params = self.net.init_params(generator)
        last = len(self.net.sizes) - 2
        named = self.net.layout.unflatten(params)
        named[f"{2 * last}.weight"].zero_()
        named[f"{2 * last}.bias"].zero_()
        return params

    def act(self, params: Tensor, obs: Tensor) -> Tensor:
        return self.bind(params)(obs)

    def bind(self, params: Tensor) -> Callable[[Tensor], Tensor]:
        """``obs [N, E, obs_dim] -> action [N, E, act_dim]`` for fixed ``params [N, D]``."""
        net, scale, offset = self.net.bind(params), self.scale, self.offset
        if scale == 1.0 and offset == 0.0:
            return net
        return lambda obs: net(obs) * scale + offset
