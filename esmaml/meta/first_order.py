"""First-order ES-MAML (Song et al. 2020, Algorithm 3), read top to bottom.

For each task i: adapt with an ES-gradient step, theta'_i = theta - alpha g_adapt(theta); then
estimate the query-loss gradient at the adapted point by ES, g_i ~ grad f_i(theta'_i). The
meta-gradient is mean_i g_i (first order: dtheta'/dtheta ~ I), or, with the Hessian correction,
mean_i (I - alpha H_i) g_i where H_i is the ES Hessian from the adaptation's own queries,

    H_i = 1/(K sigma^2) sum_k (f_ik - mean_k f_ik) p_ik p_ik^T,

applied without forming H: H g = 1/(K sigma^2) sum_k (f_ik - mean f_i) p_ik (p_ik . g).
The gradient lands in ``theta.grad`` and any torch.optim optimizer takes the step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import check_positive_float, check_positive_int
from esmaml.adaptation.es_gradient import ESGradientAdaptation
from esmaml.meta.base import FlatThetaLearner
from esmaml.seeding import substream, substream_generator
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order import draw_seed, es_gradient, perturb, sample_noise
from esmaml.zero_order.estimators import check_method, check_shaping
from esmaml.zero_order.noise import check_noise_kind


class FirstOrderESMAML(FlatThetaLearner):
    """First-order ES-MAML with an optional ES Hessian correction.

    Args:
        family: the task family.
        adaptation: an :class:`ESGradientAdaptation` (its queries give the Hessian estimate).
        num_perturbations: directions per task for the gradient at the adapted point.
        sigma: smoothing scale of that gradient.
        tasks_per_iteration: tasks per iteration.
        hessian_correction: apply (I - alpha H_i).
    """

    def __init__(
        self,
        family: TaskFamily,
        adaptation: ESGradientAdaptation,
        *,
        optimizer: Any = None,
        num_perturbations: int = 20,
        sigma: float = 0.1,
        method: str = "antithetic",
        sampling: str = "gaussian",
        shaping: str = "none",
        tasks_per_iteration: int = 16,
        hessian_correction: bool = False,
        generator: torch.Generator | None = None,
        init_params: Tensor | None = None,
    ):
        if not isinstance(adaptation, ESGradientAdaptation):
            raise TypeError(
                "first-order ES-MAML needs adaptation=ESGradientAdaptation (its queries give the "
                f"Hessian estimate), got {type(adaptation).__name__}"
            )
        if hessian_correction and adaptation.num_steps != 1:
            raise ValueError("hessian_correction supports a single adaptation step (num_steps=1)")
        if hessian_correction and adaptation.shaping != "none":
            # (I - alpha H) is the Jacobian of theta - alpha grad f; a shaped (normalised) step
            # has another Jacobian, so the correction would be off by the values' spread.
            raise ValueError(
                "hessian_correction needs an unshaped inner step: the adaptation's shaping must "
                f"be 'none', got {adaptation.shaping!r}"
            )
        self.family, self.adaptation = family, adaptation
        self.num_perturbations = check_positive_int("num_perturbations", num_perturbations)
        self.sigma = check_positive_float("sigma", sigma)
        self.method, self.shaping = check_method(method), check_shaping(shaping)
        self.sampling = check_noise_kind(sampling)
        self._tasks = check_positive_int("tasks_per_iteration", tasks_per_iteration)
        self.hessian_correction = bool(hessian_correction)
        self._init_theta(family, optimizer, generator, init_params)

    @property
    def tasks_per_iteration(self) -> int:
        return self._tasks

    @torch.no_grad()
    def meta_gradient(self, tasks: Tasks, seed: int) -> tuple[Tensor, dict[str, float]]:
        """The first-order meta-gradient ``[D]`` and metrics for ``tasks``."""
        n = next(iter(tasks.values())).shape[0]
        ids = torch.arange(n, device=self.theta.device)
        theta = self.theta.detach().expand(n, -1)
        adaptation = self.adaptation
        trace = None
        adapted = theta
        for index in range(adaptation.num_steps):
            step_seed = substream(seed, "adapt", "step", index)
            trace = adaptation.trace(self.family, adapted, tasks, ids, step_seed)
            adapted = adapted - adaptation.step_size * trace.gradient
        # Named streams of one iteration: the meta directions must not be a function of the
        # adaptation's start states (CPU randn and rand share their uniforms), or the estimate
        # at theta' would be biased.
        generator = substream_generator(seed, "meta_directions", device=theta.device)
        directions = sample_noise(
            (n, self.num_perturbations, theta.shape[-1]),
            kind=self.sampling,
            generator=generator,
            device=theta.device,
            dtype=theta.dtype,
        )
        population = perturb(adapted, directions, self.sigma, self.method)  # [n, M, D]
        rollouts = substream_generator(seed, "query", device=theta.device)
        values = self.family.loss(
            population, tasks, ids.unsqueeze(-1), phase="query", generator=rollouts
        )
        # A fresh stream with the population's seed: the baseline sees the same start states.
        center = self.family.loss(
            adapted,
            tasks,
            ids,
            phase="query",
            generator=substream_generator(seed, "query", device=theta.device),
        )
        if not bool(torch.isfinite(values).all()):
            raise FloatingPointError(
                "first-order ES-MAML: a query evaluation was NaN or inf (meta.algorithm="
                "first_order has no NaN policy; lower meta.params.sigma or the adaptation step, "
                "or use meta.algorithm=es_maml with meta.params.nan_policy=drop)"
            )
        gradients = es_gradient(
            directions,
            values,
            method=self.method,
            sigma=self.sigma,
            baseline=center,
            shaping=self.shaping,
        )  # [n, D]
        if self.hessian_correction and trace is not None:
            k = trace.directions.shape[-2]
            f = (
                trace.values[..., :k]
                if adaptation.method != "antithetic"
                else (trace.values[..., :k] + trace.values[..., k:]) / 2
            )
            centered = f - f.mean(-1, keepdim=True)  # [n, K]
            projections = (trace.directions @ gradients.unsqueeze(-1)).squeeze(-1)  # p.g [n, K]
            hessian_g = ((centered * projections).unsqueeze(-1) * trace.directions).sum(-2)
            hessian_g = hessian_g / (k * adaptation.sigma**2)
            gradients = gradients - adaptation.step_size * hessian_g
        queries = n * (adaptation.queries + values.shape[-1] + 1)
        return gradients.mean(0), {
            "meta_objective": float(center.mean()),
            "perturbed_mean": float(values.mean()),
            "perturbed_std": float(values.std(unbiased=False)),
            "queries": float(queries),
        }

    def step(self, tasks: Tasks) -> dict[str, float]:
        gradient, metrics = self.meta_gradient(tasks, draw_seed(self.generator))
        grad_norm = self.apply_gradient(gradient, name="first-order ES-MAML")
        return {**metrics, "grad_norm": grad_norm, "sigma": self.sigma}
