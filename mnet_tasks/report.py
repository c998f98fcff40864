"""One page per run: ``report.html`` in the run folder, and one per sweep over its jobs.

A run's page gathers what the run left in its folder, each part only when its file is there: the record
(``metrics.json``: task, dataset, status, model, cost, final and best metrics), the curves of the CSV log
(``csv/metrics.csv``), every picture (the latest file of a per-epoch series ``<name>_epochNNN.png``), the error
analysis (``analysis/``: pictures and CSV tables), the data report and the skipped files, and the config with the
command line. The page is one self-contained file: pictures are embedded as PNG data URIs, the style is inline, and
nothing is fetched, so it can be mailed or opened from an archive. :func:`~mnet_tasks.run.run` writes it at the end
of every job (``report: true``, the default); a sweep's page (:func:`write_sweep_report`, written by
:class:`SweepReport` beside summary.csv) holds the table over its jobs with links to their
pages, and the leaderboard plot of its completed jobs.

``python -m mnet_tasks.report FOLDER ...`` (re)writes the page of a run folder or of a sweep folder.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from statistics import mean
from typing import Any
from urllib.parse import quote

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mnet_tasks.analysis import ANALYSIS_FOLDER
from mnet_tasks.data.bad_files import DATA_REPORT, SKIPPED_FILES
from mnet_tasks.leaderboard import completed_jobs, render_plot, row_from_job
from mnet_tasks.sweeps import (
    HYDRA_SUBDIR,
    RECORD_NAME,
    SUMMARY_NAME,
    JobResult,
    SweepSummary,
    find_jobs,
    read_record,
    run_command,
)

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
CURVES_CSV = Path("csv") / "metrics.csv"  # conf/logger/csv.yaml: Lightning's CSV log in the run folder
CHECKPOINTS_DIR = "checkpoints"  # conf/callbacks/default.yaml
CONFIG_FILES = (Path(HYDRA_SUBDIR) / "config.yaml", Path("config.yaml"))  # Hydra's, or a resolved one saved beside
EPOCH_SERIES = re.compile(r"(?P<name>.+)_epoch(?P<epoch>\d+)")  # a file per epoch: pictures/detections_epoch007
MAX_TABLE_ROWS = 50
CURVE_COLUMNS = 3

STYLE = """
body { margin: 0; background: #f5f6f8; color: #1e2430; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #4a5363; }
section { background: #fff; border: 1px solid #dfe3ea; border-radius: 8px; padding: 14px 20px; margin: 14px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
th, td { border-bottom: 1px solid #e7e9ee; padding: 4px 12px 4px 0; text-align: left; vertical-align: top;
  font-variant-numeric: tabular-nums; }
thead th { border-bottom: 2px solid #cfd4dc; }
table.fields th { font-weight: 500; color: #4a5363; padding-right: 24px; }
.primary { font-weight: 700; }
.status { display: inline-block; padding: 0 9px; border-radius: 10px; font-weight: 600; }
.status.completed { background: #dcf3e2; color: #17602d; }
.status.failed { background: #fbe0df; color: #8f1d1d; }
.status.other { background: #fbf0d0; color: #6d5200; }
pre { background: #f3f4f7; border-radius: 6px; padding: 10px 12px; overflow: auto; font-size: 12px; }
pre.wrap, pre.error { white-space: pre-wrap; }
pre.error { background: #fdf0ef; color: #8f1d1d; }
figure { display: inline-block; margin: 6px 14px 10px 0; vertical-align: top; max-width: 100%; }
img { max-width: 100%; border: 1px solid #e1e4ea; }
figcaption, .note, footer { font-size: 12px; color: #5f6877; }
a { color: #1f5fbf; }
summary { cursor: pointer; font-weight: 600; color: #4a5363; margin: 10px 0 4px; }
"""


class ReportError(ValueError):
    """A folder that holds neither a run nor runs; the message names it."""


class Markup(str):
    """HTML built here from escaped parts: a table puts it into a cell as it is, where it escapes plain text."""


# --- HTML pieces ---


def _text(value: Any) -> str:
    if isinstance(value, Markup):
        return value
    return "" if value is None else html.escape(str(value))


def _table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of named values; the pairs without a value are left out."""
    rows = "".join(
        f"<tr><th>{_text(key)}</th><td>{_text(value)}</td></tr>\n" for key, value in pairs if value not in (None, "")
    )
    return f'<table class="fields"><tbody>\n{rows}</tbody></table>'


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _image(png: bytes, alt: str) -> Markup:
    data = base64.b64encode(png).decode("ascii")
    return Markup(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_image(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _status(status: str) -> Markup:
    kind = status if status in ("completed", "failed") else "other"
    return Markup(f'<span class="status {kind}">{html.escape(status)}</span>')


def _page(title: str, heading: str, sections: Iterable[str]) -> str:
    written = datetime.now().astimezone().isoformat(timespec="seconds")
    body = "\n".join(section for section in sections if section)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
{heading}
{body}
<footer>written {html.escape(written)} by mnet_tasks.report (python -m mnet_tasks.report FOLDER rewrites it)</footer>
</main>
</body>
</html>
"""


def _metric(value: Any) -> str:
    """A metric as the run summary prints it."""
    return "" if value is None else f"{value:.4f}"


def _millions(value: int | None, digits: int) -> str | None:
    return None if value is None else f"{value / 1e6:.{digits}f} M ({value:,})"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --- a run's parts ---


def _read_record(run_dir: Path) -> dict[str, Any]:
    if (record := read_record(run_dir)) is None:
        raise ReportError(f"{run_dir} is no run folder: it has no readable {RECORD_NAME}")
    return record


def _title(record: dict[str, Any]) -> str:
    return f"{record.get('task')} on {record['dataset']}" if record.get("dataset") else str(record.get("task"))


def run_heading(record: dict[str, Any]) -> str:
    """The task and dataset, the status, and when, from which code and how long."""
    fields = _fields(
        [
            ("status", _status(str(record.get("status")))),
            ("mode", record.get("mode")),
            ("date", record.get("date")),
            ("commit", record.get("commit")),
            ("duration", _duration(record.get("duration_s"))),
            ("run folder", record.get("output_dir")),
        ]
    )
    error = f'<pre class="error">{html.escape(record["error"])}</pre>' if record.get("error") else ""
    return f"<h1>{html.escape(_title(record))}</h1>\n{fields}\n{error}"


def _relative(path: str | None, run_dir: Path) -> str | None:
    """A path inside the run folder relative to it (the folder may move), any other as it is."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path


def model_section(record: dict[str, Any], run_dir: Path) -> str:
    """The network's two knobs, its input, its cost, its checkpoint and how fast it trained."""
    size, checkpoint_bytes = record.get("input_size"), record.get("checkpoint_bytes")
    speed = record.get("train_images_per_s")
    fields = _fields(
        [
            ("network", "MobileNetV1"),
            ("width multiplier α", record.get("alpha")),
            ("resolution multiplier ρ", record.get("rho")),
            ("input size", f"{size} px" if size else None),
            ("MAdds", _millions(record.get("madds"), 1)),
            ("parameters", _millions(record.get("params"), 2)),
            ("checkpoint", _relative(record.get("checkpoint"), run_dir)),
            ("checkpoint size", f"{checkpoint_bytes / 1e6:.2f} MB" if checkpoint_bytes else None),
            ("training speed", f"{speed:.0f} images/s (median epoch, validation excluded)" if speed else None),
            ("epochs", record.get("epochs")),
        ]
    )
    return _section("Model and cost", fields)


def metrics_section(record: dict[str, Any]) -> str:
    """Final and best-epoch metrics, the primary one (``monitor``) first and in bold."""
    metrics = record.get("metrics") or {}
    final, best = metrics.get("final") or {}, metrics.get("best") or {}
    if not final and not best:
        return ""
    monitor = record.get("monitor")
    names = sorted({*final, *best}, key=lambda name: (name != monitor, name))
    rows = []
    for name in names:
        label = Markup(f'<span class="primary">{html.escape(name)}</span>') if name == monitor else name
        rows.append((label, _metric(final.get(name)), _metric(best.get(name))))
    best_epoch = record.get("best_epoch")
    header = ["metric", "final", f"best (epoch {best_epoch})" if best_epoch is not None else "best"]
    direction = {"max": "higher", "min": "lower"}.get(str(record.get("monitor_mode")), "")
    note = _note(f"primary metric: {monitor}, {direction} is better") if monitor and direction else ""
    return _section("Metrics", _table(header, rows) + note)


def read_curves(path: Path) -> dict[str, dict[int, float]]:
    """Every logged metric's value per epoch: the mean of its rows in that epoch (the one row of a metric logged
    per epoch). Rows without an epoch (the learning-rate monitor's, logged as an epoch starts) count in the epoch
    of the next row that has one."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    values: dict[str, dict[int, list[float]]] = {}
    epoch = None
    for row in reversed(rows):
        if row.get("epoch"):
            epoch = int(float(row["epoch"]))
        if epoch is None:
            continue
        for key, text in row.items():
            if key not in ("epoch", "step") and text:
                values.setdefault(key, {}).setdefault(epoch, []).append(float(text))
    return {key: {e: mean(v) for e, v in sorted(per_epoch.items())} for key, per_epoch in sorted(values.items())}


def curve_panels(names: Iterable[str]) -> dict[str, list[str]]:
    """One axis per metric, ``train/<name>`` beside ``val/<name>``; other keys by their prefix (``lr-SGD/pg1``
    beside ``lr-SGD/pg2``)."""
    panels: dict[str, list[str]] = {}
    for key in names:
        prefix, _, name = key.partition("/")
        panels.setdefault(name if prefix in ("train", "val") and name else prefix, []).append(key)
    return panels


def plot_curves(curves: dict[str, dict[int, float]]) -> bytes:
    """The per-epoch curves, one axis per panel of :func:`curve_panels`, as PNG bytes."""
    panels = curve_panels(curves)
    columns = min(CURVE_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    width, height = 4.2 * columns, 2.9 * rows
    margins = {"left": 0.6 / width, "right": 1 - 0.15 / width, "bottom": 0.45 / height, "top": 1 - 0.3 / height}
    # fixed margins in inches, not tight_layout, which draws the figure once more: a third of the report's time
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw={**margins, "wspace": 0.25, "hspace": 0.55})
    for axis, (title, keys) in zip(axes.flat, panels.items(), strict=False):
        for key in keys:
            epochs = list(curves[key])
            axis.plot(epochs, [curves[key][epoch] for epoch in epochs], marker="o", markersize=3, label=key)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def curves_section(run_dir: Path) -> str:
    path = run_dir / CURVES_CSV
    curves = read_curves(path) if path.is_file() else {}
    if not curves:
        return ""
    note = _note(f"per epoch, from {CURVES_CSV.as_posix()} (a metric logged per step: the mean of its rows)")
    return _section("Curves", _image(plot_curves(curves), "training and validation curves") + note)


def latest_of_series(paths: Iterable[Path]) -> list[tuple[Path, int | None]]:
    """Each file, except that a per-epoch series (``<name>_epochNNN.<ext>`` in one folder) is shown by its latest
    file alone; with the number of epochs of its series (None for a file of its own)."""
    shown: list[tuple[Path, int | None]] = []
    series: dict[tuple[Path, str, str], list[tuple[int, Path]]] = {}
    for path in sorted(paths):
        match = EPOCH_SERIES.fullmatch(path.stem)
        if match is None:
            shown.append((path, None))
        else:
            series.setdefault((path.parent, match["name"], path.suffix), []).append((int(match["epoch"]), path))
    shown += [(max(files)[1], len(files)) for files in series.values()]
    return sorted(shown)


def _caption(path: Path, epochs: int | None, run_dir: Path) -> str:
    name = path.relative_to(run_dir).as_posix()
    return name if epochs is None else f"{name} (the latest of {epochs} epoch{'s' if epochs > 1 else ''})"


def _short_number(cell: str) -> str:
    """A float written in full (the analysis tables keep every digit) to four decimals; any other cell as it is."""
    if "." not in cell:
        return cell
    try:
        return f"{float(cell):.4f}"
    except ValueError:
        return cell


def csv_table(path: Path) -> str:
    """A CSV file as a table, its first row as the header, cut at :data:`MAX_TABLE_ROWS` rows with a note."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return _note(f"{path.name} is empty")
    header, body = rows[0], rows[1:]
    table = _table(header, [[_short_number(cell) for cell in row] for row in body[:MAX_TABLE_ROWS]])
    if len(body) > MAX_TABLE_ROWS:
        table += _note(f"the first {MAX_TABLE_ROWS} of {len(body)} rows; all of them are in {path.name}")
    return table


def pictures_section(run_dir: Path) -> str:
    """Every PNG in the run folder but the checkpoints' and the error analysis's, by folder."""
    pngs = [
        path
        for path in run_dir.rglob("*.png")
        if path.relative_to(run_dir).parts[0] not in (CHECKPOINTS_DIR, ANALYSIS_FOLDER)
    ]
    by_folder: dict[Path, list[str]] = {}
    for path, epochs in latest_of_series(pngs):
        by_folder.setdefault(path.parent, []).append(_figure(path.read_bytes(), _caption(path, epochs, run_dir)))
    parts = [
        f"<h3>{html.escape(folder.relative_to(run_dir).as_posix() if folder != run_dir else 'run folder')}</h3>\n"
        + "\n".join(figures)
        for folder, figures in sorted(by_folder.items())
    ]
    return _section("Pictures", "\n".join(parts)) if parts else ""


def analysis_section(run_dir: Path) -> str:
    """The error analysis: its pictures and its CSV tables, each series by its latest epoch."""
    folder = run_dir / ANALYSIS_FOLDER
    files = [path for path in folder.rglob("*") if path.suffix in (".png", ".csv")] if folder.is_dir() else []
    parts = []
    shown = sorted(latest_of_series(files), key=lambda item: (item[0].suffix != ".png", item[0]))  # pictures first
    for path, epochs in shown:
        caption = _caption(path, epochs, run_dir)
        if path.suffix == ".png":
            parts.append(_figure(path.read_bytes(), caption))
        else:
            parts.append(f"<h3>{html.escape(caption)}</h3>\n{csv_table(path)}")
    return _section("Error analysis", "\n".join(parts)) if parts else ""


def data_section(run_dir: Path) -> str:
    """What listing the data found per split (``data_report.json``) and the files skipped or remarked on
    (``skipped_files.csv``)."""
    parts = []
    report_path, skipped_path = run_dir / DATA_REPORT, run_dir / SKIPPED_FILES
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        dataset = report.pop("dataset", None)
        counts = {scope: value for scope, value in report.items() if isinstance(value, dict)}
        columns = list(dict.fromkeys(["samples", *(key for value in counts.values() for key in value)]))
        rows = [(scope, *(value.get(column) for column in columns)) for scope, value in counts.items()]
        parts.append(
            f"<h3>{html.escape(DATA_REPORT)}: {html.escape(str(dataset))}</h3>\n" + _table(["", *columns], rows)
        )
    if skipped_path.is_file():
        parts.append(f"<h3>{html.escape(SKIPPED_FILES)}</h3>\n{csv_table(skipped_path)}")
    return _section("Data", "\n".join(parts)) if parts else ""


def _config_text(config: DictConfig) -> str:
    """The config resolved, or as composed where it does not resolve: a value the run failed on (``backbone.rho=-1``),
    an interpolation only Hydra's app answers (``${hydra:...}``)."""
    try:
        return OmegaConf.to_yaml(config, resolve=True)
    except InterpolationResolutionError:
        return OmegaConf.to_yaml(config)


def _folded(title: str, text: str) -> str:
    """A long text, folded under its title (a click shows it)."""
    summary = html.escape(f"{title} ({len(text.splitlines())} lines)")
    return f"<details><summary>{summary}</summary>\n<pre>{html.escape(text)}</pre></details>"


def config_section(run_dir: Path, config: DictConfig | None) -> str:
    """The command line (Hydra's ``overrides.yaml``) and the config: Hydra's, a resolved copy saved in the folder,
    or the one the run was given."""
    parts = []
    if (command := run_command(run_dir)) is not None:
        parts.append(f'<h3>command line</h3>\n<pre class="wrap">{html.escape(command)}</pre>')
    saved = next((run_dir / name for name in CONFIG_FILES if (run_dir / name).is_file()), None)
    if saved is not None:
        parts.append(_folded(saved.relative_to(run_dir).as_posix(), saved.read_text()))
    elif config is not None:
        parts.append(_folded("the run's config", _config_text(config)))
    return _section("Config", "\n".join(parts)) if parts else ""


def write_run_report(run_dir: Path, config: DictConfig | None = None) -> Path:
    """Write ``<run_dir>/report.html`` from the run folder's files (``config``: the run's config, shown when the
    folder keeps none); returns its path."""
    run_dir = Path(run_dir)
    record = _read_record(run_dir)
    sections = [
        model_section(record, run_dir),
        metrics_section(record),
        curves_section(run_dir),
        analysis_section(run_dir),
        pictures_section(run_dir),
        data_section(run_dir),
        config_section(run_dir, config),
    ]
    path = run_dir / REPORT_NAME
    path.write_text(_page(_title(record), run_heading(record), sections), encoding="utf-8")
    return path


# --- a sweep's page ---


def _job_link(job: JobResult, sweep_dir: Path) -> Markup:
    name = job.folder.relative_to(sweep_dir).as_posix() if job.folder != sweep_dir else "."
    if not (job.folder / REPORT_NAME).is_file():
        return Markup(html.escape(name))
    return Markup(f'<a href="{quote(name)}/{REPORT_NAME}">{html.escape(name)}</a>')


def jobs_section(jobs: Sequence[JobResult], sweep_dir: Path) -> str:
    """One row per job: its link, status, the overrides that differ between jobs (those common to all above the
    table), its final metrics (the primary ones first) and cost."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    varying = [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]
    common = [f"{key}={jobs[0].overrides[key]}" for key in keys if key not in varying]
    records = [job.record or {} for job in jobs]
    monitors = dict.fromkeys(record["monitor"] for record in records if record.get("monitor"))
    finals = [(record.get("metrics") or {}).get("final") or {} for record in records]
    metrics = [*monitors, *sorted({name for final in finals for name in final} - set(monitors))]
    with_error = any(record.get("error") for record in records)
    header = [
        "job",
        "status",
        *varying,
        *metrics,
        "MAdds (M)",
        "params (M)",
        "input",
        "epochs",
        "duration",
        *(["error"] if with_error else []),
    ]
    rows = []
    for job, record, final in zip(jobs, records, finals, strict=True):
        madds, params = record.get("madds"), record.get("params")
        rows.append(
            [
                _job_link(job, sweep_dir),
                _status(job.status),
                *(job.overrides.get(key) for key in varying),
                *(_metric(final.get(name)) for name in metrics),
                f"{madds / 1e6:.1f}" if madds else None,
                f"{params / 1e6:.2f}" if params else None,
                record.get("input_size"),
                record.get("epochs"),
                _duration(record.get("duration_s")),
                *([record.get("error")] if with_error else []),
            ]
        )
    parts = [_note("overrides of every job: " + " ".join(common))] if common else []
    parts.append(_table(header, rows))
    if (sweep_dir / SUMMARY_NAME).is_file():
        parts.append(f'<p class="note">every field of every job: <a href="{SUMMARY_NAME}">{SUMMARY_NAME}</a></p>')
    return _section("Jobs", "\n".join(parts))


def leaderboard_section(sweep_dir: Path) -> str:
    """The leaderboard plot (:func:`mnet_tasks.leaderboard.render_plot`) of the completed jobs, one per task."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for job in completed_jobs([sweep_dir]):
        if job.record.get("madds") and job.record.get("params"):
            row = row_from_job(job, run=job.folder.relative_to(sweep_dir).as_posix())
            by_task.setdefault(job.record["task"], []).append(row)
    figures = []
    for task, rows in sorted(by_task.items()):
        buffer = io.BytesIO()
        render_plot(task, rows, buffer)
        figures.append(_figure(buffer.getvalue(), f"{task}: primary metric against MAdds and parameters"))
    return _section("Leaderboard", "\n".join(figures)) if figures else ""


def write_sweep_report(sweep_dir: Path) -> Path:
    """Write ``<sweep_dir>/report.html`` over every job under the folder; returns its path."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise ReportError(f"{sweep_dir} holds no runs (no job folder with {RECORD_NAME} or {HYDRA_SUBDIR}/)")
    counts = Counter(job.status for job in jobs)
    title = f"sweep {sweep_dir.name}"
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    heading = f"<h1>{html.escape(title)}</h1>\n" + _fields(
        [("jobs", f"{len(jobs)} ({summary})"), ("folder", str(sweep_dir.resolve()))]
    )
    path = sweep_dir / REPORT_NAME
    sections = [jobs_section(jobs, sweep_dir), leaderboard_section(sweep_dir)]
    path.write_text(_page(title, heading, sections), encoding="utf-8")
    return path


class SweepReport(SweepSummary):
    """Hydra callback, after :class:`~mnet_tasks.sweeps.SweepSummary`: the sweep's ``report.html`` when a multirun
    ends and the config's ``report`` is on. A page that fails is a warning, as a run's is: the sweep stands."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("report", False) or (sweep_dir := self.finished_sweep(config)) is None:
            return
        try:
            print(f"sweep report: {write_sweep_report(sweep_dir)}")
        except Exception:
            log.warning("no sweep report written in %s", sweep_dir, exc_info=True)


def write_report(folder: Path) -> Path:
    """The page of a run folder (it has a metrics.json) or of a folder of runs."""
    folder = Path(folder)
    if (folder / RECORD_NAME).is_file():
        return write_run_report(folder)
    if folder.is_dir() and find_jobs(folder):
        return write_sweep_report(folder)
    raise ReportError(
        f"{folder} is neither a run folder (no {RECORD_NAME} in it) nor a folder of runs (no job folder with "
        f"{RECORD_NAME} or {HYDRA_SUBDIR}/overrides.yaml under it)"
    )


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m mnet_tasks.report",
        description="(Re)write report.html in each FOLDER: a run folder's page, or a sweep's over its jobs.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run folders (with metrics.json) or sweep folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = []
    for folder in args.folders:
        try:
            path = write_report(folder)
        except ReportError as error:
            parser.error(str(error))
        print(path)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
