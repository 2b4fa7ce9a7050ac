"""The README's Python examples run as written (docs that cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == [
        "bash scripts/setup.sh && .venv/bin/esmaml train configs/sine.yaml",
        "bash scripts/setup.sh && .venv/bin/python -m pytest",
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci


@pytest.mark.slow
def test_readme_python_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # The quickstart cut the loss, the custom family adapted, the custom env steps.
    assert "eval_post_adaptation" in capsys.readouterr().out
    env = namespace["GoalLine"]()  # type: ignore[operator]
    task = env.sample_task_params(3, torch.Generator().manual_seed(0))
    state = env.reset(task)
    _, reward, done = env.step(state, task, torch.full((3, 1), 0.05))
    assert reward.shape == (3,) and not bool(done.any())
