"""The Ray backend: ES-MAML's population evaluated by a pool of Ray actors, fault tolerant.

Each actor (:class:`EvaluationWorker`) builds its own family and adaptation operator once, at
creation, from a picklable factory (the trainer's is
:class:`esmaml.training.builders.ComponentFactory`). Protocol of one iteration
(one :meth:`RayEvaluator.evaluate` call):

- driver -> object store, once: :class:`IterationInputs` = theta ``[D]``, the population seed,
  the :class:`PopulationSpec`, the task tensors ``{k: [n, ...]}``, the inner seed and the
  family's :meth:`~esmaml.tasks.base.TaskFamily.replica_state` (RL: the committed
  observation-normalisation statistics). Never a noise tensor: workers regenerate
  the directions from the seed with ES-MAML's own arithmetic (``population_rows``).
- driver -> worker, per sub-batch: that object's reference and a range of directions
  ``[start, stop)``; a sub-batch holds both members of each antithetic pair.
- worker -> driver: :class:`SubBatchResult` = the values of the sub-batch's members, the
  family's :meth:`~esmaml.tasks.base.TaskFamily.collected_state` (RL: the statistics of the
  observations its rollouts saw, one set per episode, filed under its member), and its env
  steps.

Sub-batches are handed out dynamically: a queue, one sub-batch per idle worker, ``ray.wait``
for the first to finish. The driver adds the results in sub-batch order (not completion
order); the RL statistics are merged in population-member order whatever the sub-batches, so
the results do not depend on timing or on the split (bitwise, see ``docs/ray.md``).

Faults: when a worker dies (actor death, worker crash, node death, a lost object) its sub-batch
goes back on the queue and runs on the next idle worker, up to ``max_retries`` more times, and
the worker is replaced by a fresh actor (it takes work once it is up). A rerun gives identical
values: same rows, same seeds, same code. A sub-batch that fails more often is dropped: its
members' values are NaN (ES-MAML, built with ``nan_policy='drop'``, drops those pairs) as long
as the dropped share of the population is at most ``max_failed_fraction``; beyond it the
evaluation raises :class:`EvaluationError`. An exception raised by the evaluation code itself
is a bug, not a fault: it is raised at once.

Ray is imported only when the evaluator starts, so ``import esmaml`` never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator
from esmaml.evaluators.base import (
    EvaluationError,
    Evaluator,
    PopulationSpec,
    member_losses,
    population_rows,
    regenerate_noise,
)
from esmaml.tasks.base import TaskFamily, Tasks

logger = logging.getLogger(__name__)

#: What a worker builds its replicas from: a picklable zero-argument factory.
Components = Callable[[], tuple[TaskFamily, AdaptationOperator]]


@dataclass(frozen=True)
class IterationInputs:
    """Everything one iteration sends to the workers (once, through the object store)."""

    theta: Tensor
    seed: int
    spec: PopulationSpec
    tasks: Tasks
    inner_seed: int
    replica_state: Any  # the driver family's replica_state()


@dataclass(frozen=True)
class SubBatchResult:
    """What a worker returns for one sub-batch."""

    values: Tensor  # [R], in the order of spec.rows(range(start, stop))
    collected_state: Any  # the worker family's collected_state()
    env_steps: int


class EvaluationWorker:
    """The body of a Ray actor: a family and an adaptation operator, built once."""

    def __init__(self, components: Components):
        self.family, self.adaptation = components()
        self._noise_key: tuple[Any, ...] | None = None
        self._noise: Tensor | None = None

    def pid(self) -> int:
        """The worker's process id (also the readiness probe of a new actor)."""
        return os.getpid()

    def evaluate(self, inputs: IterationInputs, start: int, stop: int) -> SubBatchResult:
        """Values of the members that use directions ``start..stop-1``."""
        family, spec = self.family, inputs.spec
        device = family.device
        theta = inputs.theta.to(device)
        tasks = {key: value.to(device) for key, value in inputs.tasks.items()}
        # The driver's state (RL: committed statistics); what this sub-batch collects starts
        # afresh.
        family.load_replica_state(inputs.replica_state)
        key = (inputs.seed, spec, theta.shape[-1], theta.dtype)
        if key != self._noise_key:  # one draw per iteration, whatever the sub-batches
            self._noise = regenerate_noise(inputs.seed, spec, theta.shape[-1], device, theta.dtype)
            self._noise_key = key
        assert self._noise is not None
        directions = range(start, stop)
        rows = torch.tensor(spec.rows(directions), device=device)
        steps_before = family.env_steps
        values = member_losses(
            family,
            self.adaptation,
            population_rows(theta, self._noise, spec, directions),
            rows,
            tasks,
            inputs.inner_seed,
            num_perturbations=spec.num_perturbations,
            members=spec.size,
            common_random_numbers=spec.common_random_numbers,
        )
        return SubBatchResult(
            values.detach().cpu(),
            family.collected_state(),
            family.env_steps - steps_before,
        )


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EvaluationError(
            "evaluator.backend=ray needs Ray: pip install 'esmaml[ray]'"
        ) from None
    return ray


def _is_fault(error: BaseException) -> bool:
    """A lost worker or object (retry elsewhere), not an error of the evaluation code."""
    from ray import exceptions

    if isinstance(error, exceptions.RayTaskError):
        return False
    return isinstance(
        error,
        (
            exceptions.RayActorError,
            exceptions.WorkerCrashedError,
            exceptions.NodeDiedError,
            exceptions.ObjectLostError,
        ),
    )


def _check(
    name: str, value: object, ok: Callable[[float], bool], valid: str, *, integer: bool = False
) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
        raise ValueError(f"{name} must be {valid}, got {value!r}")


class RayEvaluator(Evaluator):
    """Evaluates the population on ``num_workers`` Ray actors (see the module docstring).

    Args:
        family: the driver's family: it supplies its ``replica_state()`` to the workers and
            receives their ``collected_state()`` (``merge_collected_state``) and env steps.
        components: what each worker builds its family and operator from: a picklable
            zero-argument factory returning ``(family, adaptation)``, e.g.
            :class:`esmaml.training.builders.ComponentFactory` of a config.
        num_workers: actors in the pool.
        address: the cluster: ``None`` starts a new local one unless Ray is already
            initialised in this process (then that one is used); ``'auto'`` joins the cluster
            ``ray start`` runs on this machine; ``'HOST:PORT'`` joins a cluster's head node.
        num_cpus_per_worker / num_gpus_per_worker: each actor's Ray resources.
        sub_batch_size: directions (antithetic pairs) per sub-batch; default: one sub-batch
            per worker. A batched rollout costs nearly the same for 10 or 100 members (its
            Python loop over the horizon dominates), so fewer, larger sub-batches are fastest
            for the torch-native envs; smaller ones balance uneven machines and expensive
            per-member rollouts (MuJoCo), and a lost one costs less to rerun or drop.
        max_retries: reruns of a sub-batch whose worker died before it is dropped.
        max_failed_fraction: the share of the population whose evaluations may be dropped in
            one iteration (needs ES-MAML's ``nan_policy='drop'``); the reference tolerated 0.4.
        start_timeout_s: how long new actors may take to come up (placement, imports, building
            the family) before the evaluator gives up with :class:`EvaluationError`.

    ``after_dispatch`` (default None), when set, is called with the evaluator once per
    :meth:`evaluate`, right after the first sub-batches were handed out: a fault-injection
    point for tests.
    """

    def __init__(
        self,
        family: TaskFamily,
        components: Components,
        *,
        num_workers: int = 2,
        address: str | None = None,
        num_cpus_per_worker: float = 1.0,
        num_gpus_per_worker: float = 0.0,
        sub_batch_size: int | None = None,
        max_retries: int = 2,
        max_failed_fraction: float = 0.0,
        start_timeout_s: float = 300.0,
    ):
        _check("num_workers", num_workers, lambda v: v >= 1, "an int >= 1", integer=True)
        if address is not None and not isinstance(address, str):
            raise ValueError(f"address must be null or a string like 'auto', got {address!r}")
        for name, value in (
            ("num_cpus_per_worker", num_cpus_per_worker),
            ("num_gpus_per_worker", num_gpus_per_worker),
        ):
            _check(name, value, lambda v: v >= 0, "a number >= 0")
        if sub_batch_size is not None:
            _check(
                "sub_batch_size",
                sub_batch_size,
                lambda v: v >= 1,
                "null or an int >= 1",
                integer=True,
            )
        _check("max_retries", max_retries, lambda v: v >= 0, "an int >= 0", integer=True)
        _check(
            "max_failed_fraction", max_failed_fraction, lambda v: 0 <= v < 1, "a number in [0, 1)"
        )
        _check("start_timeout_s", start_timeout_s, lambda v: v > 0, "a positive number")
        self.family, self.components = family, components
        self.num_workers, self.address = num_workers, address
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.num_gpus_per_worker = float(num_gpus_per_worker)
        self.sub_batch_size, self.max_retries = sub_batch_size, max_retries
        self.max_failed_fraction = float(max_failed_fraction)
        self.start_timeout_s = float(start_timeout_s)
        self.after_dispatch: Callable[[RayEvaluator], None] | None = None
        self._workers: list[Any] = []
        self._starting: dict[Any, int] = {}  # readiness probe of a replacement -> its slot
        self._actor_class: Any = None
        self._owns_ray = False
        self._metrics: dict[str, float] = {}

    # -- the pool ------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) the cluster and create the actors; waits until they are up,
        so a worker that cannot build its family fails here. Called by the first
        :meth:`evaluate`; call it earlier to keep start-up out of the first iteration."""
        if self._workers:
            return
        ray = _import_ray()
        need_cpus = self.num_workers * self.num_cpus_per_worker
        need_gpus = self.num_workers * self.num_gpus_per_worker
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if self.address is None:
                # A new local cluster (never one `ray start` left running) with room for
                # every worker, oversubscribed if asked for.
                cpus = max(os.cpu_count() or 1, math.ceil(need_cpus))
                ray.init(address="local", num_cpus=cpus, include_dashboard=False)
            else:
                ray.init(address=self.address)
            self._owns_ray = True
        total = ray.cluster_resources()
        if total.get("CPU", 0.0) < need_cpus or total.get("GPU", 0.0) < need_gpus:
            self.close()
            raise EvaluationError(self._no_room(total, "the cluster has"))
        self._actor_class = ray.remote(
            num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker
        )(EvaluationWorker)
        self._workers = [self._new_actor() for _ in range(self.num_workers)]
        probes = [worker.pid.remote() for worker in self._workers]
        # Actors that cannot be placed (e.g. other actors hold the CPUs) would wait forever.
        _, pending = ray.wait(probes, num_returns=len(probes), timeout=self.start_timeout_s)
        try:
            if pending:
                where = f"within {self.start_timeout_s:g} s the cluster had free"
                raise EvaluationError(self._no_room(ray.available_resources(), where))
            ray.get(probes)
        except Exception as error:
            self.close()
            if isinstance(error, EvaluationError):
                raise
            raise EvaluationError(f"the Ray workers failed to start: {error}") from error

    def _no_room(self, resources: dict[str, float], where: str) -> str:
        return (
            f"{self.num_workers} Ray workers need {self.num_workers * self.num_cpus_per_worker:g} "
            f"CPUs and {self.num_workers * self.num_gpus_per_worker:g} GPUs (evaluator.params) "
            f"but {where} {resources.get('CPU', 0.0):g} CPUs and "
            f"{resources.get('GPU', 0.0):g} GPUs"
        )

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.components)

    def worker_pids(self) -> list[int]:
        """The process id of each worker (starts the pool if needed)."""
        self.start()
        ray = _import_ray()
        return list(ray.get([worker.pid.remote() for worker in self._workers]))

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this evaluator started it."""
        if self._workers or self._owns_ray:
            ray = _import_ray()
            for worker in self._workers:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(worker)
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
        self._workers, self._starting, self._owns_ray = [], {}, False

    # -- one iteration -------------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def iteration_inputs(
        self, theta: Tensor, seed: int, tasks: Tasks, inner_seed: int, spec: PopulationSpec
    ) -> IterationInputs:
        """What one iteration sends to the workers (once): no noise, no population."""
        return IterationInputs(
            theta=theta.detach(),
            seed=int(seed),
            spec=spec,
            tasks=dict(tasks),
            inner_seed=int(inner_seed),
            replica_state=self.family.replica_state(),
        )

    def sub_batches(self, spec: PopulationSpec) -> list[tuple[int, int]]:
        """The direction ranges ``[start, stop)`` one iteration is split into."""
        n = spec.num_perturbations
        size = self.sub_batch_size or math.ceil(n / self.num_workers)
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    def evaluate(
        self,
        theta: Tensor,
        seed: int,
        tasks: Tasks,
        inner_seed: int,
        spec: PopulationSpec,
        *,
        population: Tensor | None = None,
    ) -> Tensor:
        self.start()
        ray = _import_ray()
        shared = ray.put(self.iteration_inputs(theta, seed, tasks, inner_seed, spec))
        batches = self.sub_batches(spec)
        queue: deque[tuple[int, int]] = deque((index, 0) for index in range(len(batches)))
        results: dict[int, SubBatchResult] = {}
        dropped: list[int] = []
        running: dict[Any, tuple[int, int, int]] = {}  # ref -> (slot, batch, attempt)
        starting = set(self._starting.values())
        idle = deque(slot for slot in range(self.num_workers) if slot not in starting)
        restarts = retries = 0
        hook = self.after_dispatch
        while queue or running:
            while queue and idle:
                slot = idle.popleft()
                index, attempt = queue.popleft()
                ref = self._workers[slot].evaluate.remote(shared, *batches[index])
                running[ref] = (slot, index, attempt)
            if hook is not None:  # once, with the first sub-batches in flight
                hook(self)
                hook = None
            # With only replacements left to wait for, wait at most start_timeout_s.
            timeout = None if running else self.start_timeout_s
            done, _ = ray.wait([*running, *self._starting], num_returns=1, timeout=timeout)
            if not done:
                raise EvaluationError(
                    f"every Ray worker died and no replacement came up within {timeout:g} s"
                )
            ref = done[0]
            if ref in self._starting:  # a replacement is up (or failed to start)
                slot = self._starting.pop(ref)
                try:
                    ray.get(ref)
                except Exception as error:
                    raise EvaluationError(
                        f"a replacement Ray worker failed to start: {error}"
                    ) from error
                idle.append(slot)
                continue
            slot, index, attempt = running.pop(ref)
            try:
                results[index] = ray.get(ref)
            except Exception as error:
                if not _is_fault(error):
                    raise
                logger.warning(
                    "Ray worker %d died during sub-batch %d (attempt %d): %s; replacing it",
                    slot,
                    index,
                    attempt + 1,
                    type(error).__name__,
                )
                self._replace(slot)  # the new actor turns idle once it is up
                restarts += 1
                if attempt < self.max_retries:
                    queue.append((index, attempt + 1))
                    retries += 1
                else:
                    dropped.append(index)
            else:
                idle.append(slot)
        values, lost = self._assemble(spec, batches, results, dropped)
        self._metrics = {
            "worker_restarts": float(restarts),
            "retried_sub_batches": float(retries),
            "failed_evaluations": float(lost),
        }
        return values

    def _replace(self, slot: int) -> None:
        """A fresh actor in ``slot``; it takes work once its readiness probe answers."""
        ray = _import_ray()
        with contextlib.suppress(Exception):  # already gone
            ray.kill(self._workers[slot])
        self._workers[slot] = self._new_actor()
        self._starting[self._workers[slot].pid.remote()] = slot

    def _assemble(
        self,
        spec: PopulationSpec,
        batches: list[tuple[int, int]],
        results: dict[int, SubBatchResult],
        dropped: list[int],
    ) -> tuple[Tensor, int]:
        """Values [M] (NaN where dropped) and the number dropped; the statistics and steps
        of the results are merged into the family in sub-batch order."""
        lost = sum(len(spec.rows(range(*batches[index]))) for index in dropped)
        fraction = lost / spec.size
        if fraction > self.max_failed_fraction:
            raise EvaluationError(
                f"{lost} of {spec.size} evaluations ({fraction:.0%}) were lost to failed Ray "
                f"workers after {self.max_retries} retries; evaluator.params."
                f"max_failed_fraction={self.max_failed_fraction:g} allows at most that share"
            )
        if dropped:
            logger.warning(
                "dropped %d of %d evaluations (%.0f%%) lost to failed Ray workers",
                lost,
                spec.size,
                100 * fraction,
            )
        dtype = next(iter(results.values())).values.dtype
        values = torch.full((spec.size,), math.nan, dtype=dtype)
        family = self.family
        for index in sorted(results):
            result = results[index]
            values[spec.rows(range(*batches[index]))] = result.values.to(dtype)
            family.merge_collected_state(result.collected_state)
            family.env_steps += result.env_steps
        return values.to(family.device), lost
