"""Batched functional models on flat parameter vectors.

``FunctionalMLP.apply(params [*B, D], x [*B, n, in]) -> [*B, n, out]`` runs a whole population
of MLPs in a few batched matmuls. Activations include non-differentiable ones (``step``,
``sign``) and weights may be quantised, the cases where only zero-order methods work.
"""

from __future__ import annotations

import functools
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


def check_hidden(hidden: object, name: str = "hidden") -> tuple[int, ...]:
    """Hidden widths: a list (or tuple) of positive ints, possibly empty (a linear model)."""
    valid = isinstance(hidden, (list, tuple)) and all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden
    )
    if not valid:
        raise ValueError(
            f"{name}={hidden!r} is invalid; it must be a list of positive ints (the hidden layer "
            "widths), e.g. [40, 40], or [] for none"
        )
    return tuple(hidden)  # type: ignore[arg-type]


def check_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# In-place twins of the activations: a layer's pre-activation is a fresh tensor that nothing
# else holds, and their backward formulas use the output, so autograd stays exact.
_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "identity": lambda x: x,
}


@functools.lru_cache(maxsize=64)
def _shifted_index_lists(fan_out: int, fan_in: int, shift: int) -> tuple[list[int], list[int]]:
    """``(j, (j + shift) mod fan_in)`` for ``j < fan_out``, as plain lists: a cached tensor made
    inside a torch.func transform would leak that transform's level into later calls."""
    outputs = list(range(fan_out))
    return outputs, [(j + shift) % fan_in for j in outputs]


def _shifted_indices(
    fan_out: int, fan_in: int, shift: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Index tensors ``(j, (j + shift) mod fan_in)`` for ``j < fan_out`` (made per bind)."""
    outputs, inputs = _shifted_index_lists(fan_out, fan_in, shift)
    return torch.tensor(outputs, device=device), torch.tensor(inputs, device=device)


def _bind_layer(weight: Tensor, bias: Tensor, activation: str) -> Callable[[Tensor], Tensor]:
    """``x [*B, n, in] -> act(x W^T + b) [*B, n, out]`` for ``weight [*B, out, in]``.

    Wide inputs use a batched matmul. Narrow inputs (e.g. a 2-D observation) use ``in``
    elementwise multiply-adds over whole ``[..., n, out]`` tensors: term ``s`` pairs output ``j``
    with input ``(j + s) mod in`` (a gathered copy of the input), so no kernel broadcasts or
    reduces along a tiny inner dimension (those run element by element: a 2x2 layer on 6000
    policies took ~0.8 ms per call as multiply-then-sum, ~0.1 ms this way).
    """
    act = _INPLACE.get(activation) or ACTIVATIONS[activation]
    fan_out, fan_in = weight.shape[-2], weight.shape[-1]
    bias = bias.unsqueeze(-2).contiguous()  # [*B, 1, out]
    if fan_in > 4:
        weight_t = weight.transpose(-1, -2)

        def wide(x: Tensor) -> Tensor:
            return act(x @ weight_t + bias)

        return wide

    terms: list[tuple[Tensor | None, Tensor]] = []
    for shift in range(fan_in):
        outputs, inputs = _shifted_indices(fan_out, fan_in, shift, weight.device)
        # fan_in == 1 broadcasts the single input column; shift 0 of a square layer is x itself.
        identity = fan_in == 1 or (shift == 0 and fan_in == fan_out)
        terms.append((None if identity else inputs, weight[..., outputs, inputs].unsqueeze(-2)))
    coefficients = [w for _, w in terms]
    # Weights broadcast over the n rows of x along a tiny inner dim are slow in every step of a
    # rollout; copies expanded to x's shape (made once per input shape) are not.
    prepared: dict[torch.Size, tuple[Tensor, list[Tensor]]] = {}

    def prepare(x_shape: torch.Size) -> tuple[Tensor, list[Tensor]]:
        shape = (*x_shape[:-1], fan_out)
        if fan_out >= 8 or shape == bias.shape:
            return bias, coefficients
        shape = torch.broadcast_shapes(shape, bias.shape)
        return bias.expand(shape).contiguous(), [w.expand(shape).contiguous() for w in coefficients]

    def narrow(x: Tensor) -> Tensor:
        operands = prepared.get(x.shape)
        if operands is None:
            if len(prepared) >= 4:
                prepared.clear()
            operands = prepared[x.shape] = prepare(x.shape)
        offset, weights = operands
        out = offset
        for (index, _), w in zip(terms, weights):
            xs = x if index is None else x.index_select(-1, index)
            out = torch.addcmul(out, xs, w)
        return act(out)

    return narrow


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
        layers: list[Callable[[Tensor], Tensor]] = []
        last = len(self.sizes) - 2
        for i in range(len(self.sizes) - 1):
            weight, bias = named[f"{2 * i}.weight"], named[f"{2 * i}.bias"]
            if self.quantize > 0:
                weight = torch.round(weight / self.quantize) * self.quantize
                bias = torch.round(bias / self.quantize) * self.quantize
            activation = self.output_activation_name if i == last else self.activation_name
            layers.append(_bind_layer(weight, bias, activation))

        def forward(x: Tensor) -> Tensor:
            h = x
            for layer in layers:
                h = layer(h)
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
