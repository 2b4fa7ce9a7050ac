"""Split invariance of an evaluation (docs/ray.md): a row's numbers never depend on the other
rows of its batch, and the observation statistics of a population do not depend on how it was
split into calls. End to end (local == Ray x1 == Ray x2, bitwise): tests/test_ray.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import envs
from esmaml.rl import MLPPolicy, ObservationNormalizer, RLFamily, RunningStats, rollout
from esmaml.rl.normalization import pairwise_sum
from esmaml.rl.rollout import PAD_ELEMENTS, padded_rows

SPLITS = [(0, 1), (0, 3), (1, 6), (5, 37), (36, 37)]  # sub-batches of a batch of 37 rows


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pairwise_sum_and_row_statistics_do_not_depend_on_the_other_columns() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(103, 37, 5, generator=generator, dtype=torch.float64) * 3 + 100
    mask = torch.rand(103, 37, generator=generator) < 0.8
    full_sum = pairwise_sum(values)
    full = RunningStats.from_rows(values, mask)
    for lo, hi in SPLITS:
        assert torch.equal(pairwise_sum(values[:, lo:hi].contiguous()), full_sum[lo:hi])
        part = RunningStats.from_rows(values[:, lo:hi].contiguous(), mask[:, lo:hi])
        for key in ("count", "mean", "m2"):
            assert torch.equal(getattr(part, key), getattr(full, key)[lo:hi]), key
    torch.testing.assert_close(full_sum, values.sum(0), rtol=1e-12, atol=0)
    # the per-column statistics merge to the one-pass statistics of everything
    one_pass = RunningStats.from_batch(values, mask)
    merged = full.reduce()
    assert float(merged.count) == float(one_pass.count) == int(mask.sum())
    torch.testing.assert_close(merged.mean, one_pass.mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(merged.m2, one_pass.m2, rtol=1e-10, atol=0)


def test_merging_with_empty_statistics_is_exact() -> None:
    values = torch.randn(7, 3, dtype=torch.float64) / 3
    stats = RunningStats.from_batch(values)
    empty = RunningStats.zeros(3)
    for merged in (empty.merge(stats), stats.merge(empty)):
        for key in ("count", "mean", "m2"):
            assert torch.equal(getattr(merged, key), getattr(stats, key)), key


@pytest.mark.parametrize("episodes", [1, 3])
def test_torch_rollout_rows_do_not_depend_on_the_batch(episodes: int) -> None:
    """MetaPendulum (sin, cos) under a tanh MLP: a row's returns and statistics are the same
    bits in any sub-batch (the batch is padded; sums over time are pairwise)."""
    env = envs.MetaPendulum(check_finite=False)
    policy = MLPPolicy(env.observation_dim, env.action_dim, (8,), "tanh", -2.0, 2.0)
    generator = torch.Generator().manual_seed(1)
    n = 37
    params = torch.randn(n, policy.num_params, generator=generator)
    task = env.sample_task_params(n, generator)
    batch_task = {k: v.unsqueeze(1).expand(n, episodes, *v.shape[1:]) for k, v in task.items()}
    start = env.reset(batch_task, generator)

    def play(lo: int, hi: int) -> tuple[torch.Tensor, RunningStats]:
        result = rollout(
            env,
            policy,
            params[lo:hi],
            {k: v[lo:hi] for k, v in task.items()},
            episodes=episodes,
            horizon=30,
            initial_state={k: v[lo:hi] for k, v in start.items()},
        )
        assert result.episode_observation_stats is not None
        return result.returns, result.episode_observation_stats

    returns, stats = play(0, n)
    for lo, hi in SPLITS:
        part_returns, part_stats = play(lo, hi)
        assert torch.equal(part_returns, returns[lo:hi])
        rows = slice(lo * episodes, hi * episodes)
        for key in ("count", "mean", "m2"):
            assert torch.equal(getattr(part_stats, key), getattr(stats, key)[rows]), key


def test_padded_rows() -> None:
    assert padded_rows(1) == PAD_ELEMENTS
    assert padded_rows(64) == 64 and padded_rows(65) == 128
    assert padded_rows(5, episodes=3) == 64  # 64 * 3 is the first multiple of 64 above 15
    assert padded_rows(3, episodes=32) == 4


def test_keyed_statistics_merge_in_member_order_whatever_the_split() -> None:
    """Per-member statistics observed in any grouping and order give the same pending bits."""
    generator = torch.Generator().manual_seed(2)
    values = torch.randn(20, 12, 3, generator=generator, dtype=torch.float64) + 5
    per_episode = RunningStats.from_rows(values)  # 12 episodes: members 0..5, two each
    keys = torch.arange(6).repeat_interleave(2)

    def pending(groups: list[list[int]]) -> RunningStats:
        normalizer = ObservationNormalizer(3)
        for group in groups:
            index = torch.tensor(group)
            normalizer.observe(per_episode[index], keys[index])
        return normalizer.pending

    whole = pending([list(range(12))])
    for groups in (
        [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]],
        [[10, 11, 2, 3], list(range(2)) + list(range(4, 10))],
    ):
        split = pending(groups)
        for key in ("count", "mean", "m2"):
            assert torch.equal(getattr(split, key), getattr(whole, key)), key


def test_family_files_query_statistics_per_member() -> None:
    """Inside ``members(rows)`` a loss call's episodes are filed under their members: the
    pending statistics of two half-population calls equal those of one call."""
    family = RLFamily("Navigation2D", horizon=10, episodes=2)
    generator = torch.Generator().manual_seed(3)
    params = torch.randn(6, family.num_params, generator=generator)
    tasks = family.sample_tasks(3, generator=generator)
    ids = torch.arange(6) % 3

    def pending(splits: list[slice]) -> RunningStats:
        family.normalizer.reset_pending()
        for part in splits:
            rows = torch.arange(6)[part]
            with family.members(rows):
                family.loss(params[part], tasks, ids[part])
        return family.normalizer.pending

    whole = pending([slice(0, 6)])
    assert float(whole.count) == 6 * 2 * 10
    split = pending([slice(3, 6), slice(0, 3)])
    for key in ("count", "mean", "m2"):
        assert torch.equal(getattr(split, key), getattr(whole, key)), key
