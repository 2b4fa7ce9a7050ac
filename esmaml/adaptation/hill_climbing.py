"""Hill-climbing adaptation: propose ``theta_best + sigma g``, accept only strict improvements.

Modes (ES-MAML):
- ``average``: each of the K proposals is scored by the mean of ``evaluations`` losses (useful
  when the loss is noisy, e.g. RL rollouts); queries ``(K + 1) * evaluations``.
- ``batch``: each of the K rounds evaluates ``evaluations`` proposals and keeps the best;
  queries ``1 + K * evaluations``.
Rounds are sequential (each starts from the current best); within a round everything is batched.

The incumbent keeps the value it was accepted with and is never re-evaluated, as in the
google-research reference (``HillClimbAdaptation``: the pivot becomes the stored value): each
query buys a new proposal, not a second look at the old one. On a noisy loss a lucky evaluation
can therefore hold the incumbent; ``mode='average'`` with ``evaluations > 1`` is the remedy the
reference offers (each evaluation of a point gets its own rollouts).
"""

from __future__ import annotations

import torch
from torch import Tensor

from esmaml.adaptation.base import (
    AdaptationOperator,
    check_positive_float,
    check_positive_int,
    num_tasks,
    per_task_generator,
)
from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.noise import sample_noise


class HillClimbingAdaptation(AdaptationOperator):
    """Greedy hill climbing on the adaptation loss."""

    def __init__(
        self,
        num_queries: int = 20,
        sigma: float = 0.1,
        *,
        mode: str = "batch",
        evaluations: int = 1,
        num_steps: int = 1,
    ):
        self.num_queries = check_positive_int("num_queries", num_queries)
        self.sigma = check_positive_float("sigma", sigma)
        if mode not in ("average", "batch"):
            raise ValueError(f"mode={mode!r} is unknown; valid: average, batch")
        self.mode = mode
        self.evaluations = check_positive_int("evaluations", evaluations)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        self.num_steps = num_steps

    @property
    def queries_per_step(self) -> int:
        if self.mode == "average":
            return (self.num_queries + 1) * self.evaluations
        return 1 + self.num_queries * self.evaluations

    def _score(
        self,
        family: TaskFamily,
        candidates: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """Loss of ``candidates [*B, m, D]`` on ``task_ids [*B, 1 or m]`` -> ``[*B, m]``."""
        return family.loss(candidates, tasks, task_ids, phase="adapt", generator=generator)

    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        generator = per_task_generator(substream(seed, "directions"), params.device)
        rollout_generator = per_task_generator(substream(seed, "rollouts"), params.device)
        m = self.evaluations
        per_round = 1 if self.mode == "average" else m
        # [tasks, K, per_round, D], gathered by task id: members sharing a task share proposals.
        directions = sample_noise(
            (num_tasks(tasks), self.num_queries, per_round, params.shape[-1]),
            generator=generator,
            device=params.device,
            dtype=params.dtype,
        )[task_ids]
        if self.mode == "average" and m > 1:
            # Evaluation j of a point runs on copy j of its task (id + j n): a family that draws
            # start states per task id (RL) then gives the m evaluations their own rollouts.
            # On one task id they would be identical, and averaging would cost m times the
            # queries and remove no noise.
            n = num_tasks(tasks)
            score_tasks = {k: v.repeat(m, *([1] * (v.ndim - 1))) for k, v in tasks.items()}
            score_ids = task_ids.unsqueeze(-1) + n * torch.arange(m, device=task_ids.device)
        else:
            score_tasks, score_ids = tasks, task_ids.unsqueeze(-1)
        best = params
        repeats = m if self.mode == "average" else 1
        best_loss = self._score(
            family,
            best.unsqueeze(-2).expand(*best.shape[:-1], repeats, best.shape[-1]),
            score_tasks,
            score_ids,
            rollout_generator,
        ).mean(-1)
        for k in range(self.num_queries):
            proposals = best.unsqueeze(-2) + self.sigma * directions[..., k, :, :]  # [*B, r, D]
            if self.mode == "average":  # the round's one proposal, evaluated m times
                proposals = proposals.expand(*best.shape[:-1], m, best.shape[-1])
            losses = self._score(family, proposals, score_tasks, score_ids, rollout_generator)
            if self.mode == "average":
                candidate, candidate_loss = proposals[..., 0, :], losses.mean(-1)
            elif per_round == 1:  # one proposal per round: it is the round's best
                candidate, candidate_loss = proposals[..., 0, :], losses[..., 0]
            else:
                candidate_loss, index = losses.min(-1)
                candidate = torch.gather(
                    proposals, -2, index[..., None, None].expand(*index.shape, 1, best.shape[-1])
                ).squeeze(-2)
            better = candidate_loss < best_loss  # strict: ties and NaN keep the incumbent
            best = torch.where(better.unsqueeze(-1), candidate, best)
            best_loss = torch.where(better, candidate_loss, best_loss)
        return best
