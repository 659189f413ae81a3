"""Tracking end to end: a real hyperopt-run writes an offline wandb run we can read back,
and a real implicit-vs-unrolled sweep becomes a report that opens in headless Chromium."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import hyperopt_run

from hyperopt import report


def _leet_history(run_dir: Path) -> list[dict]:
    """History records of the offline wandb run, read back with wandb's own CLI."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    return records


@pytest.mark.slow
def test_offline_wandb_run_is_read_back(tmp_path):
    run_dir = tmp_path / "run"
    proc = hyperopt_run("steps=4", "logger=wandb", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                        env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr
    records = _leet_history(run_dir)
    history = [r["history"] for r in records if r.get("type") == "history"]
    steps = sorted(h["step"]["num"] for h in history)
    assert steps == [0, 1, 2, 3]
    logged = {item["key"] if isinstance(item, dict) and "key" in item else None for h in history
              for item in (h.get("item") or [])}
    text = json.dumps(history)
    assert "outer_loss" in text and "hparam/l2reg" in text, logged
    run_info = [r for r in records if r.get("type") == "run"]
    assert run_info and "implicit" in json.dumps(run_info)  # job_type/tags carry the mode


@pytest.mark.slow
def test_disabled_wandb_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = hyperopt_run("steps=2", "logger=wandb", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                        env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / "wandb").exists()
    assert (run_dir / "metrics.jsonl").exists()  # local metrics are always written


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    sweep = root / "multirun"
    proc = hyperopt_run("-m", "mode=implicit,unrolled", "experiment=ridge_diabetes", "steps=6",
                        "logger=none", f"hydra.sweep.dir={sweep}", cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr
    html = report.write_report(sweep)
    return sweep, html


@pytest.mark.slow
def test_sweep_report_lists_both_runs_with_figures(sweep_report):
    sweep, html = sweep_report
    runs = report.find_runs(sweep)
    assert sorted(report.load_run(r, sweep).name for r in runs) == ["0", "1"]
    rows = [line for line in html.read_text().splitlines() if line.lstrip().startswith("<tr")]
    body = "\n".join(rows)
    assert '<td class="txt">implicit</td>' in body and '<td class="txt">unrolled</td>' in body, body[:2000]
    pngs = list(sweep.glob("*.png"))
    assert len(pngs) >= 3 and all(p.stat().st_size > 1000 for p in pngs)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_report_opens_in_headless_chromium(sweep_report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("no chromium on this machine (apt-get install chromium); CI installs it")
    _, html = sweep_report
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    proc = subprocess.run([browser, *flags, f"--screenshot={shot}", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered page, not a blank one
    dom = subprocess.run([browser, *flags, "--dump-dom", html.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0 and "<table" in dom.stdout and "unrolled" in dom.stdout


@pytest.mark.slow
def test_online_wandb_without_network_falls_back_to_offline(tmp_path):
    """No reachable server and a bad key: the run completes, logs offline, says so once."""
    run_dir = tmp_path / "run"
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}
    proc = hyperopt_run("steps=3", "logger=wandb", "logger.init_timeout=2", f"hydra.run.dir={run_dir}",
                        cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("logging offline") == 1, proc.stderr
    steps = sorted(h["history"]["step"]["num"] for h in _leet_history(run_dir) if h.get("type") == "history")
    assert steps == [0, 1, 2]
