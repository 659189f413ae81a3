"""The report reads run folders written to the contract and renders one HTML page."""

import base64
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from hyperopt.report import ReportError, find_runs, load_run, main, write_report

VOID = {"meta", "img", "br", "hr", "link", "input"}


def _write_run(run_dir, *, problem, dataset, mode, solver, steps=5, images=None):
    """A run folder exactly as the contract describes it (written by hand, not by a tracker)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"problem:\n  name: {problem}\ndataset:\n  name: {dataset}\nmode:\n  name: {mode}\n"
        f"solver:\n  name: '{solver}'\nseed: 0\nsteps: {steps}\n"
    )
    slow = 3.0 if mode == "unrolled" else 1.0
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(steps):
            row = {
                "step": step,
                "time": slow * 0.1 * (step + 1),
                "outer_loss": 1.0 / (step + 1),
                "val_loss": 1.1 / (step + 1),
                "test_loss": 1.2 / (step + 1),
                "hypergrad_time": slow * 0.01,
                "step_time": slow * 0.02,
                "inner_iterations": 20 - step,
                "inner_error": 1e-9,
                "linear_residual": None if mode == "unrolled" else 1e-10,
                "hypergrad_norm": None if step == 2 else 0.5,  # a non-finite value
                "hparam/l2reg": 0.1 * step,
                "hparam_norm/pixels": 3.0 + step,
            }
            f.write(json.dumps(row) + "\n")
    summary = {
        "problem": problem,
        "dataset": dataset,
        "mode": mode,
        "solver": solver,
        "steps": steps,
        "best_step": steps - 1,
        "final": {"val_loss": 0.22, "test_loss": 0.24, "val_accuracy": 0.9},
        "best": {"val_loss": 0.2 if mode == "implicit" else 0.3, "test_loss": None},
        "hparams": {"l2reg": 0.4},
        "total_time": 12.5 * slow,
        "compile_time": 2.0,
        "peak_memory_mb": None if mode == "unrolled" else 512.0,
        "status": "completed",
        "versions": {"jax": "0.10.2"},
    }
    if images is not None:
        np.save(run_dir / "images.npy", images)
        summary |= {"image_shape": [8, 8], "image_labels": list(range(len(images)))}
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "12-00-00"
    _write_run(root / "0", problem="ridge", dataset="diabetes", mode="implicit", solver="lbfgs")
    _write_run(root / "1", problem="ridge", dataset="diabetes", mode="unrolled", solver="gd<script>&")
    images = np.random.default_rng(0).uniform(0, 16, size=(10, 64))
    _write_run(
        root / "2", problem="distillation", dataset="digits", mode="implicit", solver="gd", images=images
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")  # sweep-level files are not runs
    return root


class _Page(HTMLParser):
    """Table rows as lists of cell texts, <img> sources, and a check that tags nest."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.stack, self.cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag, f"</{tag}> closes the wrong element"
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def _parse(html_text):
    page = _Page()
    page.feed(html_text)
    page.close()
    assert page.stack == []
    return page


def test_report_compares_runs_of_a_sweep(sweep):
    report = write_report(sweep)
    assert report == sweep / "report.html"
    text = report.read_text(encoding="utf-8")
    assert text.startswith('<!DOCTYPE html>\n<html lang="en">')
    page = _parse(text)

    header, *rows = page.rows
    table = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["run"], r["mode"], r["problem"]) for r in table] == [
        ("0", "implicit", "ridge"),
        ("1", "unrolled", "ridge"),
        ("2", "implicit", "distillation"),
    ]
    assert [r["best val_loss"] for r in table] == ["0.2", "0.3", "0.2"]
    assert table[0]["final test_loss"] == "0.24" and table[0]["best test_loss"] == "nan"
    assert table[0]["peak memory (MB)"] == "512" and table[1]["peak memory (MB)"] == "–"
    assert table[1]["total time (s)"] == "37.5" and table[0]["hyperparameters"] == "l2reg=0.4"

    # user strings are escaped, not interpreted
    assert table[1]["solver"] == "gd<script>&"
    assert "gd&lt;script&gt;&amp;" in text and "<script>" not in text

    pngs = ["outer_loss.png", "step_cost.png", "hparams.png", "resources.png", "images_2.png"]
    assert sorted(p.name for p in sweep.glob("*.png")) == sorted(pngs)
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert embedded == [(sweep / name).read_bytes() for name in pngs]
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000 for data in embedded)


def test_metrics_read_back_by_step_with_null_as_nan(sweep):
    runs = find_runs(sweep)
    assert [p.name for p in runs] == ["0", "1", "2"]
    run = load_run(runs[1], sweep)
    assert run.name == "1" and run.label("mode") == "unrolled"
    np.testing.assert_allclose(run.metrics["time"], 0.3 * np.arange(1, 6))
    assert np.isnan(run.metrics["linear_residual"]).all()
    assert math.isnan(run.metrics["hypergrad_norm"][2]) and run.metrics["hypergrad_norm"][3] == 0.5
    assert load_run(runs[2], sweep).images.shape == (10, 64)


def test_single_run_folder_and_out_option(sweep, tmp_path, capsys):
    out = tmp_path / "reports" / "ridge"
    assert main([str(sweep / "1"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    page = _parse((out / "report.html").read_text())
    assert page.rows[1][:4] == ["1", "ridge", "diabetes", "unrolled"]
    assert not (out / "images_0.png").exists() and (out / "outer_loss.png").stat().st_size > 0
    assert not (sweep / "1" / "report.html").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "no runs under"),
    ],
    ids=["missing", "empty"],
)
def test_main_errors_are_one_line_exit_2(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as info:
        main([str(make(tmp_path))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("hyperopt-report: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unreadable_run_is_reported_not_raised(sweep, capsys):
    (sweep / "0" / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl:2"):
        write_report(sweep)
    with pytest.raises(SystemExit):
        main([str(sweep)])
    err = capsys.readouterr().err
    assert err.startswith("hyperopt-report: error: cannot read run") and err.count("\n") == 1


def test_wandb_export_prints_sync_command_for_unsynced_offline_runs(sweep, capsys):
    for job, run_id in (("0", "aaa"), ("1", "bbb"), ("2", "ccc")):
        run = sweep / job / "wandb" / f"offline-run-20260101_000000-{run_id}"
        run.mkdir(parents=True)
        (run / f"run-{run_id}.wandb").write_bytes(b"")
    (sweep / "2" / "wandb" / "offline-run-20260101_000000-ccc" / "run-ccc.wandb.synced").touch()
    assert main([str(sweep), "--wandb-export"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        f"wandb sync {sweep}/0/wandb/offline-run-20260101_000000-aaa "
        f"{sweep}/1/wandb/offline-run-20260101_000000-bbb"
    )
    assert not (sweep / "report.html").exists()

    with pytest.raises(SystemExit) as info:
        main([str(sweep / "2"), "--wandb-export"])
    assert info.value.code == 2
    assert "no unsynced offline wandb runs" in capsys.readouterr().err


def test_sweep_jobs_sort_numerically(tmp_path):
    for job in (10, 2, 9, 0):
        _write_run(
            tmp_path / str(job), problem="ridge", dataset="wine", mode="implicit", solver="gd", steps=2
        )
    assert [p.name for p in find_runs(tmp_path)] == ["0", "2", "9", "10"]


def test_one_report_gathers_a_sweep_from_several_folders_and_globs(tmp_path, capsys):
    """A sweep whose jobs wrote their folders in several places (two machines' scratch
    folders, per-job folders of a cluster launcher) is one report: folders and quoted globs."""
    a, b = tmp_path / "hostA" / "sweep", tmp_path / "hostB" / "sweep"
    _write_run(a / "0", problem="ridge", dataset="diabetes", mode="implicit", solver="lbfgs")
    _write_run(b / "1", problem="ridge", dataset="diabetes", mode="unrolled", solver="lbfgs")
    _write_run(tmp_path / "jobs" / "job-2", problem="ridge", dataset="diabetes", mode="implicit", solver="gd")
    _write_run(tmp_path / "jobs" / "other", problem="ridge", dataset="diabetes", mode="implicit", solver="x")
    out = tmp_path / "report"
    assert main([str(a), str(b), str(tmp_path / "jobs" / "job-*"), "--out", str(out)]) == 0
    rows = _parse((out / "report.html").read_text()).rows
    names = [row[0] for row in rows[1:]]
    assert sorted(names) == ["hostA/sweep/0", "hostB/sweep/1", "jobs/job-2"], names
    # the default output folder of several roots is their common parent
    report = write_report([a, b])
    assert report == tmp_path / "report.html"
    with pytest.raises(ReportError, match=r"nope-\* matches no folder"):
        write_report([a, tmp_path / "nope-*"])


def test_population_members_are_drawn(tmp_path):
    run = tmp_path / "pop"
    _write_run(run, problem="ridge", dataset="diabetes", mode="implicit", solver="lbfgs", steps=4)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    with open(run / "metrics.jsonl", "w") as f:
        for step, row in enumerate(rows):
            row["member_outer_loss"] = [1.0 / (step + 1), 2.0 / (step + 1), None if step == 3 else 0.5]
            row["member_hparam/l2reg"] = [0.1, 1.0, 10.0]
            f.write(json.dumps(row) + "\n")
    summary = json.loads((run / "summary.json").read_text())
    summary |= {"best_member": 0, "population": [{"member": i} for i in range(3)]}
    (run / "summary.json").write_text(json.dumps(summary))
    loaded = load_run(run)
    losses = loaded.members["member_outer_loss"]
    assert losses.shape == (4, 3) and math.isnan(losses[3, 2]) and losses[1, 1] == 1.0
    write_report(run)
    assert (run / "population_0.png").stat().st_size > 1000
    assert len(_parse((run / "report.html").read_text()).images) == 5  # 4 figures + the population
