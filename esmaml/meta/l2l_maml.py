"""Second-order MAML through learn2learn: the gradient-based baseline ES-MAML is compared with.

For a batch of tasks ``T_1..T_n`` the meta-objective is

    J(theta) = (1/n) sum_i L_query(T_i, U^k(theta, T_i)),
    U(theta, T) = theta - alpha * grad_theta L_support(T, theta)   (applied k times),

differentiated through the inner steps (``learn2learn.algorithms.MAML(first_order=False)``).
It works on any supervised family that defines ``as_module`` (e.g. through a
:class:`~esmaml.models.FunctionalMLP`, whose ``to_module()`` builds the matching
``nn.Sequential``) and ``x_support``/``y_support``/
``x_query``/``y_query`` task tensors: float targets give MSE (regression), integer targets
cross-entropy (classification), as in :class:`~esmaml.tasks.sine.SineRegression` and
:class:`~esmaml.tasks.fewshot.TasksetFamily`.

It is a :class:`~esmaml.meta.base.MetaLearner`: ``adaptation`` is the matching
:class:`~esmaml.adaptation.gradient_descent.GradientDescentAdaptation` (same alpha and steps, on
flat parameters), so ``evaluate_adaptation(family, learner.adaptation,
learner.parameters_flat(), tasks, seed)`` scores it exactly like the ES-MAML learners.

learn2learn is an optional extra (``bash scripts/setup.sh`` builds it), imported lazily.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from esmaml.adaptation.base import check_positive_float, check_positive_int
from esmaml.adaptation.gradient_descent import GradientDescentAdaptation
from esmaml.meta.base import MetaLearner, load_optimizer_state
from esmaml.tasks.base import TaskFamily, Tasks, validate_tasks
from esmaml.tasks.fewshot import import_learn2learn

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
SUPERVISED_FIELDS: tuple[str, ...] = ("x_support", "y_support", "x_query", "y_query")


def supervised_loss(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """MSE for float targets, cross-entropy for integer labels; ``x [N, *feat]`` is flattened."""
    pred = module(x.reshape(x.shape[0], -1))
    if y.is_floating_point():
        return F.mse_loss(pred, y.reshape(pred.shape))
    return F.cross_entropy(pred, y.reshape(-1))


class L2LMAML(MetaLearner):
    """learn2learn's second-order MAML on a supervised task family.

    Args:
        family: a supervised family that defines ``as_module(params)`` (differentiable).
        meta_lr: outer learning rate (beta).
        alpha: inner (adaptation) learning rate.
        adaptation_steps: inner gradient steps k on the support set.
        optimizer: ``'adam'`` or ``'sgd'`` for the outer step.
        first_order: drop the second-order terms (FOMAML); the default is exact MAML.
        meta_batch_size: tasks per iteration the trainer should pass to ``step``
            (``tasks_per_iteration``); ``step`` uses every task it is given.
        seed: seeds the initial parameters ``family.init_params`` (unless ``init_params``).
        grad_clip: clip the meta-gradient's global norm to this (None: no clipping).
        init_params: initial flat meta-parameters ``[D]`` (the family's layout).
    """

    owns_inner_loop = True

    def __init__(
        self,
        family: TaskFamily,
        *,
        meta_lr: float = 1e-3,
        alpha: float = 0.01,
        adaptation_steps: int = 1,
        optimizer: str = "adam",
        first_order: bool = False,
        meta_batch_size: int = 25,
        seed: int = 0,
        grad_clip: float | None = None,
        init_params: Tensor | None = None,
    ):
        l2l = import_learn2learn()
        if not family.differentiable:
            raise ValueError(
                f"{type(family).__name__} is not differentiable (non-differentiable activation or "
                "quantised weights): its gradient is zero almost everywhere, so MAML cannot "
                "adapt; use an ES-MAML meta-learner"
            )
        if isinstance(adaptation_steps, bool) or not isinstance(adaptation_steps, int):
            raise ValueError(f"adaptation_steps must be an int >= 0, got {adaptation_steps!r}")
        if adaptation_steps < 0:
            raise ValueError(f"adaptation_steps must be >= 0, got {adaptation_steps}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
        self.family = family
        self.meta_lr = check_positive_float("meta_lr", meta_lr)
        self.alpha = check_positive_float("alpha", alpha)
        self.adaptation_steps = adaptation_steps
        self.meta_batch_size = check_positive_int("meta_batch_size", meta_batch_size)
        # The same inner loop on flat parameters, for the shared evaluator.
        self.adaptation = GradientDescentAdaptation(self.alpha, num_steps=adaptation_steps)
        self.optimizer_name = optimizer
        self.first_order = bool(first_order)
        self.seed = int(seed)
        self.grad_clip = grad_clip
        if init_params is None:
            init_params = family.init_params(torch.Generator().manual_seed(self.seed))
        elif init_params.shape != (family.num_params,):
            raise ValueError(
                f"init_params must have shape ({family.num_params},), got "
                f"{tuple(init_params.shape)}"
            )
        try:
            module = family.as_module(init_params.detach().cpu()).to(family.device)
        except NotImplementedError:
            raise TypeError(
                f"L2LMAML needs a family that defines as_module(params) (a torch.nn.Module of "
                f"its model); {type(family).__name__} does not"
            ) from None
        self.maml = l2l.algorithms.MAML(module, lr=self.alpha, first_order=self.first_order)
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.maml.parameters(), lr=self.meta_lr
            )
        else:
            self.optimizer = torch.optim.SGD(self.maml.parameters(), lr=self.meta_lr)
        self.iteration = 0

    @property
    def tasks_per_iteration(self) -> int:
        return self.meta_batch_size

    # -- flat parameters ---------------------------------------------------------------------
    def parameters_flat(self) -> Tensor:
        """The meta-parameters ``[D]`` in the family's flat (FunctionalMLP) layout.

        ``to_module()`` lists ``0.weight, 0.bias, 2.weight, ...`` (row-major), the same order
        and shapes as ``FunctionalMLP.layout``, so ``parameters_to_vector`` is that layout.
        """
        return parameters_to_vector(self.maml.module.parameters()).detach().clone()

    def load_parameters_flat(self, params: Tensor) -> None:
        """Set the meta-parameters from a flat ``[D]`` vector (the family's layout)."""
        if params.shape != (self.family.num_params,):
            raise ValueError(
                f"expected flat parameters of shape ({self.family.num_params},), "
                f"got {tuple(params.shape)}"
            )
        with torch.no_grad():
            vector_to_parameters(params.detach().clone(), self.maml.module.parameters())

    # -- adaptation --------------------------------------------------------------------------
    def _check(self, tasks: Tasks) -> Tasks:
        tasks = validate_tasks(tasks, where=f"{type(self).__name__}: tasks")
        missing = [key for key in SUPERVISED_FIELDS if key not in tasks]
        if missing:
            raise KeyError(f"L2LMAML needs supervised tasks; the task dict lacks {missing}")
        return tasks

    def _adapt(self, tasks: Tasks, index: int, steps: int, first_order: bool | None) -> nn.Module:
        """A clone of the meta-model after ``steps`` gradient steps on task ``index``'s support."""
        learner = self.maml.clone(first_order=first_order)
        x, y = tasks["x_support"][index], tasks["y_support"][index]
        for _ in range(steps):
            learner.adapt(supervised_loss(learner, x, y))
        return learner

    def step(self, tasks: Tasks) -> dict[str, float]:
        """One meta-update on all tasks of ``tasks``; returns the batch's metrics.

        ``meta_objective``: mean query loss after adaptation (before the update); ``grad_norm``:
        the meta-gradient's norm (before clipping); ``queries``: loss evaluations, one per inner
        step and one for the query set per task.
        """
        tasks = self._check(tasks)
        n = next(iter(tasks.values())).shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        # Accumulated as tensors: no device sync per task.
        total = torch.zeros((), device=self.family.device)
        correct = torch.zeros((), device=self.family.device)
        classify = not tasks["y_query"].is_floating_point()
        for i in range(n):
            learner = self._adapt(tasks, i, self.adaptation_steps, None)
            x, y = tasks["x_query"][i], tasks["y_query"][i]
            loss = supervised_loss(learner, x, y)
            # Backward per task (gradients accumulate) keeps one task's graph alive at a time.
            (loss / n).backward()
            total += loss.detach()
            if classify:
                with torch.no_grad():
                    pred = learner(x.reshape(x.shape[0], -1)).argmax(-1)
                    correct += (pred == y.reshape(-1)).float().mean()
        params = list(self.maml.parameters())
        if self.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
            grad_norm = torch.cat(grads).norm() if grads else torch.zeros(())
        if not bool(torch.isfinite(grad_norm)):
            # Never step on a NaN/inf meta-gradient: parameters and optimizer state stay as-is.
            raise FloatingPointError(
                f"L2LMAML: the meta-gradient is NaN/inf (norm {float(grad_norm)}); the step was "
                "skipped; lower meta_lr or alpha"
            )
        self.optimizer.step()
        adjusted = self.family.end_iteration(self.parameters_flat())
        if not torch.equal(adjusted, self.parameters_flat()):
            self.load_parameters_flat(adjusted)
        self.iteration += 1
        metrics = {
            "meta_objective": float(total) / n,
            "grad_norm": float(grad_norm),
            "queries": float(n * (self.adaptation_steps + 1)),
        }
        if classify:
            metrics["accuracy"] = float(correct) / n
        return metrics

    def evaluate(self, tasks: Tasks, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Query losses ``(pre [n], post [n])`` before and after ``steps`` inner steps
        (default ``adaptation_steps``); the meta-parameters are not changed.

        Adaptation here is first-order (no graph through the step is needed to evaluate).
        """
        tasks = self._check(tasks)
        steps = self.adaptation_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        n = next(iter(tasks.values())).shape[0]
        pre = torch.empty(n, device=self.family.device)
        post = torch.empty(n, device=self.family.device)
        for i in range(n):
            x, y = tasks["x_query"][i], tasks["y_query"][i]
            with torch.no_grad():
                pre[i] = supervised_loss(self.maml, x, y)
            learner = self._adapt(tasks, i, steps, first_order=True)
            with torch.no_grad():
                post[i] = supervised_loss(learner, x, y)
        return pre, post

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies, so later steps do not change a kept checkpoint)."""
        return {
            "maml": copy.deepcopy(self.maml.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "iteration": self.iteration,
            "config": {
                "meta_lr": self.meta_lr,
                "alpha": self.alpha,
                "adaptation_steps": self.adaptation_steps,
                "optimizer": self.optimizer_name,
                "first_order": self.first_order,
                "seed": self.seed,
                "grad_clip": self.grad_clip,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.maml.load_state_dict(state["maml"])
        # Deep-copied: Optimizer.load_state_dict keeps the given moment tensors when dtype and
        # device match, so two learners loaded from one state would share (and double-update)
        # Adam's moments.
        load_optimizer_state(self.optimizer, copy.deepcopy(state["optimizer"]))
        self.iteration = int(state["iteration"])
