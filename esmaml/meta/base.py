"""The meta-learner interface and the held-out evaluation shared by every meta-learner."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator
from esmaml.tasks.base import TaskFamily, Tasks


class MetaLearner(abc.ABC):
    """Owns the meta-parameters theta and their optimizer; ``step(tasks)`` is one iteration."""

    family: TaskFamily
    adaptation: AdaptationOperator

    @abc.abstractmethod
    def step(self, tasks: Tasks) -> dict[str, float]:
        """One meta-update on ``tasks``; returns scalar metrics (``meta_objective``,
        ``queries``, ...)."""

    @abc.abstractmethod
    def parameters_flat(self) -> Tensor:
        """The current meta-parameters as a flat ``[D]`` tensor (detached)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def tasks_per_iteration(self) -> int:
        return 1


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore ``optimizer``'s moments and step counts from ``state`` but keep its own
    hyperparameters (lr, betas, weight decay, ...). Those come from the config the optimizer was
    built from, so resuming with ``optimizer.lr=...`` changes the learning rate; plain
    ``Optimizer.load_state_dict`` would put the checkpoint's back."""
    hyperparameters = [
        {key: value for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, hyperparameters):
        group.update(own)


@dataclass(frozen=True)
class Evaluation:
    """Per-task losses before and after adaptation, plus any family metrics after it."""

    pre: Tensor
    post: Tensor
    metrics_pre: dict[str, Tensor]
    metrics_post: dict[str, Tensor]
    queries: int
    reports_return: bool = False

    def summary(self, prefix: str = "eval") -> dict[str, float]:
        out = {
            f"{prefix}_pre_adaptation": float(self.pre.mean()),
            f"{prefix}_post_adaptation": float(self.post.mean()),
            f"{prefix}_post_adaptation_std": float(self.post.std(unbiased=False)),
            f"{prefix}_queries": self.queries,
        }
        if self.reports_return:
            out[f"{prefix}_return_pre_adaptation"] = -float(self.pre.mean())
            out[f"{prefix}_return_post_adaptation"] = -float(self.post.mean())
        for name, values in self.metrics_pre.items():
            out[f"{prefix}_{name}_pre_adaptation"] = float(values.float().mean())
        for name, values in self.metrics_post.items():
            out[f"{prefix}_{name}_post_adaptation"] = float(values.float().mean())
        return out


@torch.no_grad()
def evaluate_adaptation(
    family: TaskFamily,
    adaptation: AdaptationOperator,
    theta: Tensor,
    tasks: Tasks,
    seed: int,
    num_steps: int | None = None,
) -> Evaluation:
    """Query-phase loss of ``theta`` and of ``U(theta, task)`` on every task of ``tasks``.

    ``queries`` counts the adaptation queries spent over all tasks (evaluation excluded).
    """
    n = next(iter(tasks.values())).shape[0]
    ids = torch.arange(n, device=theta.device)
    params = theta.detach().expand(n, theta.shape[-1])
    with family.frozen():
        generator = torch.Generator(device=theta.device).manual_seed(seed)
        pre = family.loss(params, tasks, ids, phase="query", generator=generator)
        adapted = adaptation.adapt(family, params, tasks, ids, seed + 1, num_steps=num_steps)
        generator = torch.Generator(device=theta.device).manual_seed(seed)
        post = family.loss(adapted, tasks, ids, phase="query", generator=generator)
        metrics_pre = family.metrics(params, tasks, ids)
        metrics_post = family.metrics(adapted, tasks, ids)
    steps = adaptation.num_steps if num_steps is None else num_steps
    return Evaluation(
        pre=pre,
        post=post,
        metrics_pre=metrics_pre,
        metrics_post=metrics_post,
        queries=n * steps * adaptation.queries_per_step,
        reports_return=family.reports_return,
    )
