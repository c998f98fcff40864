"""A CSV log that a resumed run continues: the whole training history in one ``csv/metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but a ``metrics.csv`` already in the folder (an interrupted run's) is kept, and new
    rows are appended under its columns, where Lightning's deletes it."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: :class:`~mnet_tasks.callbacks.ResumeState` drops the
    rows the interrupted run logged after its checkpoint (the resumed run logs those steps again), and the rest
    stays, so every step and epoch is in the file once."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_after(self, step: int) -> None:
        """Remove the rows logged after global step ``step`` (all of them for -1)."""
        path = Path(self.experiment.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            columns, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= step]
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)
