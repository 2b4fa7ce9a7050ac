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

Split invariance (``docs/ray.md``): the rollouts give one set of statistics per episode
(:meth:`RunningStats.from_rows`, whose sums are balanced trees of elementwise additions, so an
episode's numbers never depend on the other episodes of its batch), and ES-MAML's evaluations
file them under their population member (:meth:`ObservationNormalizer.observe` with ``keys``).
The iteration's statistics are then one fixed function of the member-ordered list
(:meth:`RunningStats.reduce`): the same bits whether the population ran in one call, in one
process or in sub-batches on any number of Ray workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def pairwise_sum(values: Tensor) -> Tensor:
    """``values [T, *S]`` summed over dim 0 as a balanced tree of elementwise additions:
    ``x[:h] + x[h:2h]`` (``h = T // 2``, an odd last row carried to the next level) until one row
    is left.

    Each output element is then a fixed sequence of IEEE additions of its own column, decided by
    ``T`` alone: unlike ``torch.sum(0)``, whose blocking (and so rounding) depends on the other
    columns (measured: the sum of one column of ``[T, R, d]`` changes with ``R``), it gives the
    same bits for a column whatever tensor it sits in. Rounding error grows as ``log T``.
    """
    if values.shape[0] == 0:
        return values.new_zeros(values.shape[1:])
    while values.shape[0] > 1:
        half = values.shape[0] // 2
        summed = values[:half] + values[half : 2 * half]
        values = torch.cat([summed, values[2 * half :]]) if values.shape[0] % 2 else summed
    return values[0]


@dataclass
class RunningStats:
    """Count, mean and M2 (sum of squared deviations) in float64; batched when ``count`` has
    leading dims ``[*R]`` (then ``mean`` and ``m2`` are ``[*R, dim]``): one set per episode or
    per population member, merged elementwise."""

    count: Tensor  # [*R] float64
    mean: Tensor  # [*R, dim] float64
    m2: Tensor  # [*R, dim] float64

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

    @classmethod
    def from_rows(cls, values: Tensor, mask: Tensor | None = None) -> RunningStats:
        """Two-pass statistics of each column ``r`` of ``values [T, R, dim]`` over its ``T``
        samples (those where ``mask [T, R]`` is True), batched ``[R]``:

            n_r = sum_t w_tr,   mean_r = sum_t w_tr x_tr / n_r,
            M2_r = sum_t w_tr (x_tr - mean_r)^2

        with every sum a :func:`pairwise_sum`: column ``r``'s numbers are the same whatever
        the other columns are (a rollout's episode does not depend on its batch)."""
        x = values.double()
        if mask is None:
            weights = torch.ones(x.shape[:2], dtype=torch.float64, device=x.device)
        else:
            keep = mask.bool()
            x = torch.where(keep[..., None], x, 0.0)  # masked samples may be non-finite
            weights = keep.double()
        count = pairwise_sum(weights)
        mean = pairwise_sum(weights[..., None] * x) / count.clamp_min(1)[..., None]
        m2 = pairwise_sum(weights[..., None] * (x - mean).square())
        return cls(count, mean, m2)

    def merge(self, other: RunningStats) -> RunningStats:
        """Exact combination (Chan et al. 1979), elementwise over batched statistics:

            n = n_a + n_b,   mean = mean_a + d (n_b / n),   M2 = M2_a + M2_b + d^2 (n_a n_b / n)

        with ``d = mean_b - mean_a``. The ratios make an empty side an exact identity
        (``n_b / n`` is 0 or 1)."""
        count = self.count + other.count
        safe = count.clamp_min(1)
        delta = other.mean - self.mean
        share = (other.count / safe).unsqueeze(-1)
        mean = self.mean + delta * share
        cross = (self.count * other.count / safe).unsqueeze(-1)
        m2 = self.m2 + other.m2 + delta.square() * cross
        return RunningStats(count, mean, m2)

    def __len__(self) -> int:
        """The number of sets in batched statistics ``[R]``."""
        return self.count.shape[0]

    def __getitem__(self, index: slice | Tensor) -> RunningStats:
        """Sets ``index`` of batched statistics ``[R]``."""
        return RunningStats(self.count[index], self.mean[index], self.m2[index])

    @classmethod
    def cat(cls, parts: list[RunningStats]) -> RunningStats:
        """Batched statistics ``[R]`` one after the other."""
        keys = ("count", "mean", "m2")
        return cls(*(torch.cat([getattr(part, key) for part in parts]) for key in keys))

    def reduce(self) -> RunningStats:
        """Batched statistics ``[R]`` merged into one set, as a balanced tree in their order
        (set ``i`` with set ``h + i``, ``h = R // 2``, level by level, as :func:`pairwise_sum`):
        a fixed function of the ordered list."""
        stats = self
        if len(stats) == 0:
            return RunningStats.zeros(self.mean.shape[-1], self.mean.device)
        while len(stats) > 1:
            half = len(stats) // 2
            merged = stats[:half].merge(stats[half : 2 * half])
            stats = RunningStats.cat([merged, stats[2 * half :]]) if len(stats) % 2 else merged
        return stats[0]

    @property
    def var(self) -> Tensor:
        return self.m2 / self.count.clamp_min(1).unsqueeze(-1)

    def state_dict(self) -> dict[str, Tensor]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Tensor], device: torch.device | str | None = None
    ) -> RunningStats:
        return cls(*(state[key].to(device).clone() for key in ("count", "mean", "m2")))


@dataclass(frozen=True)
class CollectedStatistics:
    """What a normaliser gathered since its pending statistics were reset (a Ray worker's
    share of an iteration): the merged unkeyed statistics and the per-member ones."""

    unkeyed: RunningStats
    keys: Tensor  # [R] population member of each set, in observation order
    keyed: RunningStats  # [R]


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
        self._unkeyed = RunningStats.zeros(dim, device)
        self._keyed: list[tuple[Tensor, RunningStats]] = []
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

    def observe(self, stats: RunningStats, keys: Tensor | None = None) -> None:
        """Accumulate statistics seen during the current iteration.

        ``keys=None``: one set of statistics, merged into the pending ones in call order.
        ``keys [R]``: batched statistics ``[R]``, set ``r`` of population member ``keys[r]``;
        they are merged at :attr:`pending` in member order (stable: a member's own sets in
        the order observed), so the result does not depend on which sub-batch, call or
        process observed them.
        """
        if not self.enabled:
            return
        if keys is None:
            self._unkeyed = self._unkeyed.merge(stats)
        else:
            if keys.shape != stats.count.shape or keys.dim() != 1:
                raise ValueError(
                    f"keys must be [R] for statistics [R], got {tuple(keys.shape)} and "
                    f"{tuple(stats.count.shape)}"
                )
            self._keyed.append((keys.to(self.stats.mean.device), stats))

    def collected(self) -> CollectedStatistics:
        """The pending statistics as gathered, unmerged (a worker sends them to the driver)."""
        keys, keyed = self._keyed_list()
        return CollectedStatistics(self._unkeyed, keys, keyed)

    def observe_collected(self, collected: CollectedStatistics) -> None:
        """Accumulate another normaliser's :meth:`collected` statistics."""
        self.observe(collected.unkeyed)
        if len(collected.keys):
            self.observe(collected.keyed, collected.keys)

    def _keyed_list(self) -> tuple[Tensor, RunningStats]:
        device = self.stats.mean.device
        if not self._keyed:
            empty = torch.zeros(0, dtype=torch.float64, device=device)
            stats = RunningStats(empty, empty.new_zeros(0, self.dim), empty.new_zeros(0, self.dim))
            return torch.zeros(0, dtype=torch.long, device=device), stats
        keys = torch.cat([k for k, _ in self._keyed])
        return keys, RunningStats.cat([s for _, s in self._keyed])

    @property
    def pending(self) -> RunningStats:
        """The iteration's statistics so far: the unkeyed ones merged with the keyed ones,
        those reduced in member order (:meth:`RunningStats.reduce` of the stably sorted list)."""
        keys, keyed = self._keyed_list()
        if not len(keys):
            return self._unkeyed
        order = torch.sort(keys, stable=True).indices
        return self._unkeyed.merge(keyed[order].reduce())

    def commit(self) -> None:
        """Fold the iteration's statistics in (called between iterations)."""
        pending = self.pending
        if self.enabled and float(pending.count) > 0:
            self.stats = self.stats.merge(pending)
            self._cache = None
        self.reset_pending()

    def reset_pending(self) -> None:
        """Forget the iteration's statistics."""
        self._unkeyed = RunningStats.zeros(self.dim, self.stats.mean.device)
        self._keyed = []

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {"stats": self.stats.state_dict(), "pending": self.pending.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        # Checkpoints load on the CPU; keep the statistics on this normaliser's device.
        device = self.stats.mean.device
        self.stats = RunningStats.from_state_dict(state["stats"], device)
        self._unkeyed = RunningStats.from_state_dict(state["pending"], device)
        self._keyed = []
        self._cache = None
