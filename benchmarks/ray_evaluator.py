"""The Ray evaluation backend against the local one (issue #6): time and bytes per iteration.

1. Iteration time: ES-MAML iterations of a config (default ``configs/nav2d_ray.yaml``: the
   paper's Navigation2D sizes, 150 antithetic pairs, K=20, horizon 100) with the local backend
   (torch's default threads, and 1 thread) and with Ray at 1 and 2 workers, all on this
   machine. The repeats of the backends are interleaved so load from other processes hits
   them alike. Prints medians, the ratios to both local runs (< 1: faster), the load average,
   and how far each run's theta drifted from the local run's (the same seeds give the same
   meta-gradient up to float rounding).
2. Bytes per iteration: the serialised inputs every iteration sends once (theta, seeds, task
   tensors, normalisation statistics), the per-sub-batch call arguments and the returned
   results, against shipping the ``[N, D]`` noise tensor (or the ``[M, D]`` population), for
   the config's policy and a wider MLP policy.

Start-up (Ray's local cluster, actors importing torch) is reported, not timed per iteration.
Ray gets ``sum(workers)`` logical CPUs so every pool can stay up for the interleaving; only one
pool computes at a time. Each Ray worker runs torch on 1 thread.

    python benchmarks/ray_evaluator.py [--config PATH] [--workers 1,2] [--repeats 5]
        [--wide-hidden 64,64] [key=value overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray
import torch

from esmaml.config import ExperimentConfig, load_config
from esmaml.evaluators import regenerate_noise
from esmaml.evaluators.ray_backend import EvaluationWorker, RayEvaluator
from esmaml.meta.es_maml import ESMAML
from esmaml.training.builders import (
    ComponentFactory,
    build_adaptation,
    build_family,
    build_learner,
)


def configure(args: argparse.Namespace, backend: str, workers: int = 0) -> ExperimentConfig:
    config = load_config(args.config, args.overrides)
    config.evaluator.backend = backend
    params = dict(config.evaluator.params)
    config.evaluator.params = {**params, "num_workers": workers} if backend == "ray" else {}
    return config


def make_learner(config: ExperimentConfig) -> ESMAML:
    family = build_family(config)
    learner = build_learner(
        config, family, build_adaptation(config), torch.Generator().manual_seed(config.seed)
    )
    assert isinstance(learner, ESMAML)
    return learner


def timing(args: argparse.Namespace, worker_counts: list[int]) -> None:
    config = configure(args, "local")
    family = build_family(config)
    generator = torch.Generator().manual_seed(1)
    n = make_learner(config).tasks_per_iteration
    tasks = [family.sample_tasks(n, generator=generator) for _ in range(args.repeats + 1)]

    started = time.perf_counter()
    ray.init(
        address="local", num_cpus=sum(worker_counts), include_dashboard=False, log_to_driver=False
    )
    print(f"ray.init (local cluster): {time.perf_counter() - started:.1f} s")
    threads = torch.get_num_threads()
    learners = {"local": make_learner(config), "local 1t": make_learner(config)}
    for workers in worker_counts:
        learner = make_learner(configure(args, "ray", workers))
        started = time.perf_counter()
        learner.evaluator.start()
        print(f"start {workers} Ray worker(s): {time.perf_counter() - started:.1f} s")
        learners[f"ray x{workers}"] = learner
    seconds: dict[str, list[float]] = {name: [] for name in learners}
    try:
        for index, batch in enumerate(tasks):  # iteration 0 warms up every backend
            for name, learner in learners.items():
                torch.set_num_threads(1 if name == "local 1t" else threads)
                started = time.perf_counter()
                learner.step(batch)
                if index > 0:
                    seconds[name].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
        for learner in learners.values():
            learner.close()
        ray.shutdown()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    theta = learners["local"].parameters_flat()
    spec = learners["local"].spec
    print(
        f"\nIteration time ({config.name}: {spec.num_perturbations} directions, {spec.size} "
        f"evaluations, {n} tasks; median of {args.repeats}; torch threads: local {threads}, "
        "local 1t 1, each Ray worker 1)"
    )
    print(f"load average (1 min) after timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"{'backend':>10} {'median s':>9} {'vs local':>9} {'vs local 1t':>12} {'max |dtheta|':>13}"
    )
    for name, median in medians.items():
        drift = float((learners[name].parameters_flat() - theta).abs().max())
        print(
            f"{name:>10} {median:9.3f} {median / medians['local']:8.2f}x "
            f"{median / medians['local 1t']:11.2f}x {drift:13.2e}"
        )


def payload_bytes(config: ExperimentConfig, hidden: list[int], label: str) -> None:
    """Serialised bytes of one iteration, for the config's sizes and policy ``hidden``."""
    config.task.params = {**config.task.params, "hidden": hidden}
    learner = make_learner(config)
    family, spec = learner.family, learner.spec
    evaluator = RayEvaluator(family, ComponentFactory(config), **config.evaluator.params)
    tasks = family.sample_tasks(learner.tasks_per_iteration, generator=torch.Generator())
    theta = learner.parameters_flat()
    seed, inner_seed = 2**62 + 12345, 2**61 + 777
    inputs = evaluator.iteration_inputs(theta, seed, tasks, inner_seed, spec)
    batches = evaluator.sub_batches(spec)
    dumps = ray.cloudpickle.dumps
    once = len(dumps(inputs))
    ref_id = 28  # an ObjectRef's id: what each call carries instead of the inputs
    calls = sum(len(dumps((start, stop))) + ref_id for start, stop in batches)
    # One real sub-batch result; the others differ only in their number of values.
    result = EvaluationWorker(ComponentFactory(config)).evaluate(inputs, *batches[0])
    returned = sum(
        len(dumps(replace(result, values=result.values.new_zeros(len(spec.rows(range(*b)))))))
        for b in batches
    )
    noise = regenerate_noise(seed, spec, theta.numel(), theta.device, theta.dtype)
    noise_bytes = len(dumps(noise))
    population_bytes = len(dumps(torch.cat([noise, noise])))
    sent = once + calls
    print(
        f"{label:>18} {theta.numel():>6} {len(batches):>4} {once:>9} {calls:>7} {sent:>9} "
        f"{returned:>9} {noise_bytes:>11} {sent / noise_bytes:>7.3f} {population_bytes:>11}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/nav2d_ray.yaml")
    parser.add_argument("--workers", default="1,2", help="Ray pool sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per backend")
    parser.add_argument("--wide-hidden", default="64,64", help="hidden widths of the wide policy")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    if not args.skip_timing:
        timing(args, worker_counts)
    config = configure(args, "ray", worker_counts[-1])
    print(
        f"\nBytes per iteration ({worker_counts[-1]} workers' default sub-batches; "
        "serialised with ray.cloudpickle)"
    )
    print(
        f"{'policy':>18} {'D':>6} {'subs':>4} {'inputs':>9} {'calls':>7} {'sent':>9} "
        f"{'returned':>9} {'noise[N,D]':>11} {'sent/noise':>7} {'pop[M,D]':>11}"
    )
    hidden: Any = list(config.task.params.get("hidden", []))
    payload_bytes(config, hidden, f"config ({hidden or 'linear'})")
    wide = [int(h) for h in args.wide_hidden.split(",") if h]
    payload_bytes(configure(args, "ray", worker_counts[-1]), wide, f"MLP {wide}")


if __name__ == "__main__":
    main()
