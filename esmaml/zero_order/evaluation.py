"""Evaluate one objective on a population of perturbed parameters: vmapped, sequential, or by a
function that takes the population dimension itself. :class:`PopulationEvaluator` picks the mode
(and falls back to sequential); :func:`batched_evaluation` is the fallback-free form that
``compile=True`` traces."""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

BatchMode = Literal["auto", "vmap", "sequential", "population"]

# Frames in these folders are esmaml's or torch's; a warning points at the first frame outside.
_INTERNAL_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(torch.__file__) + os.sep,
)
BATCH_MODES: tuple[str, ...] = ("auto", "vmap", "sequential", "population")

# With chunk_size=None on CPU, a population whose perturbed parameters exceed this many bytes is
# vmapped in chunks of about this size (at least AUTO_CHUNK_MIN members): the intermediates of
# one huge vmapped call are fresh multi-megabyte allocations whose page faults and cache misses
# cost more than the extra calls (about 2x on a 32-256-1 MLP with 1000 members, 2 cores).
AUTO_CHUNK_BYTES = 8 * 2**20
AUTO_CHUNK_MIN = 64


def auto_chunk_size(population: Sequence[Tensor]) -> int | None:
    """The vmap chunk size used when none is given: None (one call) for small populations and
    on accelerators, else chunks of about ``AUTO_CHUNK_BYTES`` of perturbed parameters."""
    size = population[0].shape[0]
    if population[0].device.type != "cpu":
        return None
    total = sum(member.numel() * member.element_size() for member in population)
    if total <= AUTO_CHUNK_BYTES:
        return None
    chunk = max(AUTO_CHUNK_MIN, math.ceil(size / math.ceil(total / AUTO_CHUNK_BYTES)))
    return chunk if chunk < size else None


def check_compile(compile: bool, batch: str) -> bool:
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    if compile and batch == "sequential":
        raise ValueError(
            "compile=True compiles the batched evaluation; it needs batch='auto', 'vmap' or "
            "'population', not 'sequential'"
        )
    return compile


def batched_evaluation(
    objective: Callable[[Sequence[Tensor]], Tensor],
    population: Sequence[Tensor],
    *,
    vmapped: bool,
    chunk_size: int | None,
) -> Tensor:
    """The population's values ``[M]`` with no fallback logic: vmapped in chunks, or one call of
    a population-mode function. What ``compile=True`` traces (see ``compiled.py``)."""
    if not vmapped:
        size = population[0].shape[0]
        return check_population_values(objective(population), size, "the objective")
    return vmapped_values(objective, population, chunk_size, "the objective")


def vmapped_values(
    objective: Callable[[Sequence[Tensor]], Tensor],
    population: Sequence[Tensor],
    chunk_size: int | None,
    name: str,
) -> Tensor:
    """``torch.func.vmap`` of the scalar objective over the members, in chunks of
    ``chunk_size`` (None: :func:`auto_chunk_size`); values ``[M]``."""

    def single(*leaves: Tensor) -> Tensor:
        return check_objective(objective(leaves), name)

    chunk = chunk_size if chunk_size is not None else auto_chunk_size(population)
    values = torch.func.vmap(single, chunk_size=chunk)(*population)
    return values.reshape(population[0].shape[0])


def check_batch_mode(batch: str) -> BatchMode:
    if batch not in BATCH_MODES:
        raise ValueError(f"batch={batch!r} is not a batch mode; valid: {', '.join(BATCH_MODES)}")
    return batch  # type: ignore[return-value]


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def user_stacklevel() -> int:
    """The ``warnings.warn`` stacklevel, for its caller, of the first frame outside esmaml and
    torch: the user's line that called the decorated function."""
    frame = sys._getframe(2)  # the caller of our caller is level 2
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame = frame.f_back
        level += 1
    return level


def first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line warning."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class ObjectiveTypeError(TypeError):
    """The objective returned something other than a tensor."""


class ObjectiveShapeError(ValueError):
    """The objective returned a tensor of the wrong shape."""


def check_objective(value: object, where: str) -> Tensor:
    """The objective must return a 0-dim tensor."""
    if not isinstance(value, Tensor):
        raise ObjectiveTypeError(
            f"{where} must return a scalar (0-dim) tensor, got {type(value).__name__}"
        )
    if value.ndim != 0:
        raise ObjectiveShapeError(
            f"{where} must return a scalar (0-dim) tensor, got shape {tuple(value.shape)}; "
            "reduce it (e.g. .mean()) or use batch='population' for a [M] output"
        )
    _check_real(value, where)
    return value


def _check_real(value: Tensor, where: str) -> None:
    """A complex objective has no order to descend; its gradient is undefined."""
    if value.is_complex():
        raise ObjectiveTypeError(
            f"{where} must return a real tensor, got dtype {value.dtype}; return a real "
            "objective (e.g. .abs() or .real of the complex value)"
        )


def check_population_values(values: object, size: int, where: str) -> Tensor:
    """A population-mode function must return one value per member: shape ``(size,)``."""
    if not isinstance(values, Tensor) or tuple(values.shape) != (size,):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ObjectiveShapeError(
            f"with batch='population', {where} must return a tensor of shape ({size},), one "
            f"value per population member, got {got}"
        )
    _check_real(values, where)
    return values


class PopulationEvaluator:
    """Evaluates ``objective(leaves) -> scalar`` on M perturbed copies of the leaves.

    ``auto`` tries torch.func.vmap and, the first time the objective cannot be vmapped
    (data-dependent control flow, in-place ops, an external simulator), warns once and stays
    sequential, also when earlier calls (other arguments) did vmap.
    """

    def __init__(self, batch: BatchMode = "auto", chunk_size: int | None = None, name: str = "f"):
        self.batch = check_batch_mode(batch)
        self.chunk_size = check_chunk_size(chunk_size)
        self.name = name
        self._resolved: BatchMode | None = None if batch == "auto" else batch

    def resolve(self, mode: BatchMode) -> None:
        """Record that ``auto`` evaluated batched (a compiled call did it, not this object)."""
        if self._resolved is None:
            self._resolved = mode

    @property
    def mode(self) -> BatchMode:
        """The mode in use: ``auto`` reads ``vmap`` until a call cannot be vmapped, then
        ``sequential`` for good."""
        return self._resolved or self.batch

    def __call__(
        self, objective: Callable[[Sequence[Tensor]], Tensor], population: Sequence[Tensor]
    ) -> Tensor:
        """``population``: per-leaf tensors ``[M, *leaf_shape]`` -> values ``[M]``."""
        size = population[0].shape[0]
        if self.batch == "vmap":
            return self._vmap(objective, population)
        if self._resolved == "sequential":
            return self._sequential(objective, population)
        if self._resolved == "population":
            return check_population_values(objective(population), size, self.name)
        try:
            values = self._vmap(objective, population)
        except (ObjectiveTypeError, ObjectiveShapeError):
            raise  # the objective's contract, not vmap's: sequential would fail the same way
        except Exception as error:
            # One unbatched call first: a function that breaks the scalar-tensor contract (e.g.
            # returns a float, which vmap reports as .item()) gets that error, not a warning.
            first = check_objective(objective([leaf[0] for leaf in population]), self.name)
            warnings.warn(
                f"zero_order: {self.name} could not be vmapped ({first_line(error)}); "
                f"evaluating the {size} population members sequentially from now on. Pass "
                "batch='sequential' to silence this, or batch='population' if it takes a leading "
                "population dim.",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
            self._resolved = "sequential"
            return self._sequential(objective, population, first=first)
        self._resolved = "vmap"
        return values

    def _vmap(self, objective: Callable, population: Sequence[Tensor]) -> Tensor:
        return vmapped_values(objective, population, self.chunk_size, self.name)

    def _sequential(
        self, objective: Callable, population: Sequence[Tensor], first: Tensor | None = None
    ) -> Tensor:
        """One call per member; ``first``, when given, is member 0's value, already computed."""
        start = 0 if first is None else 1
        values = [
            check_objective(objective([leaf[i] for leaf in population]), self.name)
            for i in range(start, population[0].shape[0])
        ]
        return torch.stack(values if first is None else [first, *values])
