"""One paper-default ES-MAML iteration on Navigation2D, timed (issue: Meta-RL performance).

150 antithetic pairs (300 perturbed policies, one task per pair), K=20 adaptation queries,
horizon 100, linear tanh policy: about 600k environment steps per iteration (660k with a pivot
rollout per adaptation, which z-scored values do not need). Prints the time per iteration
(median of repeats) for ES-gradient and hill-climbing adaptation, the env steps and
the env-steps/s, with the targets (<= 100 ms and <= 400 ms on a 2-core CPU) and the ratio of
each time to its target (<= 1 meets it).

Each ``--threads`` count is a separate column set; the repeats of all (threads, adaptation)
cells are interleaved, so load from other processes on a shared machine hits them alike. The
thread count is set here, in the benchmark, with ``torch.set_num_threads``; the library never
changes it.

    python benchmarks/es_maml_iteration.py [--threads 1,2] [--repeats 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from esmaml.adaptation import ESGradientAdaptation, HillClimbingAdaptation
from esmaml.meta import ESMAML
from esmaml.rl import RLFamily

TARGETS_MS = {"es_gradient": 100.0, "hill_climbing": 400.0}


def make_iteration(operator: str, device: str) -> Callable[[], tuple[float, int]]:
    """A closure timing one ES-MAML iteration: returns (seconds, env steps)."""
    generator = torch.Generator().manual_seed(0)
    family = RLFamily("Navigation2D", hidden=(), horizon=100, device=device)
    adaptation = (
        ESGradientAdaptation(20, 0.1, 0.05)
        if operator == "es_gradient"
        else HillClimbingAdaptation(20, 0.1, mode="batch")
    )
    learner = ESMAML(family, adaptation, num_perturbations=150, sigma=0.1, generator=generator)
    pool = family.sample_tasks(50, generator=generator)

    def one() -> tuple[float, int]:
        ids = torch.randint(50, (150,), generator=generator)
        tasks = {k: v[ids.to(v.device)] for k, v in pool.items()}
        before = family.env_steps
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        learner.step(tasks)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started, family.env_steps - before

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated torch intra-op thread counts to measure (default 1,2)",
    )
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, repeats {args.repeats}"
    )
    cells = {(t, op): make_iteration(op, args.device) for t in threads for op in TARGETS_MS}
    runs: dict[tuple[int, str], list[tuple[float, int]]] = {cell: [] for cell in cells}
    for cell, one in cells.items():  # warm-up (also turns observation normalisation on)
        torch.set_num_threads(cell[0])
        one()
    for _ in range(args.repeats):
        for cell, one in cells.items():
            torch.set_num_threads(cell[0])
            runs[cell].append(one())
    print("| threads | adaptation | ms / iteration | env steps | env-steps/s | target | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for (t, op), results in runs.items():
        seconds = statistics.median(s for s, _ in results)
        steps = int(statistics.median(n for _, n in results))
        target = TARGETS_MS[op]
        ratio = seconds * 1e3 / target
        verdict = "met" if ratio <= 1 else "missed"
        print(
            f"| {t} | {op} | {seconds * 1e3:.1f} | {steps:,} | {steps / seconds / 1e6:.2f}M | "
            f"<= {target:.0f} ms | {ratio:.2f} ({verdict}) |"
        )


if __name__ == "__main__":
    main()
