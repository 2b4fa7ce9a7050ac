"""wandb: a real offline run read back with ``wandb leet inspect``, resume into the same run,
mode resolution, and failures that only warn.

Only ``test_offline_run_reads_back_and_resumes_the_same_run`` starts wandb for real; the others
put a fake ``wandb`` module in ``sys.modules`` (or use ``disabled``), which is what the logger
imports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

from esmaml.config import WandbConfig, load_config, to_dict
from esmaml.logging.metrics import read_metrics
from esmaml.logging.wandb_logger import WandbLogger, artifact_name, has_api_key, resolve_mode
from esmaml.training.trainer import WANDB_RUN_FILE, Trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sine.yaml"
TINY = [
    "meta.params.num_perturbations=4",
    "adaptation.params.num_queries=2",
    "task.params.hidden=[8]",
    "iterations=4",
    "checkpoint.every=2",
    "evaluation.every=2",
    "evaluation.num_tasks=4",
    "task.test_pool=4",
    "progress=false",
]
WANDB = str(Path(sys.executable).with_name("wandb"))


@pytest.fixture(autouse=True)
def restore_environment() -> Any:
    """The logger sets WANDB_* variables for its process; undo them after each test."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep wandb's own files (artifact staging, cache, settings) inside the test's tmp dir and
    restore the variables the logger sets."""
    for name, sub in (
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")


def leet(*args: str) -> str:
    result = subprocess.run(
        [WANDB, "leet", "inspect", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def read_records(run_path: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]], list[dict]]:
    """(run record, history by step, artifact records) of one offline run directory, from one
    ``wandb leet inspect --json`` call (each call costs a wandb CLI start)."""
    records = [json.loads(line) for line in leet("--json", str(run_path)).splitlines() if line]
    (run,) = [record["run"] for record in records if record["type"] == "run"]
    history = {
        record["history"]["step"]["num"]: record["history"]["item"]
        for record in records
        if record["type"] == "history"
    }
    artifacts = [record["artifact"] for record in records if record["type"] == "artifact"]
    return run, history, artifacts


def without_empty(value: Any) -> Any:
    """wandb drops empty mappings from a run's config (``params: {}``)."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v != {}}
    return value


def assert_history_matches(history: dict[int, dict[str, Any]], rows: list[dict]) -> None:
    """Every field of every metrics.jsonl row reached wandb at step = updates (iteration + 1:
    the initial evaluation is step 0), exactly."""
    assert sorted(history) == [row["iteration"] + 1 for row in rows]
    for row in rows:
        logged = history[row["iteration"] + 1]
        assert {key: logged.get(key) for key in row} == row


@pytest.mark.slow
@pytest.mark.usefixtures("wandb_env")
def test_offline_run_reads_back_and_resumes_the_same_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load_config(CONFIG, [*TINY, "wandb.mode=offline", "wandb.tags=[a,b]", "wandb.group=g"])
    trainer = Trainer(config, run_dir)
    trainer.train()
    rows = read_metrics(run_dir / "metrics.jsonl")
    run_id = json.loads((run_dir / WANDB_RUN_FILE).read_text())["id"]
    (first,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert first.name.endswith(run_id)

    summary = json.loads(leet("--summary", "--json", str(first)))
    assert summary["run_id"] == run_id and summary["exit_code"] == 0
    assert summary["project"] == "esmaml" and summary["name"] == "run"
    logged_config = {k: v for k, v in summary["config"].items() if k != "_wandb"}
    assert logged_config == without_empty(to_dict(config))  # the resolved config
    assert summary["summary"]["eval_post_adaptation"] == pytest.approx(
        rows[-1]["eval_post_adaptation"]
    )
    run, history, artifacts = read_records(first)
    assert run["run_group"] == "g" and run["tags"] == ["a", "b"]
    assert_history_matches(history, rows)
    for step in (0, 2, 4):  # evaluations (initial, iterations 1, 3): per-task table, histograms
        assert history[step]["eval_tasks._type"] == "table-file"
        assert history[step]["eval_tasks.nrows"] == 4
        for name in ("eval_pre_adaptation_hist", "eval_post_adaptation_hist"):
            assert history[step][f"{name}._type"] == "histogram"
    assert all(
        item["perturbed_objective_hist._type"] == "histogram"
        for step, item in history.items()
        if step > 0  # step 0 is the initial evaluation: no population yet
    )
    models = [a for a in artifacts if a.get("type") == "model"]
    assert [a["name"] for a in models] == ["run-checkpoint"]  # the final checkpoint

    # Resume (extended to 6 iterations): the same wandb run continues.
    resumed = Trainer.resume(run_dir, ["iterations=6"])
    assert resumed.wandb_id == run_id
    resumed.train()
    rows = read_metrics(run_dir / "metrics.jsonl")
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    # Both segments carry the run id; wandb adds "-1" when the resume starts in the same second.
    pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?")
    assert len(segments) == 2 and all(pattern.fullmatch(s.name) for s in segments)
    run, history, _ = read_records(segments[1])
    assert run["run_id"] == run_id
    assert run["config"]["update"]["iterations"] == 6
    assert_history_matches(history, rows[5:])  # after the initial row and iterations 0-3


def test_config_fields_reach_wandb_init(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    fake = fake_wandb(calls)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = WandbConfig(mode="offline", project="p", entity="e", group="g", tags=["t"], name="n")
    logger = WandbLogger(config, tmp_path, {"seed": 1}, "default", resume_id="abc123")
    assert logger.active and logger.run_id == "abc123"
    (call,) = calls
    assert {k: call[k] for k in ("project", "entity", "group", "tags", "name", "mode")} == {
        "project": "p",
        "entity": "e",
        "group": "g",
        "tags": ["t"],
        "name": "n",
        "mode": "offline",
    }
    assert call["dir"] == str(tmp_path) and call["config"] == {"seed": 1}
    assert call["id"] == "abc123" and call["resume"] == "allow"
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"  # no call home at exit


class FakeRun:
    def __init__(self, run_id: str, directory: Path, fail_log_after: int | None = None):
        self.id = run_id
        self.dir = str(directory / "files")
        self.summary: dict[str, Any] = {}
        self.logged: list[dict[str, Any]] = []
        self.finished: list[int | None] = []
        self.fail_log_after = fail_log_after

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        if self.fail_log_after is not None and len(self.logged) >= self.fail_log_after:
            raise ConnectionError("wandb service died")
        self.logged.append({**row, "_step": step})

    def log_artifact(self, artifact: Any) -> None:
        self.logged.append({"artifact": artifact})

    def mark_preempting(self) -> None:
        pass

    def finish(self, exit_code: int | None = None) -> None:
        self.finished.append(exit_code)


def fake_wandb(calls: list[dict[str, Any]], **run_options: Any) -> types.ModuleType:
    module = types.ModuleType("wandb")
    runs: list[FakeRun] = []

    def init(**kwargs: Any) -> FakeRun:
        calls.append(kwargs)
        run = FakeRun(kwargs.get("id") or "fake0001", Path(kwargs["dir"]), **run_options)
        runs.append(run)
        return run

    module.init = init  # type: ignore[attr-defined]
    module.runs = runs  # type: ignore[attr-defined]
    module.Table = lambda columns, data: ("table", columns, data)  # type: ignore[attr-defined]
    module.Histogram = lambda values: ("histogram", values)  # type: ignore[attr-defined]

    class Artifact:
        def __init__(self, name: str, type: str):
            self.name, self.type, self.files = name, type, []

        def add_file(self, path: str) -> None:
            self.files.append(path)

    module.Artifact = Artifact  # type: ignore[attr-defined]
    return module


def test_init_failure_only_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = types.ModuleType("wandb")

    def init(**kwargs: Any) -> None:
        raise RuntimeError("cannot reach api.wandb.ai")

    module.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = load_config(CONFIG, [*TINY, "wandb.mode=online"])
    with pytest.warns(RuntimeWarning, match="wandb init failed .*cannot reach"):
        summary = Trainer(config, tmp_path / "run").train()
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 1 + 4  # initial + 4
    assert "eval_post_adaptation" in summary
    assert not (tmp_path / "run" / WANDB_RUN_FILE).exists()


def test_log_failure_mid_run_only_warns_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    module = fake_wandb(calls, fail_log_after=3)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = load_config(CONFIG, [*TINY, "wandb.mode=offline"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(config, tmp_path / "run").train()
    failures = [w for w in caught if "wandb" in str(w.message)]
    assert len(failures) == 1
    assert "failed (ConnectionError: wandb service died)" in str(failures[0].message)
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 1 + 4  # initial + 4
    (run,) = module.runs  # type: ignore[attr-defined]
    assert run.finished == [1]  # the broken run was closed, and only once
    assert len(run.logged) == 3  # nothing more was sent after the failure


def test_invalid_mode_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode that bypassed config validation reaches the real wandb.init, which rejects it."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    with pytest.warns(RuntimeWarning, match="wandb init failed"):
        logger = WandbLogger(WandbConfig(mode="bogus"), tmp_path, {}, "run")
    assert not logger.active
    logger.log({"x": 1.0}, step=0)  # a no-op, not an error
    logger.finish()


def test_disabled_mode_never_imports_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = types.ModuleType("wandb")  # no init: any use would raise AttributeError
    monkeypatch.setitem(sys.modules, "wandb", module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger = WandbLogger(WandbConfig(mode="disabled"), tmp_path, {}, "run")
        logger.log({"x": 1.0}, step=0)
        logger.finish()
    assert not logger.active and logger.run_id is None


def test_auto_mode_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    assert not has_api_key()
    assert resolve_mode("auto") == "offline"  # not logged in: offline, no network check
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40)
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode("auto") == "online"  # logged in (wandb login writes this entry)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"  # the environment decides when it names a mode
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline" and resolve_mode("disabled") == "disabled"


def test_artifact_names_are_valid() -> None:
    assert artifact_name("sine-20240101/run:1 checkpoint") == "sine-20240101-run-1-checkpoint"
    assert artifact_name("///") == "checkpoint"
