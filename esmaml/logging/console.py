"""Console output: a progress bar with the current meta-objective and a final summary table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm


class Progress:
    def __init__(self, total: int, initial: int, enabled: bool, name: str):
        self.bar = tqdm(
            total=total,
            initial=initial,
            disable=not enabled,
            desc=name,
            unit="it",
            dynamic_ncols=True,
        )

    def update(self, row: Mapping[str, Any]) -> None:
        postfix = {"meta_obj": f"{row['meta_objective']:.4g}"}
        if "eval_post_adaptation" in row:
            postfix["eval_post"] = f"{row['eval_post_adaptation']:.4g}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def print_summary(summary: Mapping[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    Console().print(table)
