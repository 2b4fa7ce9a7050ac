"""``compile=True``: the tensor work of one estimate as a single ``torch.compile``'d function.

On a small model the eager estimate spends more time dispatching its few dozen small ops (the
perturbation, vmap's batching rules, the weights, the weighted sum) than computing; inductor
fuses them into a handful of kernels. The noise is still drawn eagerly by torch's generator, so
a seed names the same directions compiled or not; the values agree to rounding, not bitwise.

:func:`run_estimate_core` is the dispatch: the kernel (:func:`esmaml.zero_order.kernel.
estimate_core`) eagerly, or compiled, with the eager fallback and its one warning.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from esmaml.zero_order.evaluation import (
    PopulationEvaluator,
    batched_evaluation,
    first_line,
    user_stacklevel,
)
from esmaml.zero_order.kernel import estimate_core


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


class CompileState(Protocol):
    """What :func:`run_estimate_core` reads and updates on a decorated function."""

    name: str
    compile: bool
    evaluator: PopulationEvaluator
    _compiled_core: Callable[..., Any] | None
    _batched_evaluation: tuple[Callable[..., Tensor], ...]


def run_estimate_core(
    owner: CompileState,
    objective: Callable[[Sequence[Tensor]], Tensor],
    centers: Sequence[Tensor],
    noise: Sequence[Tensor] | None,
    flat: Tensor | None,
    value: Tensor | None,
    **options: Any,
) -> tuple[Tensor | None, Tensor, Tensor | None, list[Tensor] | None]:
    """:func:`estimate_core` for ``owner``, through torch.compile with ``owner.compile``. The
    first compiled call that fails (a graph break, no C++ compiler) is rerun eagerly: if that
    works the failure was the compiler's, and the function stays eager with one warning; if
    not, the eager error is the one raised."""
    mode = owner.evaluator.mode
    if not owner.compile or mode == "sequential":
        return estimate_core(objective, owner.evaluator, centers, noise, flat, value, **options)
    if owner._compiled_core is None:
        owner._compiled_core = compile_fresh(estimate_core)
    evaluate = owner._batched_evaluation[mode == "population"]
    failure: Exception | None = None
    try:
        result = owner._compiled_core(objective, evaluate, centers, noise, flat, value, **options)
    except Exception as error:  # the eager rerun below tells whose fault it was
        failure = error
    if failure is None:
        if mode == "auto":
            owner.evaluator.resolve("vmap")
        return result
    result = estimate_core(objective, owner.evaluator, centers, noise, flat, value, **options)
    if owner.evaluator.mode != "sequential":  # else the sequential warning has said it all
        warnings.warn(
            f"zero_order: {compile_failure(owner.name, failure)}; evaluating it without "
            "torch.compile from now on.",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    owner.compile, owner._compiled_core = False, None
    return result


def batched_evaluations(chunk_size: int | None) -> tuple[Callable[..., Tensor], ...]:
    """What the compiled core evaluates with, vmapped and in population mode. Made once per
    function, since dynamo guards on these objects."""
    return tuple(
        functools.partial(batched_evaluation, vmapped=vmapped, chunk_size=chunk_size)
        for vmapped in (True, False)
    )


def compile_failure(name: str, failure: Exception) -> str:
    """Why a compiled call failed, for the fallback warning."""
    from torch._dynamo.exc import FailOnRecompileLimitHit  # loaded by the failed compile anyway

    if isinstance(failure, FailOnRecompileLimitHit):
        return (
            f"{name} hit dynamo's recompile limit: its input shapes, dtypes or Python constants "
            "(arguments, closure variables) changed more often than compile=True pays for"
        )
    return f"{name} could not be compiled ({type(failure).__name__}: {first_line(failure)})"
