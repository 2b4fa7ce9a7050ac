"""Deterministic policies on flat parameter vectors, batched over a population.

``act(params [N, D], obs [N, E, obs_dim]) -> [N, E, act_dim]``: one batched matmul per layer
(each of the N parameter vectors drives its own E environments). The output is
``tanh`` scaled to the action box, as in ES-MAML's policies.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from esmaml.models import FunctionalMLP

PARAMETRIZATIONS: tuple[str, ...] = ("scaled", "reference")


class Policy(abc.ABC):
    """A deterministic policy on flat parameter vectors ``[N, D]``, batched over a population.

    :class:`esmaml.rl.family.RLFamily` builds it as ``cls(observation_dim, action_dim, hidden,
    activation, action_low, action_high, parametrization)`` from ``task.params`` (a policy may
    ignore what it does not use) and sets ``task.params.policy`` to its name or
    ``module:Name``. Required: ``num_params``, :meth:`init_params` and :meth:`bind`.
    """

    #: Length D of the flat parameter vector.
    num_params: int
    observation_dim: int
    action_dim: int

    @abc.abstractmethod
    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A fresh flat parameter vector ``[D]``."""

    @abc.abstractmethod
    def bind(self, params: Tensor) -> Callable[[Tensor], Tensor]:
        """``obs [N, E, obs_dim] -> action [N, E, act_dim]`` for fixed ``params [N, D]``."""

    def act(self, params: Tensor, obs: Tensor) -> Tensor:
        """One call of :meth:`bind`'s function."""
        return self.bind(params)(obs)

    @property
    def widest_layer(self) -> int:
        """The widest activation of the network (sizes the batched MuJoCo path's blocks).
        Default: the wider of the observation and the action."""
        return max(self.observation_dim, self.action_dim)

    def rebase_input(
        self, params: Tensor, old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]
    ) -> Tensor:
        """``params`` re-expressed for inputs normalised by ``new = (mean', inv_std')`` instead
        of ``old``, so the policy computes the same function of the raw observation
        (``normalize_observations: preserving`` needs it). Default: not available."""
        raise NotImplementedError(f"{type(self).__name__} does not define rebase_input")


class MLPPolicy(Policy):
    """A linear (``hidden=()``) or MLP policy with a tanh output.

    Parametrizations:

    - ``scaled``: ``a = scale * tanh(z) + offset`` maps onto the action box ``[low, high]``;
      default init for hidden layers and a zero output layer (the initial policy acts at the
      box's centre).
    - ``reference``: the google-research ES-MAML policy, ``a = tanh(z)``, which the env clips
      to its box (+-0.1 on the 2-D tasks, so the gain per unit of z is 10x the scaled one's),
      every weight ``~ N(0, 2 / in_0)`` (He-normal with the first layer's fan-in) and zero
      biases.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        action_low: float = -1.0,
        action_high: float = 1.0,
        parametrization: str = "scaled",
    ):
        if not action_low < action_high:
            raise ValueError(
                f"action bounds must satisfy low < high, got {action_low}, {action_high}"
            )
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization={parametrization!r} is unknown; valid: "
                f"{', '.join(PARAMETRIZATIONS)}"
            )
        self.parametrization = parametrization
        self.net = FunctionalMLP(
            [observation_dim, *hidden, action_dim], activation=activation, output_activation="tanh"
        )
        # The same network without its output tanh (see ``bind``).
        self._pre_activation = FunctionalMLP(
            [observation_dim, *hidden, action_dim], activation=activation
        )
        self._output_gain: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self.num_params = self.net.num_params
        self.observation_dim, self.action_dim = observation_dim, action_dim
        if parametrization == "reference":  # tanh in [-1, 1]; the env clips to its box
            self.scale, self.offset = 1.0, 0.0
        else:
            self.scale = (action_high - action_low) / 2.0
            self.offset = (action_high + action_low) / 2.0

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """``scaled``: default init for hidden layers and a zero output layer, so the initial
        policy is neutral (it acts at the centre of the action box). ``reference``: every
        weight ``N(0, 2 / observation_dim)``, biases zero."""
        if self.parametrization == "reference":
            params = torch.zeros(self.num_params)
            named = self.net.layout.unflatten(params)
            std = (2.0 / self.observation_dim) ** 0.5
            for name, value in named.items():
                if name.endswith("weight"):
                    value.copy_(torch.randn(value.shape, generator=generator) * std)
            return params
        params = self.net.init_params(generator)
        last = len(self.net.sizes) - 2
        named = self.net.layout.unflatten(params)
        named[f"{2 * last}.weight"].zero_()
        named[f"{2 * last}.bias"].zero_()
        return params

    @property
    def widest_layer(self) -> int:
        return max(self.net.sizes)

    def bind(self, params: Tensor) -> Callable[[Tensor], Tensor]:
        """``obs [N, E, obs_dim] -> action [N, E, act_dim]`` for fixed ``params [N, D]``.

        Without autograd the output is computed as ``scale * tanh(z) + offset =
        2 scale * sigmoid(2 z) + (offset - scale)`` (the factor 2 folded exactly into the output
        layer): torch's CPU ``tanh`` goes through a vector-math kernel that hands even a few
        hundred elements to the intra-op threads, which stalls on a loaded machine (measured:
        1.6 ms per call for 600 elements with 2 threads), and is ~3x slower than ``sigmoid`` on
        one thread. The two agree to a few ulps of the action scale. With autograd recording,
        the plain ``tanh`` form is used.
        """
        scale, offset = self.scale, self.offset
        exact: list[Callable[[Tensor], Tensor]] = []  # the tanh network, bound on first need
        gain = self._output_gain.get((params.dtype, params.device))
        if gain is None:
            gain = self._output_gain[(params.dtype, params.device)] = self._gain(params)
        doubled = self._pre_activation.bind(params * gain)  # obs -> 2 z
        # 0-dim tensors of the output's dtype: an in-place op with a Python scalar first
        # converts it to a tensor, a copy that costs as much as the op itself.
        constants: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

        def act(obs: Tensor) -> Tensor:
            if torch.is_grad_enabled() and (params.requires_grad or obs.requires_grad):
                if not exact:
                    exact.append(self.net.bind(params))
                out = exact[0](obs)
                return out if scale == 1.0 and offset == 0.0 else out * scale + offset
            out = doubled(obs)  # a fresh tensor: finish it in place
            key = (out.dtype, out.device)
            if key not in constants:
                constants[key] = (
                    torch.tensor(2.0 * scale, dtype=out.dtype, device=out.device),
                    torch.tensor(offset - scale, dtype=out.dtype, device=out.device),
                )
            slope, intercept = constants[key]
            return out.sigmoid_().mul_(slope).add_(intercept)

        return act

    def _gain(self, params: Tensor) -> Tensor:
        """``[D]``: 2 on the output layer's entries, 1 elsewhere (an exact doubling)."""
        last = len(self.net.sizes) - 2
        gain = torch.ones(self.num_params, dtype=params.dtype, device=params.device)
        named = self.net.layout.unflatten(gain)
        named[f"{2 * last}.weight"].fill_(2.0)
        named[f"{2 * last}.bias"].fill_(2.0)
        return gain

    def rebase_input(
        self, params: Tensor, old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]
    ) -> Tensor:
        """``params [*B, D]`` re-expressed for inputs normalised by ``new = (mean', inv_std')``
        instead of ``old = (mean, inv_std)``, computing the same function of the raw input:

            W' = W diag(inv_std / inv_std'),   b' = b + W diag(inv_std) (mean' - mean)

        (only the first layer sees the normalised input)."""
        (mean, inv), (mean_new, inv_new) = old, new
        out = params.clone()
        named = self.net.layout.unflatten(out)
        weight, bias = named["0.weight"], named["0.bias"]  # views into out
        inv, inv_new = inv.to(out), inv_new.to(out)
        shift = (mean_new - mean).to(out) * inv
        bias += (weight * shift).sum(-1)
        weight *= inv / inv_new
        return out
