"""Batched functional models on flat parameter vectors.

``FunctionalMLP.apply(params [*B, D], x [*B, n, in]) -> [*B, n, out]`` runs a whole population
of MLPs in a few batched matmuls. Activations include non-differentiable ones (``step``,
``sign``) and weights may be quantised, the cases where only zero-order methods work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from esmaml.params import FlatParams

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
    # Non-differentiable: zero gradient almost everywhere.
    "step": lambda x: (x > 0).to(x.dtype),
    "sign": torch.sign,
}


def check_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FunctionalMLP:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` whose weights come from a flat vector.

    Args:
        sizes: layer widths, input first.
        activation: hidden activation (see ``ACTIVATIONS``).
        output_activation: applied to the output (``identity`` for regression).
        quantize: if > 0, weights are rounded to multiples of ``quantize`` in the forward pass
            (a piecewise-constant, non-differentiable model).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        output_activation: str = "identity",
        quantize: float = 0.0,
    ):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive widths, got {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.activation_name, self.output_activation_name = activation, output_activation
        self.activation = check_activation(activation)
        self.output_activation = check_activation(output_activation)
        if quantize < 0:
            raise ValueError(f"quantize must be >= 0, got {quantize}")
        self.quantize = float(quantize)
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            shapes[f"{2 * i}.weight"] = (fan_out, fan_in)
            shapes[f"{2 * i}.bias"] = (fan_out,)
        self.layout = FlatParams(shapes)
        self.num_params = self.layout.num_params

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """PyTorch's nn.Linear default init (uniform +-1/sqrt(fan_in)), flattened."""
        pieces = []
        for name, shape in zip(self.layout.names, self.layout.shapes):
            fan_in = self.sizes[int(name.split(".")[0]) // 2]
            bound = fan_in**-0.5
            pieces.append((torch.rand(shape, generator=generator) * 2 - 1).mul(bound).flatten())
        return torch.cat(pieces)

    def apply(self, params: Tensor, x: Tensor) -> Tensor:
        """``params [*B, D]``, ``x [*B, n, in]`` (broadcastable batch dims) -> ``[*B, n, out]``."""
        return self.bind(params)(x)

    def bind(self, params: Tensor) -> Callable[[Tensor], Tensor]:
        """The model with ``params [*B, D]`` fixed: splits the flat vector once, so a rollout
        that applies it every step pays for the layout only once."""
        named = self.layout.unflatten(params)
        layers: list[tuple[bool, Tensor, Tensor]] = []
        for i in range(len(self.sizes) - 1):
            weight, bias = named[f"{2 * i}.weight"], named[f"{2 * i}.bias"]
            if self.quantize > 0:
                weight = torch.round(weight / self.quantize) * self.quantize
                bias = torch.round(bias / self.quantize) * self.quantize
            # Narrow inputs (e.g. a 2-D observation) are faster as a broadcast multiply-sum
            # than as thousands of tiny batched matmuls.
            narrow = weight.shape[-1] <= 4
            prepared = weight.unsqueeze(-3) if narrow else weight.transpose(-1, -2)
            layers.append((narrow, prepared, bias.unsqueeze(-2)))
        last = len(layers) - 1

        def forward(x: Tensor) -> Tensor:
            h = x
            for i, (narrow, weight, bias) in enumerate(layers):
                h = ((h.unsqueeze(-2) * weight).sum(-1) if narrow else h @ weight) + bias
                h = self.output_activation(h) if i == last else self.activation(h)
            return h

        return forward

    def to_module(self, params: Tensor | None = None) -> nn.Sequential:
        """An ``nn.Sequential`` with the same architecture (and ``params`` if given).

        Only valid without quantisation and with torch-module activations.
        """
        if self.quantize > 0:
            raise ValueError("to_module cannot express quantised weights (quantize > 0)")
        modules: dict[str, type[nn.Module]] = {
            "relu": nn.ReLU,
            "tanh": nn.Tanh,
            "identity": nn.Identity,
        }
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(self.sizes) - 2:
                if self.activation_name not in modules:
                    raise ValueError(f"activation {self.activation_name!r} has no nn.Module twin")
                layers.append(modules[self.activation_name]())
        if self.output_activation_name != "identity":
            if self.output_activation_name not in modules:
                raise ValueError(
                    f"output activation {self.output_activation_name!r} has no nn.Module twin"
                )
            layers.append(modules[self.output_activation_name]())
        module = nn.Sequential(*layers)
        if params is not None:
            torch.nn.utils.vector_to_parameters(params.detach().clone(), module.parameters())
        return module
