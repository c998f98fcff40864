"""One table per sweep: every job's ``metrics.json`` gathered into ``summary.csv``, one row per job.

The Hydra callback :class:`SweepSummary` (registered in ``conf/hydra/default.yaml``) writes
``<sweep dir>/summary.csv`` when a multirun ends, whatever the launcher (local, joblib, submitit) or sweeper
(basic, Optuna), and with the config's ``report: true`` the sweep's page beside it (``report.html``,
:mod:`mnet_tasks.report`). ``python -m mnet_tasks.sweeps FOLDER ...`` writes summary.csv after the fact for any
folder of runs: a sweep that crashed, cluster jobs, or several sweeps at once.

Columns: ``job`` (the job folder, relative to the summarised folder), ``status`` (``completed``, ``failed``,
``running`` when a job was killed before it could say more, ``missing`` when a job folder has no metrics.json),
the job's command-line overrides (one column per key), then the metrics.json fields, each final metric under its
own name and each metric of the best epoch as ``best/<name>``.

Command line: argparse, not a Hydra app: its input is a folder of finished runs, not a config.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
RECORD_NAME = "metrics.json"  # what run() writes in every job's folder
HYDRA_SUBDIR = ".hydra"  # hydra.output_subdir: each job's config, Hydra settings and overrides


@dataclass
class JobResult:
    """One job folder: its metrics.json record (``None`` if it never wrote one) and its command-line overrides."""

    folder: Path
    record: dict[str, Any] | None
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.record.get("status", "unknown") if self.record else "missing"


def recorded_overrides(job_folder: Path) -> list[str] | None:
    """The job's command-line overrides as Hydra recorded them (``.hydra/overrides.yaml``, the sweep's values
    included); None where it recorded none (a run made by ``run(cfg)`` in-process)."""
    path = job_folder / HYDRA_SUBDIR / "overrides.yaml"
    return [str(override) for override in OmegaConf.load(path)] if path.is_file() else None


def read_overrides(job_folder: Path) -> dict[str, str]:
    """The job's ``key=value`` overrides (:func:`recorded_overrides`), by key."""
    return dict(override.partition("=")[::2] for override in recorded_overrides(job_folder) or [])


def run_command(job_folder: Path) -> str | None:
    """The command line that ran the job, ``python -m mnet_tasks <overrides>`` (None without recorded overrides)."""
    overrides = recorded_overrides(job_folder)
    return None if overrides is None else shlex.join(["python", "-m", "mnet_tasks", *overrides])


def _natural_key(path: Path) -> list[Any]:
    """Job 10 after job 9: numbers in the path compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_jobs(folder: Path) -> list[JobResult]:
    """Every run folder under ``folder`` (itself included): those with a metrics.json or a Hydra ``.hydra/``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder of runs at {folder}")
    job_folders = {p.parent for p in folder.rglob(RECORD_NAME)}
    job_folders |= {p.parent.parent for p in folder.rglob(f"{HYDRA_SUBDIR}/overrides.yaml")}
    return [
        JobResult(job_folder, read_record(job_folder), read_overrides(job_folder))
        for job_folder in sorted(job_folders, key=_natural_key)
    ]


def read_record(job_folder: Path) -> dict[str, Any] | None:
    """The job's ``metrics.json`` record; None without one, or (with a warning) when it is not valid JSON."""
    path = job_folder / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        log.warning("%s is not valid JSON (%s): the job is taken as missing", path, error)
        return None


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """metrics.json as one row: final metrics under their names, the best epoch's as ``best/<name>``."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "metrics":
            row.update(value.get("final", {}))
            row.update({f"best/{name}": metric for name, metric in value.get("best", {}).items()})
        else:
            row[key] = value
    return row


def summary_rows(jobs: Sequence[JobResult], root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and columns: job, status, the overrides, then the record's fields in their first-seen order.

    An override whose key is also a record field (``task=...``) gets the column ``override/<key>``.
    """
    record_columns: dict[str, None] = {}
    flat = []
    for job in jobs:
        row = flatten_record(job.record) if job.record else {}
        row.pop("status", None)
        record_columns.update(dict.fromkeys(row))
        flat.append(row)
    override_columns: dict[str, None] = {}
    rows = []
    for job, record_row in zip(jobs, flat, strict=True):
        relative = job.folder.relative_to(root).as_posix() if job.folder != root else "."
        row: dict[str, Any] = {"job": relative, "status": job.status}
        for key, value in job.overrides.items():
            column = f"override/{key}" if key in record_columns or key in row else key
            override_columns[column] = None
            row[column] = value
        rows.append({**row, **record_row})
    return rows, ["job", "status", *override_columns, *record_columns]


def write_summary(folder: Path, output: Path | None = None) -> Path:
    """``summary.csv`` (or ``output``) for every run under ``folder``; returns its path."""
    folder = Path(folder)
    jobs = find_jobs(folder)
    rows, columns = summary_rows(jobs, folder)
    output = Path(output) if output else folder / SUMMARY_NAME
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    log.info("%s: %d jobs (%s)", output, len(jobs), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return output


def _cell(value: Any) -> Any:
    """Lists and mappings as JSON, so a CSV cell holds them unambiguously."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


class SweepSummary(Callback):
    """Hydra callback: ``summary.csv`` in the sweep folder when a multirun ends."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)  # resolved once: the folder name holds the start time

    def finished_sweep(self, config: DictConfig) -> Path | None:
        """The sweep folder at the end of a multirun (None, with a warning, when no job made it)."""
        sweep_dir = self.sweep_dir or Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            return sweep_dir
        log.warning("no sweep folder at %s: nothing written for this sweep", sweep_dir)
        return None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if sweep_dir := self.finished_sweep(config):
            print(f"sweep summary: {write_summary(sweep_dir)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mnet_tasks.sweeps",
        description="Gather every run's metrics.json under each FOLDER into FOLDER/summary.csv.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="folders of runs (a multirun folder, outputs/, ...)")
    parser.add_argument("--output", type=Path, help="write the CSV here instead of FOLDER/summary.csv (one folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.output and len(args.folders) > 1:
        parser.error("--output takes one folder")
    for folder in args.folders:
        print(write_summary(folder, args.output))


if __name__ == "__main__":
    main()
