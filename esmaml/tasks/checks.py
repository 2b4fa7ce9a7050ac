"""The boundary where a task family's output enters esmaml: every ``loss`` of a
:class:`~esmaml.tasks.base.TaskFamily` subclass is wrapped so a wrong output is a one-line error
naming the class, the method and the shape expected and got, not an IndexError deep inside an
estimator.

The check reads metadata only (type, dtype, shape), so it costs a few microseconds per call
whatever the population size; the values' finiteness is the meta-learner's (its NaN policy).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

LossFunction = Callable[..., Tensor]


def expected_loss_shape(params: Any, task_ids: Any) -> torch.Size | None:
    """``[*B]`` for ``params [*B, D]`` and ``task_ids`` broadcastable to ``[*B]``; None when
    the inputs themselves are malformed (the family reports those)."""
    if not isinstance(params, Tensor) or params.ndim == 0:
        return None
    batch = params.shape[:-1]
    if not isinstance(task_ids, Tensor) or task_ids.shape == batch:
        return batch  # the usual case, without torch.broadcast_shapes' cost (tens of us)
    return _broadcast(tuple(batch), tuple(task_ids.shape))


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> torch.Size | None:
    """Numpy's broadcasting of two shapes; None when they do not broadcast."""
    width = max(len(a), len(b))
    a, b = (1,) * (width - len(a)) + a, (1,) * (width - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        return None
    return torch.Size(max(x, y) if 1 in (x, y) else x for x, y in zip(a, b))


def check_loss_output(owner: str, value: Any, params: Any, task_ids: Any) -> Tensor:
    """``value`` must be a real floating tensor of the models' batch shape."""
    where = f"{owner}.loss"
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{where} must return a tensor of losses [*B] (one per model), got "
            f"{type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{where} must return a floating tensor, got dtype {value.dtype}")
    expected = expected_loss_shape(params, task_ids)
    if expected is not None and value.shape != expected:
        raise ValueError(
            f"{where} returned shape {tuple(value.shape)}, expected {tuple(expected)}: one loss "
            f"per model of params {tuple(params.shape)} (the batch dims before D); reduce over "
            "examples or episodes inside loss (e.g. .mean(-1))"
        )
    return value


def checked_loss(cls_name: str, loss: LossFunction) -> LossFunction:
    """``loss`` with its output checked (idempotent: an already checked loss is returned)."""
    if getattr(loss, "__esmaml_checked__", False):
        return loss

    @functools.wraps(loss)
    def wrapper(self: Any, params: Any, tasks: Any, task_ids: Any, *args: Any, **kwargs: Any):
        value = loss(self, params, tasks, task_ids, *args, **kwargs)
        return check_loss_output(cls_name, value, params, task_ids)

    wrapper.__esmaml_checked__ = True  # type: ignore[attr-defined]
    return wrapper
