"""``compile=True``: the tensor work of one estimate as a single ``torch.compile``'d function.

On a small model the eager estimate spends more time dispatching its few dozen small ops (the
perturbation, vmap's batching rules, the weights, the weighted sum) than computing; inductor
fuses them into a handful of kernels. The noise is still drawn eagerly by torch's generator, so
a seed names the same directions compiled or not; the values agree to rounding, not bitwise.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch


def compile_fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True, dynamic=False)`` on a private copy of ``fn``'s code
    object. Dynamo keeps its compiled graphs, and its recompile limit, per code object: with a
    copy, each decorated function has its own cache instead of evicting the others'.

    ``fullgraph=True`` makes a graph break an error (which the caller turns into an eager
    fallback with a warning) rather than a silent, slower partial compile.
    """
    copy = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    return torch.compile(copy, fullgraph=True, dynamic=False)
