"""Turns a run folder, or a sweep of them, into comparison plots and one HTML page.

``write_report(path)`` finds every run under ``path`` (a folder holding ``metrics.jsonl``
and ``summary.json``, see ``hyperopt.tracking``), writes PNG figures and a self-contained
``report.html`` (figures embedded as data URIs) into the folder, and returns the page's
path. Implicit and unrolled runs of one problem/dataset share axes, coloured by mode;
black-box searches (``hyperopt-run search=random|tpe``, mode ``random``/``tpe``, one trial per
step) are drawn beside them, with the best validation loss so far vs step or trial and vs
wall-clock time (``best_loss.png``).

Command line::

    hyperopt-report multirun/2026-01-01/12-00-00            # writes .../report.html
    hyperopt-report RUN_OR_SWEEP --out reports/ridge
    hyperopt-report /scratch/a/sweep /scratch/b/sweep 'runs/*/job-*' --out reports/all  # one sweep
                                                            # whose jobs ran in several places
    hyperopt-report RUN_OR_SWEEP --wandb-export | sh        # uploads the offline wandb runs
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import glob
import html
import io
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hyperopt.tracking import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_metrics, read_summary

__all__ = [
    "ReportError",
    "Run",
    "find_runs",
    "load_run",
    "main",
    "wandb_sync_command",
    "write_report",
]

REPORT_FILE = "report.html"
IMAGES_FILE = "images.npy"
_MODE_COLOURS = {"implicit": "C0", "unrolled": "C1"}
# dashed unrolled lines stay visible where they coincide with implicit ones (the usual case)
_MODE_LINES = {"unrolled": "--"}


class ReportError(ValueError):
    """No runs to report on, or a run folder that cannot be read."""


@dataclass(frozen=True)
class Run:
    """One run folder, read back.

    Attributes:
      path: the folder.
      name: its path relative to the report root (what the report shows).
      summary, config: ``summary.json`` and ``config.yaml`` (empty if absent).
      metrics: one float array per numeric ``metrics.jsonl`` key, ordered by step.
      images: ``images.npy`` of shape ``(k, d)`` for distillation runs, else None.
    """

    path: Path
    name: str
    summary: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, np.ndarray]
    images: np.ndarray | None
    members: dict[str, np.ndarray] | None = None  # a population: (steps, K) per member_* list

    def label(self, key: str) -> str:
        """``problem``/``dataset``/``mode``/``solver`` from the summary, else the config."""
        value = self.summary.get(key)
        if value is None:
            value = self.config.get(key)
            value = value.get("name") if isinstance(value, dict) else value
        return "?" if value is None else str(value)


# ----------------------------------------------------------------------------- reading


def _natural_key(path: Path) -> list:
    # sweep job folders 0, 1, ..., 10 sort as numbers
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def find_runs(root: str | Path) -> list[Path]:
    """Every folder under ``root`` (itself included) with ``metrics.jsonl`` and a summary.

    A run killed before writing ``summary.json`` still counts if it has ``config.yaml``.
    """
    root = Path(root)
    found = {
        p.parent
        for p in root.rglob(METRICS_FILE)
        if (p.parent / SUMMARY_FILE).is_file() or (p.parent / CONFIG_FILE).is_file()
    }
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root)))


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    by_step: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        by_step[int(row.get("step", i))] = row  # a re-logged step keeps its last value
    steps = sorted(by_step)
    keys = list(dict.fromkeys(k for s in steps for k in by_step[s]))
    columns = {}
    for key in keys:
        try:
            columns[key] = np.asarray([by_step[s].get(key, math.nan) for s in steps], float)
        except (TypeError, ValueError):
            continue  # not a scalar series (a string or a list)
    return columns


def load_run(path: str | Path, root: str | Path | None = None) -> Run:
    """Reads one run folder; ``root`` sets the name shown (default: the folder's name)."""
    path = Path(path)
    name = path.name
    if root is not None and path.resolve() != Path(root).resolve():
        name = path.relative_to(root).as_posix()
    import yaml

    try:
        summary = read_summary(path) if (path / SUMMARY_FILE).is_file() else {}
        config = {}
        if (path / CONFIG_FILE).is_file():
            config = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        rows = read_metrics(path)
        metrics = _columns(rows)
        members = _member_columns(rows)
        images = None
        if (path / IMAGES_FILE).is_file():
            images = np.load(path / IMAGES_FILE, allow_pickle=False)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ReportError(f"cannot read run {path}: {_one_line(e)}") from e
    if not isinstance(summary, dict) or not isinstance(config, dict):
        raise ReportError(f"cannot read run {path}: summary/config is not a mapping")
    return Run(path, name, summary, config, metrics, images, members)


def _member_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    """A population's per-member series: ``member_outer_loss`` etc. as (steps, K) arrays
    (NaN where a member did not step), ordered by step; None for a single run."""
    rows = [r for r in rows if isinstance(r.get("member_outer_loss"), list)]
    if not rows:
        return None
    by_step = {int(r.get("step", i)): r for i, r in enumerate(rows)}
    steps = sorted(by_step)
    out = {"step": np.asarray(steps, float)}
    for key in dict.fromkeys(k for s in steps for k in by_step[s] if k.startswith("member_")):
        lists = [by_step[s].get(key) for s in steps]
        if not all(isinstance(v, list) for v in lists) or key == "member_active":
            continue
        size = max(len(v) for v in lists)
        out[key] = np.asarray([[math.nan if x is None else float(x) for x in v] + [math.nan] * (size - len(v))
                               for v in lists], float)
    return out


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ----------------------------------------------------------------------------- figures


def _figure(nrows: int, ncols: int, width: float = 5.0, height: float = 3.4):
    # A bare Figure renders with the Agg canvas: no pyplot, no global backend switch,
    # so calling this from a notebook or a GUI session changes nothing there.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _colour(mode: str, modes: list[str]) -> str:
    return _MODE_COLOURS.get(mode, f"C{2 + modes.index(mode) % 8}")


def _groups(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(f"{run.label('problem')} / {run.label('dataset')}", []).append(run)
    return groups


def _best_so_far(run: Run) -> Run:
    """The run with ``best_val_loss``: the lowest validation loss up to each step or trial (the
    search logs its own, the best trial's; a gradient-based run's is the running minimum)."""
    if "best_val_loss" in run.metrics:
        return run
    values = run.metrics.get("val_loss", run.metrics.get("outer_loss"))
    if values is None:
        return run
    return dataclasses.replace(run, metrics={**run.metrics, "best_val_loss": np.fmin.accumulate(values)})


def _plot_series(ax, runs, modes, x_key: str, y_key: str, xlabel: str, title: str) -> None:
    plotted = {}
    values = []
    for run in runs:
        if y_key not in run.metrics or x_key not in run.metrics:
            continue
        mode = run.label("mode")
        (line,) = ax.plot(
            run.metrics[x_key],
            run.metrics[y_key],
            color=_colour(mode, modes),
            linestyle=_MODE_LINES.get(mode, "-"),
            alpha=0.85,
            lw=1.4,
        )
        plotted.setdefault(mode, line)
        values.append(run.metrics[y_key])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(y_key)
    if not plotted:
        ax.text(
            0.5,
            0.5,
            f"no {y_key} logged",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.5",
        )
        return
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(plotted.values(), plotted.keys(), title="mode", fontsize=8)


def _series_figure(runs, modes, panels: list[tuple[str, str, str]]):
    """One row per problem/dataset, one column per (x key, y key, x label) panel."""
    groups = _groups(runs)
    fig, axes = _figure(len(groups), len(panels))
    for row, (group, group_runs) in enumerate(groups.items()):
        for col, (x_key, y_key, xlabel) in enumerate(panels):
            _plot_series(axes[row, col], group_runs, modes, x_key, y_key, xlabel, group)
    return fig


def _hparam_figure(runs, modes):
    panels = [
        (group, key, group_runs)
        for group, group_runs in _groups(runs).items()
        for key in dict.fromkeys(
            k for r in group_runs for k in r.metrics if k.startswith(("hparam/", "hparam_norm/"))
        )
    ]
    if not panels:
        return None
    ncols = min(3, len(panels))
    fig, axes = _figure(math.ceil(len(panels) / ncols), ncols, width=4.4)
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for ax, (group, key, group_runs) in zip(axes.flat, panels, strict=False):
        _plot_series(ax, group_runs, modes, "step", key, "outer step", group)
    return fig


def _resources_figure(runs, modes):
    keys = [
        ("total_time", "total time (s)"),
        ("compile_time", "compile time (s)"),
        ("peak_memory_mb", "peak memory (MB)"),
    ]
    fig, axes = _figure(1, len(keys), width=4.4, height=0.9 + 0.32 * len(runs))
    y = np.arange(len(runs))
    colours = [_colour(r.label("mode"), modes) for r in runs]
    for ax, (key, title) in zip(axes[0], keys, strict=True):
        values = np.array([_as_float(r.summary.get(key)) for r in runs])
        ax.barh(y, np.nan_to_num(values), color=colours)
        if np.isnan(values).all():
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks(y, [f"{r.name} ({r.label('mode')})" for r in runs], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    return fig


def _images_figure(run: Run):
    images = np.asarray(run.images, float)
    images = images.reshape(len(images), -1)
    shape = run.summary.get("image_shape")
    if not shape:
        side = math.isqrt(images.shape[1])
        shape = (side, side)
    if math.prod(shape) != images.shape[1]:
        return None
    labels = run.summary.get("image_labels") or [None] * len(images)
    ncols = min(len(images), 10)
    nrows = math.ceil(len(images) / ncols)
    fig, axes = _figure(nrows, ncols, width=1.3, height=1.5)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image.reshape(shape), cmap="gray_r", interpolation="nearest")
        if label is not None:
            ax.set_title(str(label), fontsize=9)
    fig.suptitle(f"{run.name} ({run.label('mode')})", fontsize=10)
    return fig


def _population_figure(run: Run):
    """A population run: every member's outer loss and (scalar) hyperparameters per step, the
    best member bold."""
    members = run.members
    keys = ["member_outer_loss"] + [k for k in members if k.startswith("member_hparam/")][:2]
    fig, axes = _figure(1, len(keys), width=4.6)
    best = run.summary.get("best_member")
    for ax, key in zip(axes[0], keys, strict=True):
        values = members[key]
        for i in range(values.shape[1]):
            ax.plot(members["step"], values[:, i], color=f"C{i % 10}", lw=2.4 if i == best else 1.0,
                    alpha=1.0 if i == best else 0.7, label=f"member {i}" + (" (best)" if i == best else ""))
        finite = values[np.isfinite(values)]
        spread = finite.size and finite.min() > 0 and finite.max() / finite.min() > 100
        if spread or (finite.size and finite.min() > 0 and key != "member_outer_loss"):
            ax.set_yscale("log")
        ax.set_xlabel("outer step")
        ax.set_ylabel(key.removeprefix("member_"))
        ax.grid(alpha=0.3)
    if members["member_outer_loss"].shape[1] <= 10:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{run.name}: population of {members['member_outer_loss'].shape[1]}", fontsize=10)
    return fig


def _save(fig, path: Path) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


# ----------------------------------------------------------------------------- HTML


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        if len(value) == 1:
            return _format(value[0])
        return f"[{len(value)} values]"
    return str(value)


def _metric_keys(runs: list[Run]) -> list[str]:
    keys = dict.fromkeys(
        k
        for r in runs
        for part in ("final", "best")
        for k in (r.summary.get(part) or {})
        if k.startswith(("val_", "test_"))
    )
    order = {"val_loss": 0, "val_accuracy": 1, "test_loss": 2, "test_accuracy": 3}
    return sorted(keys, key=lambda k: (order.get(k, 4), k))


def _table(runs: list[Run]) -> str:
    metrics = _metric_keys(runs)
    head = ["run", "problem", "dataset", "mode", "solver", "status", "steps", "best step"]
    head += [f"{part} {key}" for key in metrics for part in ("final", "best")]
    head += ["total time (s)", "compile time (s)", "peak memory (MB)", "hyperparameters"]
    rows = []
    for run in runs:
        s = run.summary
        cells = [run.name] + [run.label(k) for k in ("problem", "dataset", "mode", "solver")]
        cells += [s.get("status", "no summary"), s.get("steps", len(run.metrics.get("step", [])))]
        cells += [s.get("best_step")]
        cells += [(s.get(part) or {}).get(key) for key in metrics for part in ("final", "best")]
        cells += [s.get("total_time"), s.get("compile_time"), s.get("peak_memory_mb")]
        hparams = s.get("hparams") or {}
        cells.append(", ".join(f"{k}={_format(v)}" for k, v in hparams.items()))
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="{"num" if isinstance(c, (int, float)) else "txt"}">'
                f"{html.escape(_format(c))}</td>"
                for c in cells
            )
            + "</tr>"
        )
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (
        f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + ("\n</tbody>\n</table>")
    )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _page(title: str, table: str, figures: list[tuple[str, str, bytes]]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Runs</h2>",
        table,
    ]
    for file, caption, data in figures:
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        parts += [
            f"<h2>{html.escape(caption)}</h2>",
            f'<figure><img src="{uri}" alt="{html.escape(caption)}">',
            f'<figcaption>{html.escape(caption)} (<a href="{html.escape(file)}">'
            f"{html.escape(file)}</a>)</figcaption></figure>",
        ]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- entry points


def _roots(paths) -> list[Path]:
    """Folders from paths and glob patterns (``runs/*/job-*``: quoted, expanded here)."""
    roots = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        text = str(path)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches:
            raise ReportError(f"{text} matches no folder")
        for match in map(Path, matches):
            if not match.is_dir():
                raise ReportError(f"{match} is not a folder" if match.exists() else f"{match} does not exist")
            roots.append(match)
    return list(dict.fromkeys(roots))


def write_report(path, out: str | Path | None = None) -> Path:
    """Writes ``report.html`` and its PNG figures for the run(s) under ``path``.

    Args:
      path: a run folder or a sweep folder (searched recursively), a glob pattern, or a list
        of them: the runs of one sweep wherever its jobs wrote them (several machines' scratch
        folders, a cluster's per-job folders).
      out: where to write; default ``path`` itself (for several, their common parent).

    Returns:
      The path of ``report.html``.

    Raises:
      ReportError: ``path`` does not exist, holds no runs, or a run cannot be read.
    """
    roots = _roots(path)
    root = roots[0] if len(roots) == 1 else Path(os.path.commonpath([r.absolute() for r in roots]))
    run_dirs = list(dict.fromkeys(d for r in roots for d in find_runs(r)))
    if not run_dirs:
        raise ReportError(f"no runs under {', '.join(map(str, roots))} (no folder with {METRICS_FILE} "
                          f"and {SUMMARY_FILE})")
    runs = ([load_run(d, root) for d in run_dirs] if len(roots) == 1 else
            [load_run(d.absolute(), root) for d in run_dirs])  # named relative to the common parent
    out_dir = Path(out) if out is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)

    modes = list(dict.fromkeys(r.label("mode") for r in runs))
    figures = {
        "outer_loss.png": (
            "Outer loss vs outer step and vs wall-clock time",
            _series_figure(
                runs,
                modes,
                [("step", "outer_loss", "outer step"), ("time", "outer_loss", "time (s)")],
            ),
        ),
        "step_cost.png": (
            "Time and inner iterations per outer step",
            _series_figure(
                runs,
                modes,
                [
                    ("step", "step_time", "outer step"),
                    ("step", "inner_iterations", "outer step"),
                ],
            ),
        ),
        "hparams.png": ("Hyperparameter trajectories", _hparam_figure(runs, modes)),
        "resources.png": (
            "Total time, compile time and peak memory per run",
            _resources_figure(runs, modes),
        ),
    }
    if any(r.summary.get("search") for r in runs):
        figures["best_loss.png"] = (
            "Best validation loss so far vs outer step or trial, and vs wall-clock time "
            "(gradient-based and black-box runs)",
            _series_figure([_best_so_far(r) for r in runs], modes,
                           [("step", "best_val_loss", "outer step or trial"),
                            ("time", "best_val_loss", "time (s)")]))
    for i, run in enumerate(runs):
        if run.images is not None:
            figures[f"images_{i}.png"] = (f"Learned images: {run.name}", _images_figure(run))
        if run.members is not None and "member_outer_loss" in run.members:
            figures[f"population_{i}.png"] = (f"Population members: {run.name}", _population_figure(run))

    rendered = [
        (file, caption, _save(fig, out_dir / file))
        for file, (caption, fig) in figures.items()
        if fig is not None
    ]
    title = f"hyperopt report: {root.resolve().name} ({len(runs)} run{'s' * (len(runs) > 1)})"
    report = out_dir / REPORT_FILE
    report.write_text(_page(title, _table(runs), rendered), encoding="utf-8")
    return report


def wandb_sync_command(path) -> str:
    """The ``wandb sync DIR...`` command for the unsynced offline wandb runs under ``path``
    (a folder, a glob pattern or a list of them)."""
    roots = _roots(path)
    root = ", ".join(map(str, roots))
    run_dirs = sorted(
        (
            d
            for r in roots
            for d in r.rglob("offline-run-*")
            if d.is_dir() and any(not f.with_suffix(".wandb.synced").exists() for f in d.glob("*.wandb"))
        ),
        key=_natural_key,
    )
    if not run_dirs:
        raise ReportError(f"no unsynced offline wandb runs under {root}")
    return "wandb sync " + " ".join(shlex.quote(str(d)) for d in run_dirs)


def main(argv: Sequence[str] | None = None) -> int:
    """``hyperopt-report PATH [--out DIR] [--wandb-export]``; exits 2 with one line on error."""
    parser = argparse.ArgumentParser(
        prog="hyperopt-report",
        description="Write report.html with plots comparing the runs under PATH "
        "(a run folder or a multirun sweep folder).",
    )
    parser.add_argument("path", type=Path, nargs="+",
                        help="run or sweep folder(s) or glob patterns: one report over all their runs")
    parser.add_argument("--out", type=Path, help="folder for report.html (default: PATH; for "
                        "several, their common parent)")
    parser.add_argument(
        "--wandb-export",
        action="store_true",
        help="instead of a report, print the `wandb sync` command that "
        "uploads the offline wandb runs under PATH",
    )
    args = parser.parse_args(argv)
    try:
        if args.wandb_export:
            print(wandb_sync_command(args.path))
        else:
            print(write_report(args.path, args.out))
    except (ReportError, OSError) as e:
        print(f"hyperopt-report: error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
