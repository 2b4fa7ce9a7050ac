"""A supervised task family: linear regression, one weight vector per task."""

from __future__ import annotations

import torch
from torch import Tensor

from esmaml.models import FunctionalMLP
from esmaml.tasks import TaskFamily


class LinearRegressionTasks(TaskFamily):
    """y = w . x, one w ~ N(0, I) per task; ``shots`` support and ``query_shots`` query points."""

    def __init__(self, dim: int = 4, shots: int = 5, query_shots: int = 10):
        self.dim, self.shots, self.query_shots = dim, shots, query_shots
        self.model = FunctionalMLP([dim, 1], activation="identity")
        self.num_params = self.model.num_params  # required: the length D of theta

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return self.model.init_params(generator)

    def sample_tasks(self, n, *, split="train", generator=None):
        w = torch.randn(n, self.dim, generator=generator)
        x = torch.randn(n, self.shots + self.query_shots, self.dim, generator=generator)
        y = (x @ w.unsqueeze(-1)).squeeze(-1)
        return {
            "x_support": x[:, : self.shots],
            "y_support": y[:, : self.shots],
            "x_query": x[:, self.shots :],
            "y_query": y[:, self.shots :],
        }

    def loss(self, params, tasks, task_ids, *, phase="query", generator=None):
        # params [*B, D] and task_ids [*B]: a whole population of models in one call.
        part = "support" if phase == "adapt" else "query"
        ids = task_ids.expand(params.shape[:-1])
        x, y = tasks[f"x_{part}"][ids], tasks[f"y_{part}"][ids]
        return (self.model.apply(params, x).squeeze(-1) - y).square().mean(-1)

    def as_module(self, params: Tensor) -> torch.nn.Module:
        return self.model.to_module(params)  # optional: lets meta.algorithm=l2l_maml run it
