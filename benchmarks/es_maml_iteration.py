"""One paper-default ES-MAML iteration on Navigation2D, timed (issue: Meta-RL performance).

150 antithetic pairs (300 perturbed policies, one task per pair), K=20 adaptation queries,
horizon 100, linear tanh policy: about 660k environment steps per iteration. Prints the time per
iteration (median of repeats) for ES-gradient and hill-climbing adaptation, the env steps and
the env-steps/s, with the targets (<= 100 ms and <= 400 ms on a 2-core CPU).

    python benchmarks/es_maml_iteration.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from esmaml.adaptation import ESGradientAdaptation, HillClimbingAdaptation
from esmaml.meta import ESMAML
from esmaml.rl import RLFamily

TARGETS_MS = {"es_gradient": 100.0, "hill_climbing": 400.0}


def time_iteration(operator: str, device: str, repeats: int) -> tuple[float, int]:
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

    one()  # warm-up
    runs = [one() for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), int(statistics.median(s for _, s in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print("| adaptation | ms / iteration | env steps | env-steps/s | target |")
    print("|---|---:|---:|---:|---:|")
    for operator, target in TARGETS_MS.items():
        seconds, steps = time_iteration(operator, args.device, args.repeats)
        verdict = "met" if seconds * 1e3 <= target else "missed"
        print(
            f"| {operator} | {seconds * 1e3:.1f} | {steps:,} | {steps / seconds / 1e6:.2f}M | "
            f"<= {target:.0f} ms ({verdict}) |"
        )


if __name__ == "__main__":
    main()
