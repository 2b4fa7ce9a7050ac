"""torch.func MAML (meta.algorithm: maml) against learn2learn's MAML (l2l_maml), side by side.

The sine setup of configs/sine_maml.yaml (MLP 1-40-40-1, 25 tasks a batch, 1 inner step, Adam):
milliseconds per meta-step for each, interleaved over rounds so that load from other processes
hits both alike, and the ratio of the medians.

    .venv/bin/python benchmarks/maml.py [--rounds 5] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from esmaml.adaptation.gradient_descent import GradientDescentAdaptation
from esmaml.meta.func_maml import FuncMAML
from esmaml.meta.l2l_maml import L2LMAML
from esmaml.tasks.sine import SineRegression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="meta-steps per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    family = SineRegression(shots=10, query_shots=10, hidden=(40, 40))
    init = family.init_params(torch.Generator().manual_seed(0))
    batches = [
        family.sample_tasks(25, generator=torch.Generator().manual_seed(i))
        for i in range(args.steps)
    ]
    learners = {
        "learn2learn MAML": L2LMAML(family, meta_lr=1e-3, alpha=0.01, init_params=init),
        "torch.func MAML": FuncMAML(
            family,
            GradientDescentAdaptation(0.01),
            optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
            init_params=init,
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in learners}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, learner in learners.items():
            started = time.perf_counter()
            for tasks in batches:
                learner.step(tasks)
            if round_:
                times[name].append((time.perf_counter() - started) / len(batches) * 1e3)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds")
    print("| learner | ms / meta-step (median) |")
    print("|---|---:|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"| {name} | {median:.2f} |")
    ratio = medians["learn2learn MAML"] / medians["torch.func MAML"]
    print(f"speed-up of torch.func MAML over learn2learn's: {ratio:.1f}x")


if __name__ == "__main__":
    main()
