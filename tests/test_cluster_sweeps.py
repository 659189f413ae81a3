"""Cluster sweeps on Hydra's own launchers: a 2-job multirun through submitit (the local
executor of submitit_slurm) and through the Ray launcher on a local Ray head started here;
each job writes its own run folder; a population run through the console script."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _hyperopt_run(*args, cwd, timeout=900, env=None):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([str(BIN / "hyperopt-run"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _check_sweep(sweep: Path, seeds=(0, 1)):
    summaries = [json.loads((sweep / str(job) / "summary.json").read_text()) for job in range(len(seeds))]
    configs = [(sweep / str(job) / "config.yaml").read_text() for job in range(len(seeds))]
    assert all(s["status"] == "completed" and s["steps"] == 2 for s in summaries), summaries
    for seed, config in zip(seeds, configs, strict=True):
        assert f"seed: {seed}\n" in config
    # different seeds, different splits: two real runs, not one copied
    assert summaries[0]["initial"]["val_loss"] != summaries[1]["initial"]["val_loss"]
    return summaries


SWEEP = ["steps=2", "stop=null", "logger=none", "seed=0,1"]


@pytest.mark.slow
def test_two_job_sweep_through_submitit_local(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _hyperopt_run("-m", "hydra/launcher=submitit_local", *SWEEP, f"hydra.sweep.dir={sweep}",
                         "hydra.launcher.timeout_min=15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_sweep(sweep)
    assert list((sweep / ".submitit").iterdir())  # the jobs went through submitit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray's connection timeouts (its defaults, e.g. 5 s to reach the GCS, fail on a loaded machine
# with "Failed to connect to GCS"): for the head and for the sweep's driver alike.
RAY_ENV = {"RAY_gcs_rpc_server_connect_timeout_s": "120", "RAY_gcs_rpc_server_reconnect_timeout_s": "120",
           "RAY_gcs_server_request_timeout_seconds": "120", "RAY_raylet_start_wait_time_s": "120",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ray_ready(address: str, deadline: float, head, log: Path) -> None:
    """Waits until ``ray status`` reaches the head's GCS and sees its node (or fails with the log)."""
    while True:
        assert head.poll() is None, log.read_text()
        try:
            status = subprocess.run([str(BIN / "ray"), "status", f"--address={address}"],
                                    env={**os.environ, **RAY_ENV}, capture_output=True, text=True,
                                    timeout=max(10.0, deadline - time.time()))
            if status.returncode == 0 and "node_" in status.stdout:
                return
            failure = status.stdout + status.stderr
        except subprocess.TimeoutExpired:
            failure = "ray status timed out"
        assert time.time() < deadline, f"{failure}\n{log.read_text()}"
        time.sleep(2)


@pytest.fixture
def ray_head(tmp_path):
    """A local Ray head (``ray start --head --block``, its own temp folder, no dashboard) in
    its own process group, ready once ``ray status`` reaches it, stopped by signalling that
    group: only the processes this test started."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short (socket paths), not shared with other heads
    log_path = tmp_path / "ray_head.log"
    log = open(log_path, "w")
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--num-cpus=2", f"--port={port}",
                             f"--temp-dir={temp_dir}", "--include-dashboard=false",
                             "--object-store-memory=100000000", "--disable-usage-stats", "--block"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **RAY_ENV})
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(1)
        _ray_ready(address, deadline, head, log_path)
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(wait)
                time.sleep(1)  # the group's other processes
            except subprocess.TimeoutExpired:
                continue
        try:  # anything of the group still alive
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        # what `ray stop` would clean up: the file through which a later ray.init() (a local
        # Ray launcher run) would try to join this, now dead, head
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.slow
def test_two_job_sweep_through_the_ray_launcher_on_a_local_head(tmp_path, ray_head):
    sweep = tmp_path / "sweep"
    # hydra-ray-launcher 1.2.2 sets object_store_memory, which Ray refuses when joining a cluster
    proc = _hyperopt_run("-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_head}",
                         "+hydra.launcher.ray.init.object_store_memory=null", *SWEEP,
                         f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=RAY_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Connecting to existing Ray cluster at address: " in proc.stderr + proc.stdout
    _check_sweep(sweep)


@pytest.mark.slow
def test_population_run_writes_every_member(tmp_path):
    out = tmp_path / "run"
    proc = _hyperopt_run("population=3", "population_range=[0.1,10]", "steps=4", "stop=null", "logger=none",
                         f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    members = summary["population"]
    assert [m["member"] for m in members] == [0, 1, 2]
    assert [m["initial_hparams"]["l2reg"] for m in members] == pytest.approx([0.1, 1.0, 10.0])
    best = summary["best_member"]
    assert members[best]["best_loss"] == min(m["best_loss"] for m in members)
    assert summary["hparams"] == members[best]["best_hparams"]
    assert summary["devices"]["data"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["member_outer_loss"]) == 3 for r in rows)
    assert [r["member_outer_loss"][best] for r in rows][-1] is not None
    assert f"(member {best} of a population of 3)" in proc.stdout
