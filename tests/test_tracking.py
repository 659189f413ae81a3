"""Trackers: the local run-folder files and a real (offline) wandb run read back."""

import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from hyperopt import tracking
from hyperopt.tracking import (
    JsonlTracker,
    MultiTracker,
    Tracker,
    TrackingError,
    TrackingWarning,
    WandbTracker,
    read_metrics,
    read_summary,
    run_labels,
)

CONFIG = {
    "problem": {"name": "ridge"},
    "dataset": {"name": "diabetes"},
    "mode": {"name": "implicit"},
    "solver": {"name": "lbfgs"},
    "seed": 0,
    "steps": 3,
}


def _metrics(step):
    return {
        "time": 0.5 * step,
        "outer_loss": jnp.asarray(1.0 / (step + 1)),  # a JAX scalar
        "val_loss": np.float32(2.0),  # a NumPy scalar
        "inner_iterations": np.int64(10 + step),
        "linear_residual": None,  # unrolled mode has none
        "hypergrad_norm": math.nan if step == 1 else float(step),
        "hparam/l2reg": 0.1 * step,
    }


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_lines_read_back_with_nan_as_null(tmp_path):
    tracker = JsonlTracker(tmp_path)
    for step in range(3):
        tracker.log(step, _metrics(step))
        # flushed per line: a reader (or a killed run) sees every logged step
        assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == step + 1
    tracker.finish()

    raw = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert raw[1]["hypergrad_norm"] is None  # NaN is written as null...
    assert raw[0]["linear_residual"] is None
    rows = read_metrics(tmp_path)
    assert math.isnan(rows[1]["hypergrad_norm"])  # ...and read back as NaN
    assert math.isnan(rows[0]["linear_residual"])
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[2]["outer_loss"] == pytest.approx(1 / 3)
    assert rows[2]["inner_iterations"] == 12 and isinstance(rows[2]["inner_iterations"], int)
    assert rows[2]["hparam/l2reg"] == pytest.approx(0.2)
    assert rows[2]["hypergrad_norm"] == 2.0
    assert rows[0]["val_loss"] == 2.0


def test_log_config_writes_yaml(tmp_path):
    with JsonlTracker(tmp_path) as tracker:
        tracker.log_config({**CONFIG, "lr": np.float64(0.01)})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {**CONFIG, "lr": 0.01}


def test_summary_is_written_atomically(tmp_path, monkeypatch):
    tracker = JsonlTracker(tmp_path)
    tracker.summary(
        {
            "status": "completed",
            "final": {"val_loss": math.inf},
            "hparams": {"l2reg": np.array([0.5, math.nan])},
        }
    )
    summary = read_summary(tmp_path)
    assert summary["status"] == "completed"
    assert math.isnan(summary["final"]["val_loss"])
    assert summary["hparams"]["l2reg"][0] == 0.5 and summary["hparams"]["l2reg"][1] is None

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.os, "replace", failing_replace)
    with pytest.raises(TrackingError, match="No space left"):
        tracker.summary({"status": "stopped"})
    # the previous summary is intact and no temporary file is left behind
    assert read_summary(tmp_path)["status"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "summary.json"]
    tracker.finish()


def test_resume_truncates_steps_from_the_checkpoint_on(tmp_path):
    with JsonlTracker(tmp_path) as tracker:
        for step in range(5):
            tracker.log(step, {"outer_loss": float(step)})
    with JsonlTracker(tmp_path, resume_step=3) as tracker:
        assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2]
        tracker.log(3, {"outer_loss": 30.0})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[3]["outer_loss"] == 30.0

    # truncate() on an open tracker keeps it usable
    tracker = JsonlTracker(tmp_path)
    assert tracker.truncate(1) == 1
    tracker.log(1, {"outer_loss": 10.0})
    tracker.finish()
    assert [(r["step"], r["outer_loss"]) for r in read_metrics(tmp_path)] == [(0, 0.0), (1, 10.0)]


def test_append_after_a_killed_run_drops_its_half_line(tmp_path):
    with JsonlTracker(tmp_path) as tracker:
        tracker.log(0, {"outer_loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 1, "outer_lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [0]
    with JsonlTracker(tmp_path) as tracker:
        tracker.log(1, {"outer_loss": 0.5})
    assert [r["outer_loss"] for r in read_metrics(tmp_path)] == [1.0, 0.5]


def test_unwritable_folder_is_one_clear_error(tmp_path):
    (tmp_path / "afile").write_text("")  # a folder under a file fails even for root
    with pytest.raises(TrackingError) as info:
        JsonlTracker(tmp_path / "afile" / "run")
    assert isinstance(info.value, OSError)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "afile" / "run") in message


def test_multi_tracker_fans_out_and_finishes_all(tmp_path):
    calls = []

    class Recorder(Tracker):
        def __init__(self, name, fail_finish=False):
            self.name, self.fail_finish = name, fail_finish

        def log_config(self, config):
            calls.append((self.name, "config", config["seed"]))

        def log(self, step, metrics):
            calls.append((self.name, "log", step))

        def summary(self, summary):
            calls.append((self.name, "summary", summary["status"]))

        def finish(self, exit_code=0):
            calls.append((self.name, "finish", exit_code))
            if self.fail_finish:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with MultiTracker(Recorder("a", fail_finish=True), Recorder("b")) as tracker:
            assert isinstance(tracker, Tracker)
            tracker.log_config(CONFIG)
            tracker.log(0, {})
            tracker.summary({"status": "completed"})
    assert calls == [
        ("a", "config", 0),
        ("b", "config", 0),
        ("a", "log", 0),
        ("b", "log", 0),
        ("a", "summary", "completed"),
        ("b", "summary", "completed"),
        ("a", "finish", 0),
        ("b", "finish", 0),
    ]


def test_run_labels_group_by_mode():
    labels = run_labels(CONFIG)
    assert labels == {
        "group": "ridge-diabetes",
        "job_type": "implicit",
        "tags": ("implicit", "ridge", "diabetes", "lbfgs"),
    }


# ----------------------------------------------------------------------------- wandb


def _inspect(sync_dir: Path) -> list[dict]:
    """Reads a .wandb transaction log back with wandb's own reader (wandb >= 0.31)."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(sync_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("wandb_offline")
    tracker = WandbTracker(run_dir, mode="offline", **run_labels(CONFIG))
    tracker.log_config(CONFIG)
    for step in range(3):
        tracker.log(step, _metrics(step))
    tracker.summary({"status": "completed", "best_step": 2})
    sync_dir = tracker.sync_dir
    tracker.finish()
    return run_dir, sync_dir, _inspect(sync_dir)


def test_wandb_offline_run_lives_in_the_run_folder(offline_run):
    run_dir, sync_dir, _ = offline_run
    assert sync_dir.parent == run_dir / "wandb"
    assert sync_dir.name.startswith("offline-run-")
    assert len(list(sync_dir.glob("run-*.wandb"))) == 1


def test_wandb_offline_history_reads_back(offline_run):
    _, _, records = offline_run
    history = [r["history"] for r in records if r["type"] == "history"]
    assert [h["step"]["num"] for h in history] == [0, 1, 2]
    items = [h["item"] for h in history]
    assert [i["outer_loss"] for i in items] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [i["inner_iterations"] for i in items] == [10, 11, 12]
    assert items[1]["hypergrad_norm"] == "NaN"  # wandb keeps NaN
    assert all("linear_residual" not in i for i in items)  # None is left out
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "implicit" and run["run_group"] == "ridge-diabetes"
    assert run["tags"] == ["implicit", "ridge", "diabetes", "lbfgs"]
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"].get("update", {}))
    assert config["mode"] == {"name": "implicit"} and config["seed"] == 0
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert summary["status"] == "completed" and summary["best_step"] == 2


def _children() -> set[str]:
    return {
        pid for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()
    }


def test_wandb_disabled_writes_nothing_and_starts_nothing(tmp_path, monkeypatch):
    import wandb

    def no_init(*args, **kwargs):
        raise AssertionError("disabled mode must not call wandb.init")

    monkeypatch.setattr(wandb, "init", no_init)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    before = _children()
    with WandbTracker(tmp_path / "run") as tracker:  # mode from $WANDB_MODE
        assert tracker.mode == "disabled" and tracker.sync_dir is None
        tracker.log_config(CONFIG)
        tracker.log(0, _metrics(0))
        tracker.summary({"status": "completed"})
    assert not (tmp_path / "run").exists()
    assert _children() <= before

    with pytest.raises(ValueError, match="online, offline or disabled"):
        WandbTracker(tmp_path, mode="sometimes")


def test_wandb_online_failure_falls_back_to_offline_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_online_failure", None)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    start = time.perf_counter()
    with pytest.warns(TrackingWarning) as caught:
        tracker = WandbTracker(tmp_path / "a", mode="online", init_timeout=1.0)
    assert time.perf_counter() - start < 15
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("wandb online failed: ")
    assert f"wandb sync {tracker.sync_dir}" in message
    assert tracker.mode == "offline" and tracker.sync_dir.name.startswith("offline-run-")
    tracker.log(0, {"outer_loss": 1.0})
    tracker.finish()

    # the next run in this process (a sweep job) goes offline at once, without warning
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        tracker = WandbTracker(tmp_path / "b", mode="online", init_timeout=1.0)
    assert time.perf_counter() - start < 5
    assert tracker.mode == "offline" and tracker.sync_dir.parent == tmp_path / "b" / "wandb"
    tracker.finish()


def test_wandb_default_mode_is_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(WandbTracker, "_init", lambda self, kwargs, timeout: None)
    assert WandbTracker(tmp_path).mode == "offline"
