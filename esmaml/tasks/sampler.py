"""Draw tasks for a split from fixed seeded pools or fresh each time.

The pool semantics follow learn2learn's ``Taskset(num_tasks=...)``: ``-1`` draws a fresh task
every time, ``n > 0`` fixes a pool of ``n`` tasks (drawn once from the seed) and samples from it.
"""

from __future__ import annotations

import warnings

import torch

from esmaml.seeding import substream_generator
from esmaml.tasks.base import SPLITS, Split, TaskFamily, Tasks, validate_tasks


class TaskSampler:
    """Tasks for ``split`` from ``family``: pooled (``pool_sizes[split] > 0``) or fresh (-1)."""

    def __init__(
        self, family: TaskFamily, *, train_pool: int = -1, test_pool: int = 50, seed: int = 0
    ):
        for name, size in (("train_pool", train_pool), ("test_pool", test_pool)):
            if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
                raise ValueError(f"{name} must be -1 (fresh tasks) or a positive int, got {size!r}")
        self.family = family
        self.pool_sizes: dict[str, int] = {"train": train_pool, "test": test_pool}
        self.seed = int(seed)
        self._pools: dict[str, Tasks] = {}

    def pool(self, split: Split) -> Tasks | None:
        """The fixed pool of ``split`` (None when tasks are fresh)."""
        size = self.pool_sizes[_check_split(split)]
        if size < 0:
            return None
        if split not in self._pools:
            generator = substream_generator(self.seed, "task_pool", split)
            tasks = self.family.sample_tasks(size, split=split, generator=generator)
            self._pools[split] = validate_tasks(
                tasks, size, where=f"{type(self.family).__name__}.sample_tasks"
            )
        return self._pools[split]

    def sample(
        self, n: int, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        """``n`` tasks: uniformly from the pool (without replacement while n <= pool size)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of tasks must be a positive int, got {n!r}")
        pool = self.pool(split)
        if pool is None:
            tasks = self.family.sample_tasks(n, split=split, generator=generator)
            return validate_tasks(tasks, n, where=f"{type(self.family).__name__}.sample_tasks")
        size = self.pool_sizes[split]
        if n <= size:
            ids = torch.randperm(size, generator=generator)[:n]
        else:
            ids = torch.randint(size, (n,), generator=generator)
        return {key: value[ids.to(value.device)] for key, value in pool.items()}

    def evaluation_tasks(self, n: int, generator: torch.Generator | None = None) -> Tasks:
        """Held-out tasks: the first ``n`` of the test pool (the same every evaluation), or ``n``
        fresh test tasks when the test split has no pool."""
        pool = self.pool("test")
        if pool is not None:
            if n > self.pool_sizes["test"]:
                warnings.warn(
                    f"asked for {n} evaluation tasks but the test pool holds "
                    f"{self.pool_sizes['test']}; evaluating on those {self.pool_sizes['test']} "
                    "(raise test_pool or lower evaluation.num_tasks)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return {key: value[:n] for key, value in pool.items()}
        return self.sample(n, "test", generator)

    def state_dict(self) -> dict:
        return {"pool_sizes": dict(self.pool_sizes), "seed": self.seed, "pools": dict(self._pools)}

    def load_state_dict(self, state: dict) -> None:
        self.pool_sizes = dict(state["pool_sizes"])
        self.seed = int(state["seed"])
        # Checkpoints load on the CPU; the pools live where the family computes.
        device = self.family.device
        self._pools = {
            split: {key: value.to(device) for key, value in pool.items()}
            for split, pool in state["pools"].items()
        }


def _check_split(split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; valid: {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]
