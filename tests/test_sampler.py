"""Tests of ``TaskSampler``: seeded fixed pools, fresh tasks, evaluation tasks, malformed task
dicts from a family, and the state-dict round trip."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from esmaml.tasks.base import Phase, Split, TaskFamily, Tasks
from esmaml.tasks.sampler import TaskSampler
from esmaml.tasks.sine import SineRegression


class TinyFamily(TaskFamily):
    """Tasks ``{"goal": [n, 2], "support": [n, 3, 1]}``; counts ``sample_tasks`` calls."""

    num_params = 2

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros(2)

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        self.calls.append((n, split))
        return {
            "goal": torch.rand(n, 2, generator=generator),
            "support": torch.rand(n, 3, 1, generator=generator),
        }

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return (params - tasks["goal"][task_ids]).square().sum(-1)


def rows(tasks: Tasks) -> set[tuple[float, ...]]:
    """Each task as a hashable tuple (its goal), to compare task sets."""
    return {tuple(goal.tolist()) for goal in tasks["goal"]}


def assert_same_tasks(a: Tasks, b: Tasks) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------------------------
# pools


def test_pools_are_fixed_and_seeded() -> None:
    first = TaskSampler(TinyFamily(), train_pool=10, test_pool=5, seed=3)
    second = TaskSampler(TinyFamily(), train_pool=10, test_pool=5, seed=3)
    other = TaskSampler(TinyFamily(), train_pool=10, test_pool=5, seed=4)
    for split in ("train", "test"):
        pool = first.pool(split)
        assert pool is not None
        assert_same_tasks(pool, second.pool(split))  # type: ignore[arg-type]
        assert not torch.equal(pool["goal"], other.pool(split)["goal"])  # type: ignore[index]
        assert first.pool(split) is pool  # drawn once
    train, test = first.pool("train"), first.pool("test")
    assert train is not None and test is not None
    assert train["goal"].shape == (10, 2) and test["goal"].shape == (5, 2)
    assert not rows(train) & rows(test)  # train and test pools differ
    # The test pool does not depend on the train pool size (separate streams).
    assert_same_tasks(
        test, TaskSampler(TinyFamily(), train_pool=3, test_pool=5, seed=3).pool("test")
    )  # type: ignore[arg-type]


def test_pool_draws_from_the_family_once_per_split() -> None:
    family = TinyFamily()
    sampler = TaskSampler(family, train_pool=8, test_pool=4, seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        sampler.sample(3, "train", generator)
        sampler.evaluation_tasks(2)
    assert sorted(family.calls) == [(4, "test"), (8, "train")]


def test_pooled_samples_come_from_the_pool_without_replacement() -> None:
    sampler = TaskSampler(TinyFamily(), train_pool=10, test_pool=5, seed=0)
    pool = sampler.pool("train")
    assert pool is not None
    generator = torch.Generator().manual_seed(1)
    seen: set[tuple[float, ...]] = set()
    for _ in range(20):
        tasks = sampler.sample(6, "train", generator)
        assert tasks["goal"].shape == (6, 2) and tasks["support"].shape == (6, 3, 1)
        assert rows(tasks) <= rows(pool)
        assert len(rows(tasks)) == 6  # no repeats while n <= pool size
        seen |= rows(tasks)
    assert seen == rows(pool)  # every pooled task gets used
    # sampling is seeded by the generator passed in
    again = TaskSampler(TinyFamily(), train_pool=10, test_pool=5, seed=0)
    assert_same_tasks(
        sampler.sample(4, "train", torch.Generator().manual_seed(9)),
        again.sample(4, "train", torch.Generator().manual_seed(9)),
    )


def test_more_tasks_than_the_pool_draws_with_replacement() -> None:
    sampler = TaskSampler(TinyFamily(), train_pool=4, test_pool=5, seed=0)
    tasks = sampler.sample(12, "train", torch.Generator().manual_seed(0))
    assert tasks["goal"].shape == (12, 2)
    pool = sampler.pool("train")
    assert pool is not None
    assert rows(tasks) <= rows(pool)
    assert len(rows(tasks)) <= 4


def test_fresh_mode_draws_new_tasks_every_time() -> None:
    family = TinyFamily()
    sampler = TaskSampler(family, train_pool=-1, test_pool=-1, seed=0)
    assert sampler.pool("train") is None and sampler.pool("test") is None
    generator = torch.Generator().manual_seed(0)
    a, b = sampler.sample(5, "train", generator), sampler.sample(5, "train", generator)
    assert not rows(a) & rows(b)
    assert family.calls == [(5, "train"), (5, "train")]
    # the same generator state gives the same fresh tasks
    assert_same_tasks(
        sampler.sample(3, "test", torch.Generator().manual_seed(7)),
        sampler.sample(3, "test", torch.Generator().manual_seed(7)),
    )


def test_evaluation_tasks_are_fixed_across_calls() -> None:
    sampler = TaskSampler(TinyFamily(), train_pool=-1, test_pool=6, seed=2)
    first = sampler.evaluation_tasks(4)
    sampler.sample(3, "train", torch.Generator().manual_seed(0))
    sampler.sample(3, "test", torch.Generator().manual_seed(1))
    second = sampler.evaluation_tasks(4, torch.Generator().manual_seed(123))
    assert_same_tasks(first, second)
    test_pool = sampler.pool("test")
    assert test_pool is not None
    assert_same_tasks(first, {k: v[:4] for k, v in test_pool.items()})
    # fresh test split: evaluation tasks follow the generator
    fresh = TaskSampler(TinyFamily(), train_pool=-1, test_pool=-1, seed=2)
    assert_same_tasks(
        fresh.evaluation_tasks(3, torch.Generator().manual_seed(5)),
        fresh.evaluation_tasks(3, torch.Generator().manual_seed(5)),
    )


def test_evaluation_tasks_beyond_the_pool_warn() -> None:
    sampler = TaskSampler(TinyFamily(), test_pool=3, seed=0)
    with pytest.warns(RuntimeWarning, match="test pool holds 3"):
        tasks = sampler.evaluation_tasks(5)
    assert tasks["goal"].shape == (3, 2)


def test_sine_pools_are_seeded() -> None:
    family = SineRegression(shots=4, query_shots=3, hidden=(4,))
    a = TaskSampler(family, train_pool=5, test_pool=5, seed=0)
    b = TaskSampler(SineRegression(shots=4, query_shots=3, hidden=(4,)), train_pool=5, seed=0)
    assert_same_tasks(a.pool("train"), b.pool("train"))  # type: ignore[arg-type]
    assert not torch.equal(a.pool("train")["amplitude"], a.pool("test")["amplitude"])  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# malformed tasks and arguments


class BadFamily(TinyFamily):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        return self.make(n)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda n: torch.zeros(n, 2), TypeError, "dict of tensors"),
        (lambda n: [torch.zeros(n, 2)], TypeError, "dict of tensors"),
        (lambda n: {}, TypeError, "non-empty dict"),
        (lambda n: {"goal": [0.0] * n}, TypeError, "'goal' is a list, not a tensor"),
        (lambda n: {"goal": torch.zeros(n, 2), "x": torch.zeros(n + 1, 3)}, ValueError, "disagree"),
        (lambda n: {"goal": torch.zeros(n + 1, 2)}, ValueError, "asked for"),
        (lambda n: {"goal": torch.zeros(n, 0, 1)}, ValueError, "'goal' has an empty dimension"),
        (lambda n: {"goal": torch.tensor(1.0)}, ValueError, "0-dim"),
    ],
    ids=[
        "tensor",
        "list",
        "empty-dict",
        "non-tensor",
        "leading-dims",
        "wrong-count",
        "empty-dim",
        "0-dim",
    ],
)
@pytest.mark.parametrize("pooled", [True, False])
def test_malformed_tasks_give_clear_errors(
    make: Any, error: type, message: str, pooled: bool
) -> None:
    sampler = TaskSampler(BadFamily(make), train_pool=4 if pooled else -1, seed=0)
    with pytest.raises(error, match=message) as info:
        sampler.sample(4, "train", torch.Generator().manual_seed(0))
    assert "BadFamily.sample_tasks" in str(info.value)


@pytest.mark.parametrize("size", [0, -2, 1.5, True, "10"])
def test_pool_sizes_are_validated(size: Any) -> None:
    with pytest.raises(ValueError, match="train_pool"):
        TaskSampler(TinyFamily(), train_pool=size)
    with pytest.raises(ValueError, match="test_pool"):
        TaskSampler(TinyFamily(), test_pool=size)


def test_bad_requests_are_rejected() -> None:
    sampler = TaskSampler(TinyFamily(), train_pool=4)
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive int"):
            sampler.sample(n, "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split='valid' is unknown"):
        sampler.sample(2, "valid")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# state


def test_state_dict_round_trip() -> None:
    sampler = TaskSampler(TinyFamily(), train_pool=6, test_pool=4, seed=5)
    train, test = sampler.pool("train"), sampler.pool("test")
    state = sampler.state_dict()
    family = TinyFamily()
    restored = TaskSampler(family, train_pool=-1, test_pool=50, seed=0)
    restored.load_state_dict(state)
    assert restored.pool_sizes == {"train": 6, "test": 4}
    assert restored.seed == 5
    assert_same_tasks(restored.pool("train"), train)  # type: ignore[arg-type]
    assert_same_tasks(restored.pool("test"), test)  # type: ignore[arg-type]
    assert family.calls == []  # pools come from the state, not redrawn
    assert_same_tasks(
        restored.sample(3, "train", torch.Generator().manual_seed(2)),
        sampler.sample(3, "train", torch.Generator().manual_seed(2)),
    )
    # the state survives torch.save / torch.load (checkpoints)
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    again = TaskSampler(TinyFamily())
    again.load_state_dict(torch.load(buffer, weights_only=False))
    assert_same_tasks(again.pool("train"), train)  # type: ignore[arg-type]
