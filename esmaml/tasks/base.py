"""The task-family protocol: a distribution over tasks and a batched per-task loss.

Everything above it (adaptation operators, meta-learners, evaluators) sees only this:

    family.sample_tasks(n, split=..., generator=...) -> Tasks       # dict of [n, ...] tensors
    family.loss(params [*B, D], tasks, task_ids [*B], phase=...)   -> [*B]  (lower is better)

``params`` are flat parameter vectors, so a whole [population, queries] grid of models is one
call. ``phase='adapt'`` is what adaptation may query (support set, or adaptation rollouts);
``phase='query'`` is what the adapted parameters are judged on (query set, or fresh rollouts).
RL families return minus the return.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

Tasks = dict[str, Tensor]
Split = Literal["train", "test"]
Phase = Literal["adapt", "query"]
SPLITS: tuple[str, ...] = ("train", "test")
PHASES: tuple[str, ...] = ("adapt", "query")


class TaskFamily(abc.ABC):
    """A distribution over tasks with a batched loss on flat parameter vectors.

    A family must define ``num_params``, :meth:`init_params`, :meth:`sample_tasks` and
    :meth:`loss`. Everything else is optional, with the default documented on each member:
    the trainer, the evaluators and the meta-learners call these and never probe for others.
    """

    #: Length D of the flat parameter vector.
    num_params: int
    #: Whether ``loss`` is differentiable in ``params`` (gradient-descent adaptation needs it).
    differentiable: bool = True
    #: Whether the loss is random given params and task (RL rollouts from random states).
    stochastic: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Every subclass's loss is checked where its output enters esmaml (shape and dtype,
        # metadata only): a wrong shape names the class instead of failing deep inside.
        super().__init_subclass__(**kwargs)
        if "loss" in vars(cls) and not getattr(cls.loss, "__isabstractmethod__", False):
            from esmaml.tasks.checks import checked_loss

            cls.loss = checked_loss(cls.__name__, vars(cls)["loss"])  # type: ignore[method-assign]

    @abc.abstractmethod
    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A fresh flat parameter vector ``[D]``."""

    @abc.abstractmethod
    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        """``n`` tasks as a dict of tensors with leading dim ``n``."""

    @abc.abstractmethod
    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Loss ``[*B]`` of ``params [*B, D]`` on task ``task_ids [*B]`` of ``tasks``."""

    #: Whether the loss is minus a return (RL): summaries then also report the return.
    reports_return: bool = False

    def end_iteration(self, params: Tensor) -> Tensor:
        """Called by the meta-learner after each meta-step with the new meta-parameters
        ``[D]``; returns the meta-parameters to continue from. Default: ``params`` unchanged.

        RL families fold the iteration's observation statistics in here (they stay frozen
        within an iteration) and return the policy re-expressed under the new statistics, so
        that it acts exactly as before: the statistics never change what theta does."""
        return params

    def training_metrics(self) -> dict[str, float]:
        """Scalars describing the family's own state, logged with every training iteration
        (e.g. the observation statistics an RL policy is normalised by). Default: none."""
        return {}

    def frozen(self) -> contextlib.AbstractContextManager[None]:
        """A context in which evaluation must not change the family's state."""
        return contextlib.nullcontext()

    def metrics(self, params: Tensor, tasks: Tasks, task_ids: Tensor) -> dict[str, Tensor]:
        """Extra per-task metrics ``name -> [*B]`` on the query phase (e.g. accuracy)."""
        return {}

    def validate_tasks(self, tasks: Mapping[str, Tensor], n: int | None = None) -> Tasks:
        """Check ``tasks`` is a non-empty dict of tensors sharing a leading dim; returns it."""
        return validate_tasks(tasks, n, where=type(self).__name__)

    @property
    def device(self) -> torch.device:
        """Where the family's tensors live. Default: the CPU."""
        return torch.device("cpu")

    #: Environment steps taken so far (RL); the trainer logs the increments. Default: 0.
    env_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The family's own state to checkpoint (e.g. observation statistics), tensors and
        plain values only. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - no state
        """Restore :meth:`state_dict`'s output on resume. Default: nothing to restore."""

    def close(self) -> None:  # noqa: B027 - a no-op unless the family holds resources
        """Release simulators, files or workers when training ends; a family used again after
        ``close`` must reopen them. Default: nothing to release."""

    def as_module(self, params: Tensor) -> torch.nn.Module:
        """The model as a ``torch.nn.Module`` holding the flat ``params [D]`` (learn2learn's
        MAML needs one). Default: not available (raises NotImplementedError)."""
        raise NotImplementedError(f"{type(self).__name__} does not define as_module(params)")

    # -- remote replicas (evaluator.backend: ray) ---------------------------------------------
    def replica_state(self) -> Any:
        """What a remote copy of the family needs from this one before it evaluates (RL: the
        committed observation statistics); picklable. Default: None."""
        return None

    def load_replica_state(self, state: Any) -> None:  # noqa: B027 - nothing to receive
        """Adopt :meth:`replica_state` of the driver's family, in a worker. Default: no-op."""

    def collected_state(self) -> Any:
        """What this (remote) copy gathered while evaluating since :meth:`load_replica_state`
        (RL: the observation statistics of its rollouts); picklable. Default: None."""
        return None

    def merge_collected_state(self, state: Any) -> None:  # noqa: B027 - nothing to merge
        """Fold a worker's :meth:`collected_state` into the driver's family, as if this
        family had run the worker's evaluations. Default: no-op."""

    @contextlib.contextmanager
    def members(self, rows: Tensor) -> Iterator[None]:
        """Within: loss calls evaluate population members ``rows`` along their first batch
        dim. A family that gathers state from its evaluations (RL: observation statistics)
        files it per member, so that what it gathers does not depend on how the population
        was split between calls or workers. Default: nothing to file."""
        yield


def validate_tasks(
    tasks: Mapping[str, Tensor], n: int | None = None, *, where: str = "tasks"
) -> Tasks:
    """A clear error for malformed tasks: not a dict, a non-tensor, mismatched or empty dims."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise TypeError(
            f"{where} must return a non-empty dict of tensors, got {type(tasks).__name__}"
        )
    sizes = {}
    for key, value in tasks.items():
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{where}: task field {key!r} is a {type(value).__name__}, not a tensor"
            )
        if value.ndim == 0:
            raise ValueError(f"{where}: task field {key!r} is 0-dim; it needs a leading task dim")
        if any(size == 0 for size in value.shape):
            raise ValueError(
                f"{where}: task field {key!r} has an empty dimension (shape {tuple(value.shape)});"
                " every task needs at least one example"
            )
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{where}: task fields disagree on the number of tasks: {sizes}")
    count = next(iter(sizes.values()))
    if n is not None and count != n:
        raise ValueError(f"{where}: asked for {n} tasks, got {count}")
    return dict(tasks)


def check_task_ids(task_ids: Tensor, tasks: Tasks, batch_shape: torch.Size) -> Tensor:
    """``task_ids`` must be an integer tensor of ``batch_shape`` (broadcastable) indexing tasks."""
    if not isinstance(task_ids, Tensor) or task_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError("task_ids must be an int64 tensor of task indices")
    try:
        torch.broadcast_shapes(task_ids.shape, batch_shape)
    except RuntimeError:
        raise ValueError(
            f"task_ids of shape {tuple(task_ids.shape)} does not broadcast to the parameter "
            f"batch shape {tuple(batch_shape)}"
        ) from None
    return task_ids
