"""results/paper.md's figures: curves against env steps and gain against K, each the mean over
seeds with its 95% Student-t interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rl_results import gains

from esmaml.sweep import seed_interval

Records = dict[str, list[dict[str, Any]]]
LABEL = {
    "es": "ES-MAML, ES-gradient adaptation",
    "hc": "ES-MAML, hill-climbing adaptation",
    "dpp": "ES-MAML, DPP-selected ES-gradient adaptation",
    "pg": "PG-MAML (REINFORCE/DiCE inner, PPO-clip outer)",
}


def band(ax: Any, x: Any, y: Any, label: str) -> None:
    import numpy as np

    intervals = [seed_interval(column.tolist()) for column in y.T]
    mean = np.asarray([i.mean for i in intervals])
    low, high = (np.asarray([getattr(i, b) for i in intervals]) for b in ("low", "high"))
    (line,) = ax.plot(x, mean, label=f"{label} (n={y.shape[0]})")
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)


def curves(panels: list[tuple[str, list[tuple[str, str]]]], data: Records, out: Path) -> bool:
    """Held-out post-adaptation return against env steps, mean and 95% t-band over seeds."""
    panels = [(t, [(n, lab) for n, lab in series if n in data]) for t, series in panels]
    panels = [(t, s) for t, s in panels if s]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for name, label in series:
            records = data[name]
            length = min(len(r["evals"]["post"]) for r in records)
            steps = np.asarray([r["evals"]["env_steps"][:length] for r in records], dtype=float)
            y = np.asarray([r["evals"]["post"][:length] for r in records], dtype=float)
            band(ax, steps.mean(0) / 1e6, y, label)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("env steps (millions, mean over seeds)")
        ax.set_ylabel("held-out post-adaptation return")
        ax.legend(fontsize="x-small")
    figure.suptitle("mean over seeds, shaded 95% t-interval", fontsize="medium")
    figure.tight_layout()
    figure.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(figure)
    return True


def low_k_figure(data: Records, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4))
    drawn = False
    for offset, method in zip((-0.4, 0.0, 0.4), ("es", "hc", "pg")):
        ks = [k for k in (5, 10, 20) if f"nav_{method}_k{k}" in data]
        if not ks:
            continue
        drawn = True
        intervals = [seed_interval(gains(data[f"nav_{method}_k{k}"])) for k in ks]
        ax.errorbar(
            [k + offset for k in ks],
            [i.mean for i in intervals],
            yerr=[[i.mean - i.low for i in intervals], [i.high - i.mean for i in intervals]],
            marker="o",
            capsize=3,
            label=LABEL[method],
        )
    if not drawn:
        plt.close(figure)
        return False
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("K (adaptation episodes per task)")
    ax.set_ylabel("gain in held-out post-adaptation return")
    ax.set_title("Navigation2D: gain vs K (mean, 95% t-interval)", fontsize="medium")
    ax.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(figure)
    return True
