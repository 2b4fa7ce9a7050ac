"""Console output: progress with the current meta-objective, and a final summary table.

On a terminal the progress is a tqdm bar. Elsewhere (CI logs, ``nohup``, a pipe) a redrawn bar
would write one line per refresh, so :class:`Progress` prints a plain line each 10% of the run
or every 30 s, whichever comes first, and one at the end. Either way a resumed run counts its
rate and ETA from the iterations done since it (re)started, not from iteration 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

#: Non-TTY progress: a line per this share of the run ...
LINE_FRACTION = 0.1
#: ... or after this many seconds without one.
LINE_INTERVAL_S = 30.0


class Progress:
    """Progress of iterations ``initial .. total`` (``initial`` > 0 on a resume)."""

    def __init__(
        self,
        total: int,
        initial: int,
        enabled: bool,
        name: str,
        *,
        stream: TextIO | None = None,
        interval_s: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.initial, self.n, self.name = total, initial, initial, name
        self.enabled = enabled
        self.interval_s = interval_s
        self.lines = not _is_tty(self.stream)
        self.bar = None
        if enabled and not self.lines:
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=name,
                unit="it",
                dynamic_ncols=True,
                file=self.stream,
            )
        self.clock = clock
        self.started = self.last_line = clock()
        self.postfix: dict[str, str] = {}
        self._next_mark = self._mark_after(initial)

    def _mark_after(self, n: int) -> int:
        """The first iteration count past ``n`` that is a multiple of 10% of the run."""
        step = max(1, round(self.total * LINE_FRACTION))
        return (n // step + 1) * step

    def update(self, row: Mapping[str, Any]) -> None:
        self.postfix = {"meta_obj": f"{row['meta_objective']:.4g}"}
        if "eval_post_adaptation" in row:
            self.postfix["eval_post"] = f"{row['eval_post_adaptation']:.4g}"
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            now = self.clock()
            if (
                self.n >= self._next_mark
                or self.n >= self.total
                or (now - self.last_line >= self.interval_s)
            ):
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        done = self.n - self.initial  # this process's iterations: the rate of a resume
        eta = (self.total - self.n) * elapsed / done if done else float("nan")
        fields = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        percent = 100 * self.n / self.total
        self.stream.write(
            f"{self.name}: {self.n}/{self.total} it ({percent:.0f}%) {fields} "
            f"elapsed {_clock(elapsed)} eta {_clock(eta)}\n"
        )
        self.stream.flush()
        self.last_line = now
        self._next_mark = self._mark_after(self.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN: no iteration done yet
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def print_summary(summary: Mapping[str, Any], title: str) -> None:
    """The summary as a table. RL runs (``*_return_*`` keys) show returns, higher is better;
    their losses are minus the returns and are left out. Supervised runs show losses."""
    returns = {key.replace("_return_", "_", 1) for key in summary if "_return_" in key}
    rows = {key: value for key, value in summary.items() if key not in returns}
    if returns:
        title = f"{title} (returns: higher is better)"
        if "eval_post_adaptation_std" in rows:
            rows["eval_return_post_adaptation_std"] = rows.pop("eval_post_adaptation_std")
    elif any(key.endswith("_adaptation") for key in summary):
        title = f"{title} (losses: lower is better)"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    Console().print(table)
