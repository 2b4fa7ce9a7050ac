"""Running observation normalisation (ES-MAML, OpenAI ES): mergeable statistics.

Statistics are (count, mean, M2) in float64 and merge exactly by Chan et al.'s parallel
formula, so workers' partial statistics combine into the two-pass result. They are frozen within
an iteration: observations seen during it accumulate in ``pending`` and ``commit()`` folds them
in. Two modes:

- ``preserving`` (default): the reference's normalisation, ``(s - mean) / std`` with std 0 read
  as 1, no epsilon and no clipping. The RL family feeds it the query rollouts only (the
  post-adaptation rollouts of training evaluations, as the reference does) and, when the
  statistics move, re-expresses the policy's first layer so that theta keeps computing the same
  function (:meth:`esmaml.rl.policies.MLPPolicy.rebase_input`). Without that, a meta-policy that
  shrinks the state spread shrinks the running std, the normaliser rescales its inputs, and
  the policy executed is no longer the one whose gradient was estimated.
- ``reference``: the same statistics and transform, theta left as it is when they move (the
  google-research code exactly: its policy's function changes between iterations).
- ``legacy``: every rollout's observations, ``(s - mean) / sqrt(var + eps)`` clipped to
  +-clip, and theta left as it is when the statistics move (esmaml before the fix; kept for the
  ablation in results/rl.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RunningStats:
    count: Tensor  # [] float64
    mean: Tensor  # [dim] float64
    m2: Tensor  # [dim] float64

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str = "cpu") -> RunningStats:
        z = torch.zeros(dim, dtype=torch.float64, device=device)
        return cls(torch.zeros((), dtype=torch.float64, device=device), z, z.clone())

    @classmethod
    def from_batch(cls, values: Tensor, mask: Tensor | None = None) -> RunningStats:
        """Statistics of ``values [..., dim]`` (rows where ``mask`` is True)."""
        flat = values.reshape(-1, values.shape[-1]).double()
        if mask is None:
            weights = torch.ones(flat.shape[0], dtype=torch.float64, device=flat.device)
        else:
            keep = mask.reshape(-1).bool()
            # Masked rows are ignored even when non-finite (0 * nan would poison the sums).
            flat = torch.where(keep[:, None], flat, 0.0)
            weights = keep.double()
        count = weights.sum()
        mean = (weights[:, None] * flat).sum(0) / count.clamp_min(1)
        m2 = (weights[:, None] * (flat - mean).square()).sum(0)
        return cls(count, mean, m2)

    def merge(self, other: RunningStats) -> RunningStats:
        """Exact combination (Chan et al. 1979)."""
        count = self.count + other.count
        safe = count.clamp_min(1)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / safe
        m2 = self.m2 + other.m2 + delta.square() * self.count * other.count / safe
        return RunningStats(count, mean, m2)

    @property
    def var(self) -> Tensor:
        return self.m2 / self.count.clamp_min(1)

    def state_dict(self) -> dict[str, Tensor]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Tensor], device: torch.device | str | None = None
    ) -> RunningStats:
        return cls(*(state[key].to(device).clone() for key in ("count", "mean", "m2")))


NORMALIZER_MODES: tuple[str, ...] = ("preserving", "reference", "legacy")


class ObservationNormalizer:
    """``(obs - mean) * inv_std`` from the committed statistics (see the module docstring for
    the two modes)."""

    def __init__(
        self,
        dim: int,
        *,
        enabled: bool = True,
        mode: str = "preserving",
        clip: float = 10.0,
        eps: float = 1e-8,
        device: torch.device | str = "cpu",
    ):
        if mode not in NORMALIZER_MODES:
            raise ValueError(f"mode={mode!r} is unknown; valid: {', '.join(NORMALIZER_MODES)}")
        self.dim, self.enabled, self.mode, self.clip, self.eps = dim, enabled, mode, clip, eps
        self.stats = RunningStats.zeros(dim, device)
        self.pending = RunningStats.zeros(dim, device)
        self._cache: tuple[Tensor, Tensor] | None = None

    def __call__(self, obs: Tensor) -> Tensor:
        return self.frozen_transform(obs.dtype)(obs)

    def affine(self) -> tuple[Tensor, Tensor] | None:
        """``(mean, inv_std)`` in float64 of the committed statistics, or None while the
        transform is the identity (disabled, or fewer than 2 observations)."""
        if not self.enabled or float(self.stats.count) < 2:
            return None
        if self.mode == "legacy":
            return self.stats.mean, (self.stats.var + self.eps).rsqrt()
        std = self.stats.var.sqrt()
        return self.stats.mean, torch.where(std > 0, std, torch.ones_like(std)).reciprocal()

    def frozen_transform(self, dtype: torch.dtype = torch.float32) -> Callable[[Tensor], Tensor]:
        """The normalisation as a function, resolved once (no host sync per step)."""
        affine = self.affine()
        if affine is None:
            return lambda obs: obs
        if self._cache is None or self._cache[0].dtype != dtype:
            mean, inv_std = affine
            # (obs - mean) * inv_std as obs * inv_std + shift: one fused op per call.
            self._cache = ((-mean * inv_std).to(dtype), inv_std.to(dtype))
        shift, inv_std = self._cache
        clip = self.clip if self.mode == "legacy" else None
        # Statistics broadcast over a batch along the tiny observation dim are slow per step;
        # copies expanded to the batch's shape (made once per shape) keep each op contiguous.
        expanded: dict[torch.Size, tuple[Tensor, Tensor]] = {}

        def transform(obs: Tensor) -> Tensor:
            shape = obs.shape
            if shape not in expanded:
                expanded.clear()
                expanded[shape] = (
                    shift.expand(shape).contiguous(),
                    inv_std.expand(shape).contiguous(),
                )
            offset, scale = expanded[shape]
            out = torch.addcmul(offset, obs, scale)
            return out if clip is None else out.clamp_(-clip, clip)

        return transform

    def observe(self, stats: RunningStats) -> None:
        """Accumulate statistics seen during the current iteration."""
        if self.enabled:
            self.pending = self.pending.merge(stats)

    def commit(self) -> None:
        """Fold the iteration's statistics in (called between iterations)."""
        if self.enabled and float(self.pending.count) > 0:
            self.stats = self.stats.merge(self.pending)
            self.pending = RunningStats.zeros(self.dim, self.stats.mean.device)
            self._cache = None

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {"stats": self.stats.state_dict(), "pending": self.pending.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        # Checkpoints load on the CPU; keep the statistics on this normaliser's device.
        device = self.stats.mean.device
        self.stats = RunningStats.from_state_dict(state["stats"], device)
        self.pending = RunningStats.from_state_dict(state["pending"], device)
        self._cache = None
