"""The meta-learner interface and the held-out evaluation shared by every meta-learner."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator
from esmaml.seeding import substream, substream_generator
from esmaml.tasks.base import TaskFamily, Tasks


class MetaLearner(abc.ABC):
    """Owns the meta-parameters theta and their optimizer; ``step(tasks)`` is one iteration.

    The trainer builds a learner as ``cls(family=..., adaptation=..., optimizer=...,
    generator=..., **meta.params)`` (see :mod:`esmaml.training.builders`); a learner with
    ``owns_inner_loop`` is built as ``cls(family=..., meta_lr=..., optimizer=NAME, seed=...,
    **meta.params)`` instead. Required: :meth:`step`, :meth:`parameters_flat`,
    :meth:`state_dict`, :meth:`load_state_dict`. The rest has defaults.
    """

    #: The family the learner meta-trains on.
    family: TaskFamily
    #: The operator held-out evaluations adapt with: the configured one, or the learner's own
    #: inner loop (``owns_inner_loop``).
    adaptation: AdaptationOperator
    #: The learner runs its own inner loop and optimizer (learn2learn's MAML): it gets no
    #: adaptation operator or optimizer factory, but the optimizer's name and learning rate.
    owns_inner_loop: bool = False
    #: The learner takes ``evaluator=`` (an :class:`esmaml.evaluators.Evaluator`), so
    #: ``evaluator.backend: ray`` can evaluate its population remotely.
    takes_evaluator: bool = False

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

    def perturbed_values(self) -> Tensor | None:
        """The objective of every perturbed member of the last step (logged as a histogram),
        or None when the learner has no population."""
        return None

    def close(self) -> None:  # noqa: B027 - a no-op unless the learner holds resources
        """Release workers and connections (the trainer calls this when training ends)."""


def make_optimizer(factory: Any, theta: torch.nn.Parameter) -> torch.optim.Optimizer:
    """``factory([theta])``, default plain SGD with lr 0.01 (the paper's beta)."""
    if factory is None:
        return torch.optim.SGD([theta], lr=0.01)
    if not callable(factory):
        raise TypeError(
            "optimizer must be a callable params -> torch.optim.Optimizer (e.g. lambda p: "
            f"torch.optim.Adam(p, lr=1e-3)) or None, got {factory!r}"
        )
    optimizer = factory([theta])
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer factory must return a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return optimizer


def guarded_step(
    theta: torch.nn.Parameter, optimizer: torch.optim.Optimizer, gradient: Tensor, *, name: str
) -> float:
    """``theta.grad = gradient``, then one optimizer step; returns the gradient's norm.

    Never steps on a NaN/inf gradient (theta and the optimizer state stay unchanged), and
    rolls theta back if the step made it non-finite; both raise FloatingPointError.
    """
    grad_norm = float(gradient.norm())
    if not bool(torch.isfinite(gradient).all()):
        raise FloatingPointError(
            f"{name}: the meta-gradient is NaN/inf (norm {grad_norm}); the step was skipped"
        )
    optimizer.zero_grad(set_to_none=True)
    theta.grad = gradient.detach().to(theta.dtype)
    previous = theta.detach().clone()
    optimizer.step()
    if not bool(torch.isfinite(theta).all()):
        with torch.no_grad():
            theta.copy_(previous)  # never leave NaN/inf meta-parameters behind
        raise FloatingPointError(
            f"{name}: the meta-parameters became NaN/inf after the optimizer step (gradient "
            f"norm {grad_norm}); lower the learning rate (optimizer.lr) or sigma"
        )
    return grad_norm


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


class FlatThetaLearner(MetaLearner):
    """A learner whose meta-parameters are one flat ``theta [D]`` with a torch optimizer:
    ES-MAML, first-order ES-MAML, torch.func MAML and PG-MAML. It holds the run's generator, and
    checkpoints as ``{"theta", "optimizer"}``."""

    theta: torch.nn.Parameter
    optimizer: torch.optim.Optimizer
    generator: torch.Generator

    def _init_theta(
        self,
        family: TaskFamily,
        optimizer: Any,
        generator: torch.Generator | None,
        init_params: Tensor | None,
    ) -> None:
        """theta from ``init_params`` or ``family.init_params(generator)``; without a generator,
        one seeded from torch's global RNG, so ``torch.manual_seed`` applies."""
        from esmaml.zero_order import draw_seed, make_generator

        self.generator = generator if generator is not None else make_generator(draw_seed())
        initial = family.init_params(self.generator) if init_params is None else init_params
        self.theta = torch.nn.Parameter(initial.detach().clone().to(family.device))
        self.optimizer = make_optimizer(optimizer, self.theta)

    def apply_gradient(self, gradient: Tensor, *, name: str) -> float:
        """The guarded optimizer step, then the family's end of iteration (which may re-express
        theta, e.g. for new normalisation statistics); returns the gradient's norm."""
        grad_norm = guarded_step(self.theta, self.optimizer, gradient, name=name)
        with torch.no_grad():
            self.theta.copy_(self.family.end_iteration(self.theta.detach()))
        return grad_norm

    def parameters_flat(self) -> Tensor:
        return self.theta.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        load_optimizer_state(self.optimizer, state["optimizer"])


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
        """Means over the tasks. A task whose loss is NaN/inf before or after adaptation (a
        diverged adaptation, a user loss) is left out of every mean and counted in
        ``{prefix}_nonfinite_tasks``, so a summary never shows a bare ``nan``."""
        finite = torch.isfinite(self.pre) & torch.isfinite(self.post)
        pre, post = self.pre[finite], self.post[finite]
        out = {
            f"{prefix}_pre_adaptation": _mean(pre),
            f"{prefix}_post_adaptation": _mean(post),
            f"{prefix}_post_adaptation_std": float(post.std(unbiased=False))
            if post.numel()
            else math.nan,
            f"{prefix}_queries": self.queries,
        }
        if self.reports_return:
            out[f"{prefix}_return_pre_adaptation"] = -_mean(pre)
            out[f"{prefix}_return_post_adaptation"] = -_mean(post)
        for name, values in self.metrics_pre.items():
            out[f"{prefix}_{name}_pre_adaptation"] = _mean(values.float())
        for name, values in self.metrics_post.items():
            out[f"{prefix}_{name}_post_adaptation"] = _mean(values.float())
        dropped = int((~finite).sum())
        if dropped:
            out[f"{prefix}_nonfinite_tasks"] = dropped
        return out


def _mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


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
        # pre and post see the same query start states: their difference is the adaptation's.
        generator = substream_generator(seed, "query", device=theta.device)
        pre = family.loss(params, tasks, ids, phase="query", generator=generator)
        adapt_seed = substream(seed, "adapt")
        adapted = adaptation.adapt(family, params, tasks, ids, adapt_seed, num_steps=num_steps)
        generator = substream_generator(seed, "query", device=theta.device)
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
