"""Which α and ρ to ship: one leaderboard per task, our runs beside the paper's rows.

``python -m mnet_tasks.leaderboard FOLDER ...`` reads every completed run under the folders (their metrics.json,
as :mod:`mnet_tasks.sweeps` gathers them) and, for each task they ran, writes to ``<tasks dir>/<task>/``:

- ``leaderboard.csv``: one row per model (:data:`COLUMNS`, with one column per metric between ``monitor_mode``
  and ``madds``): our runs (``source=ours``, the final epoch's metrics) and the paper's rows (``source=paper``,
  from ``paper.csv`` in the same folder, if there is one). Rows already in leaderboard.csv stay unless a run of
  the same folder replaces them (``--replace`` starts afresh), so sweeps add up;
- ``LEADERBOARD.md``: the same as tables, one per dataset and split, the best primary metric of each MAdds bracket
  in bold;
- ``leaderboard.png``: primary metric against MAdds and against parameters, both on log axes (the paper's
  Figures 4 and 5), the paper's rows hollow.

Everything about a task comes from its records (``task``, ``monitor``, ``monitor_mode``, the metrics) and from
files in its folder, so a task added as a plug-in gets a leaderboard the same way. Latency is measured here,
for each new row whose checkpoint still exists: the task module rebuilt from the checkpoint, BatchNorm folded,
batch 1 at the run's input size, eager PyTorch on the CPU, the median of ``--latency-repeats`` calls after
warm-up, the models taking turns (``--latency-threads`` threads, default 1). ``--no-latency`` skips it.

Command line: argparse, not a Hydra app: its input is folders of finished runs, not a config.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import platform
import shlex
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from omegaconf import OmegaConf

from mnet_tasks.sweeps import HYDRA_SUBDIR, JobResult, find_jobs

log = logging.getLogger(__name__)

SOURCES = ("ours", "paper")
LEADING_COLUMNS = (
    "source",
    "reference",
    "model",
    "dataset",
    "split",
    "alpha",
    "rho",
    "input_size",
    "monitor",
    "monitor_mode",
)
TRAILING_COLUMNS = (
    "madds",
    "params",
    "latency_ms",
    "latency_threads",
    "checkpoint_bytes",
    "epochs",
    "commit",
    "date",
    "run",
)
COLUMNS = LEADING_COLUMNS + TRAILING_COLUMNS  # the fixed columns; the metric columns go between the two parts
REQUIRED_COLUMNS = ("source", "model", "dataset", "split", "monitor", "monitor_mode", "madds", "params")
NUMERIC_COLUMNS = (
    "alpha",
    "rho",
    "input_size",
    "madds",
    "params",
    "latency_ms",
    "latency_threads",
    "checkpoint_bytes",
    "epochs",
)
CSV_NAME, MARKDOWN_NAME, PLOT_NAME, PAPER_NAME = "leaderboard.csv", "LEADERBOARD.md", "leaderboard.png", "paper.csv"


class LeaderboardError(ValueError):
    """A leaderboard or paper CSV that breaks the schema; the message names the file and line."""


# --- rows ---


def metric_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every column that is not a fixed one: the metrics, in first-seen order."""
    fixed = set(COLUMNS)
    return list(dict.fromkeys(key for row in rows for key in row if key not in fixed))


def _hydra_file(job: JobResult, name: str) -> Any:
    path = job.folder / HYDRA_SUBDIR / name
    return OmegaConf.load(path) if path.is_file() else None


def describe_model(job: JobResult) -> tuple[str, str]:
    """The model's name and where its settings came from, from the run's Hydra files (if it has them).

    The name says the width and input size, the task's config option when it differs from the task's name (a
    variant of a task, e.g. another detector), and any backbone option away from the paper's network (full
    convolutions, shallow, pretrained, another activation). The reference is the experiment config(s) the run used.
    """
    record = job.record
    parts = [f"MobileNetV1 {record['alpha']:g}-{record['input_size']}"]
    hydra = _hydra_file(job, "hydra.yaml")
    choices = dict(hydra.hydra.runtime.choices) if hydra is not None else {}
    if choices.get("task") not in (None, record["task"]):
        parts.insert(0, f"{choices['task']}:")
    config = _hydra_file(job, "config.yaml")
    if config is not None:
        backbone = config.get("backbone", {})
        if backbone.get("separable") is False:
            parts.append("full conv")
        if backbone.get("shallow"):
            parts.append("shallow")
        if backbone.get("activation") not in (None, "relu6"):
            parts.append(str(backbone.activation))
        if backbone.get("pretrained"):
            parts.append("pretrained")
    experiments = [
        f"{group}={choice}" for group, choice in choices.items() if group.startswith("experiment") and choice
    ]
    return " ".join(parts), " ".join(experiments)


def row_from_job(job: JobResult, run: str | None = None) -> dict[str, Any]:
    """One leaderboard row from a completed run, named ``run`` (default: :func:`run_path` of its folder)."""
    record = job.record
    model, reference = describe_model(job)
    checkpoint = record.get("checkpoint")
    checkpoint_bytes = record.get("checkpoint_bytes")
    if checkpoint_bytes is None and checkpoint and Path(checkpoint).is_file():
        checkpoint_bytes = Path(checkpoint).stat().st_size
    return {
        "source": "ours",
        "reference": reference,
        "model": model,
        **{key: record.get(key) for key in LEADING_COLUMNS[3:]},
        **record["metrics"]["final"],
        "madds": record.get("madds"),
        "params": record.get("params"),
        "latency_ms": None,
        "latency_threads": None,
        "checkpoint_bytes": checkpoint_bytes,
        "epochs": record.get("epochs"),
        "commit": record.get("commit"),
        "date": record.get("date"),
        "run": run if run is not None else run_path(job.folder),
    }


def run_path(folder: Path) -> str:
    """The run folder relative to the working directory (the repository root, where leaderboards are regenerated)
    when it lies under it, so that a committed leaderboard names a folder of the repository, not of one machine."""
    folder = folder.resolve()
    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        log.warning("run %s lies outside the working directory: its row keeps the absolute path", folder)
        return str(folder)


def completed_jobs(folders: Sequence[Path]) -> list[JobResult]:
    """The completed runs under the folders, with metrics; the others are counted in the log."""
    jobs, skipped = [], Counter()
    for folder in folders:
        for job in find_jobs(folder):
            if job.status == "completed" and job.record.get("metrics", {}).get("final"):
                jobs.append(job)
            else:
                skipped[job.status] += 1
    if skipped:
        log.info("left out %s", ", ".join(f"{count} {status} run(s)" for status, count in sorted(skipped.items())))
    return jobs


# --- the CSV files and their schema ---


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LeaderboardError(f"{path}, line {line}: {column}={text!r} is not a number") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a leaderboard.csv or paper.csv, checked: required columns, a known source, numbers where numbers
    go, and for every row a value of its primary metric (``monitor``) in a column of that name."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise LeaderboardError(f"{path}: no column {', '.join(missing)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = {key: (value if value != "" else None) for key, value in raw.items()}
            if row["source"] not in SOURCES:
                raise LeaderboardError(f"{path}, line {line}: source must be one of {SOURCES}, got {row['source']!r}")
            if row["monitor_mode"] not in ("max", "min"):
                raise LeaderboardError(f"{path}, line {line}: monitor_mode must be max or min")
            if row.get(row["monitor"]) is None:
                raise LeaderboardError(f"{path}, line {line}: no value for its monitor {row['monitor']!r}")
            for column in (*NUMERIC_COLUMNS, *metric_columns([raw])):
                if row.get(column) is not None:
                    row[column] = _number(row[column], path, line, column)
            for column in ("input_size", "madds", "params", "latency_threads", "checkpoint_bytes", "epochs"):
                if row.get(column) is not None:
                    row[column] = int(row[column])
            rows.append(row)
    return rows


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns = [*LEADING_COLUMNS, *metric_columns(rows), *TRAILING_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def merge_rows(previous: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], paper: Sequence[dict[str, Any]]):
    """Our rows, those of earlier runs kept unless a new row comes from the same run folder, then the paper's."""
    new_runs = {row["run"] for row in new}
    kept = [row for row in previous if row["source"] == "ours" and row.get("run") not in new_runs]
    return [*kept, *new, *paper]


# --- latency ---


def measure_latency(rows: Sequence[dict[str, Any]], checkpoints: dict[str, str], threads: int, repeats: int) -> None:
    """Fill ``latency_ms`` of the rows whose checkpoint rebuilds; the others are named in the log."""
    import torch

    from mnet_tasks.timing import Subject, Timer, eager_call, time_interleaved
    from mnet_tasks.trained import load_trained

    timers = {}
    for row in rows:
        checkpoint = checkpoints.get(row["run"])
        if not checkpoint or not Path(checkpoint).is_file():
            log.warning("no latency for %s: its checkpoint %s is gone", row["run"], checkpoint)
            continue
        try:
            trained = load_trained(checkpoint, crop_pct=1.0)
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            log.warning("no latency for %s: %s", row["run"], error)
            continue
        network, adapter, size = trained.network(), trained.adapter, int(row["input_size"])
        subject = Subject(name=row["run"], build=lambda network=network: network, input_size=size, adapter=adapter)
        call = eager_call(network, adapter.exported_input(adapter.bench_input(size, 1)), torch.contiguous_format)
        timers[row["run"]] = Timer(subject, "eager_nchw", 1, call)
    if not timers:
        return
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rounds = min(5, repeats)
        log.info("timing %d models, %d calls each", len(timers), repeats)
        time_interleaved(list(timers.values()), warmup=2, rounds=rounds, per_round=max(1, repeats // rounds))
    finally:
        torch.set_num_threads(previous_threads)
    for row in rows:
        if row["run"] in timers:
            row["latency_ms"] = round(1000 * timers[row["run"]].median_s(), 3)
            row["latency_threads"] = threads


# --- rendering ---


def cost_bracket(madds: float) -> tuple[float, float]:
    """The MAdds bracket in 1-3-10 steps: [10 M, 30 M), [30 M, 100 M), [100 M, 300 M), ..."""
    exponent = math.floor(math.log10(madds))
    low = 10.0**exponent
    return (low, 3 * low) if madds < 3 * low else (3 * low, 10 * low)


def best_in_brackets(rows: Sequence[dict[str, Any]]) -> set[int]:
    """Indices of the rows with the best primary metric among the rows of their dataset, split, primary metric
    and MAdds bracket."""
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        if row.get("madds"):
            key = (row["source"], row["dataset"], row["split"], row["monitor"], cost_bracket(row["madds"]))
            groups.setdefault(key, []).append(index)
    best = set()
    for indices in groups.values():
        pick = max if rows[indices[0]]["monitor_mode"] == "max" else min
        best.add(pick(indices, key=lambda index: float(rows[index][rows[index]["monitor"]])))
    return best


def _millions(value: Any) -> str:
    """Three significant digits, or the whole number of millions from 100 M up."""
    if value is None:
        return ""
    millions = float(value) / 1e6
    return f"{millions:.0f}" if millions >= 100 else f"{millions:.3g}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render_markdown(task: str, rows: Sequence[dict[str, Any]], command: str) -> str:
    monitor, mode = Counter((row["monitor"], row["monitor_mode"]) for row in rows).most_common(1)[0][0]
    latency_rows = [row for row in rows if row.get("latency_ms") is not None]
    lines = [
        f"# Leaderboard: {task}",
        "",
        f"Generated by `{command}`, run from the repository root.",
        f"`ours`: runs of mnet_tasks, the final epoch's metrics on the split named; `paper`: {PAPER_NAME}, the "
        "paper's numbers on its datasets (not comparable with the built-in synthetic data, shown for scale).",
        f"Primary metric **{monitor}** ({'higher' if mode == 'max' else 'lower'} is better); in bold, the best of "
        "each dataset and split within its MAdds bracket (1-3-10 steps: 10-30 M, 30-100 M, ...).",
    ]
    if latency_rows:
        threads = sorted({row["latency_threads"] for row in latency_rows})
        lines.append(
            "Latency: batch 1 on the CPU at the model's input size, the whole task network rebuilt from its "
            "checkpoint (BatchNorm folded, post-processing included), eager PyTorch, median after warm-up, "
            f"{'/'.join(map(str, threads))} thread(s), measured by the command above on {platform.machine()} with "
            f"{os.cpu_count()} cores "
            "(compare latencies measured in one regeneration only)."
        )
    lines += ["", f"![{monitor} against MAdds and parameters]({PLOT_NAME})", ""]
    best = best_in_brackets(rows)
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault((row["source"] != "ours", row["dataset"], row["split"]), []).append(index)
    for (_, dataset, split), indices in sorted(groups.items(), key=lambda item: (item[0][0], str(item[0][1:]))):
        indices.sort(key=lambda index: rows[index].get("madds") or 0)
        group = [rows[index] for index in indices]
        secondary = [m for m in metric_columns(group) if m != monitor and any(r.get(m) is not None for r in group)]
        metrics = [monitor, *secondary]
        headers = {
            "model": "model",
            "reference": "reference",
            "alpha": "α",
            "rho": "ρ",
            "input_size": "input",
            **{metric: f"**{metric}**" if metric == monitor else metric for metric in metrics},
            "madds": "MAdds (M)",
            "params": "params (M)",
            "latency_ms": "latency (ms)",
            "checkpoint_bytes": "checkpoint (MB)",
            "epochs": "epochs",
            "commit": "commit",
            "date": "date",
        }
        shown = [key for key in headers if any(row.get(key) not in (None, "") for row in group)]
        lines += [f"## {group[0]['source']}: {dataset} ({split})", ""]
        lines.append("| " + " | ".join(headers[key] for key in shown) + " |")
        lines.append("|" + "---|" * len(shown))
        for index, row in zip(indices, group, strict=True):
            cells = []
            for key in shown:
                value = row.get(key)
                if key in ("madds", "params"):
                    text = _millions(value)
                elif key == "checkpoint_bytes":
                    text = "" if value is None else f"{value / 1e6:.2f}"
                elif key == "date":
                    text = str(value or "")[:10]
                else:
                    text = _cell(value)
                if key == monitor and index in best:
                    text = f"**{text}**"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def short_label(row: dict[str, Any]) -> str:
    """A point's name on the plot: width-size (with our variants), or the paper's name of another network."""
    if row["source"] == "ours":
        return row["model"].replace("MobileNetV1 ", "")
    if row.get("alpha") and row.get("input_size") and row["model"][:1].isdigit():
        return f"{row['alpha']:g}-{row['input_size']}"
    return row["model"]


def render_plot(task: str, rows: Sequence[dict[str, Any]], path: Path | BinaryIO) -> None:
    """Primary metric against MAdds and against parameters (log axes); one colour per source, dataset and split,
    our rows filled, the paper's hollow. Saved as a PNG to ``path``, a file or a binary stream (a page embeds it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = Counter(row["monitor"] for row in rows).most_common(1)[0][0]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["monitor"] == monitor and row.get("madds") and row.get("params"):
            groups.setdefault((row["source"], row["dataset"], row["split"]), []).append(row)
    colours = plt.get_cmap("tab10")
    for number, ((source, dataset, split), group) in enumerate(sorted(groups.items(), key=lambda item: item[0])):
        group.sort(key=lambda row: row["madds"])
        ours = source == "ours"
        style = {
            "color": colours(number % 10),
            "marker": "o" if ours else "s",
            "markerfacecolor": colours(number % 10) if ours else "none",
            "linestyle": "none",
            "label": f"{source}: {dataset} ({split})",
        }
        values = [float(row[monitor]) for row in group]
        for axis, cost in zip(axes, ("madds", "params"), strict=True):
            axis.plot([row[cost] for row in group], values, **style)
            if cost == "params" and not ours:
                continue  # the paper's widths share their parameter counts: names there would overlap
            for row, value in zip(group, values, strict=True):
                label = short_label(row)
                axis.annotate(
                    label, (row[cost], value), fontsize=6, alpha=0.7, xytext=(3, 2), textcoords="offset points"
                )
    for axis, label in zip(axes, ("MAdds (log)", "parameters (log)"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(monitor)
    axes[1].legend(fontsize=7, loc="best")
    figure.suptitle(f"{task}: {monitor} against cost (our runs filled, the paper's rows hollow)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


# --- the command ---


def update_task(
    task: str,
    task_dir: Path,
    new_rows: Sequence[dict[str, Any]],
    checkpoints: dict[str, str],
    replace: bool,
    latency: dict[str, int] | None,
    command: str,
) -> Path:
    """Write one task's leaderboard.csv, LEADERBOARD.md and leaderboard.png; returns the markdown's path."""
    task_dir.mkdir(parents=True, exist_ok=True)
    csv_path, paper_path = task_dir / CSV_NAME, task_dir / PAPER_NAME
    previous = read_rows(csv_path) if csv_path.is_file() and not replace else []
    paper = read_rows(paper_path) if paper_path.is_file() else []
    if any(row["source"] != "paper" for row in paper):
        raise LeaderboardError(f"{paper_path}: every row must have source=paper")
    if latency is not None:
        measure_latency(new_rows, checkpoints, **latency)
    rows = merge_rows(previous, new_rows, paper)
    if not rows:
        raise LeaderboardError(f"nothing to show for {task}: no runs, and no {CSV_NAME} or {PAPER_NAME} in {task_dir}")
    write_rows(csv_path, rows)
    markdown = task_dir / MARKDOWN_NAME
    markdown.write_text(render_markdown(task, rows, command) + "\n")
    render_plot(task, rows, task_dir / PLOT_NAME)
    ours = sum(row["source"] == "ours" for row in rows)
    log.info("%s: %d rows (%d ours, %d new, %d paper)", markdown, len(rows), ours, len(new_rows), len(paper))
    return markdown


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m mnet_tasks.leaderboard",
        description="Leaderboards per task from folders of runs: <tasks-dir>/<task>/leaderboard.csv, LEADERBOARD.md "
        "and leaderboard.png, beside the paper's rows (<tasks-dir>/<task>/paper.csv).",
    )
    parser.add_argument("runs", nargs="*", type=Path, help="folders of runs (multirun folders, outputs/, ...)")
    parser.add_argument("--tasks-dir", type=Path, default=Path("tasks"), help="where each task's folder is (tasks)")
    parser.add_argument("--task", action="append", help="only this task (repeatable); with no runs: re-render it")
    parser.add_argument("--replace", action="store_true", help="drop the rows of earlier runs in leaderboard.csv")
    parser.add_argument("--no-latency", action="store_true", help="do not measure the new rows' CPU latency")
    parser.add_argument("--latency-threads", type=int, default=1)
    parser.add_argument("--latency-repeats", type=int, default=20, help="timed batch-1 calls per model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.runs and not args.task:
        parser.error("give folders of runs, or --task NAME to re-render a task's leaderboard")

    by_task: dict[str, list[JobResult]] = {}
    for job in completed_jobs(args.runs):
        by_task.setdefault(job.record["task"], []).append(job)
    tasks = args.task or sorted(by_task)
    if args.runs and not by_task:
        raise SystemExit(f"no completed runs under {', '.join(map(str, args.runs))}")
    latency = None if args.no_latency else {"threads": args.latency_threads, "repeats": args.latency_repeats}
    command = "python -m mnet_tasks.leaderboard " + shlex.join(sys.argv[1:] if argv is None else argv)
    written = []
    for task in tasks:
        jobs = by_task.get(task, [])
        rows = [row_from_job(job) for job in jobs]
        checkpoints = {row["run"]: job.record.get("checkpoint") for row, job in zip(rows, jobs, strict=True)}
        path = update_task(task, args.tasks_dir / task, rows, checkpoints, args.replace, latency, command)
        print(path)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
