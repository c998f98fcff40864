"""``python -m mnet_tasks.distill experiment=<student experiment> [overrides]``: train a teacher, distill students
from it, compare them.

The recipe is the ``distill`` section of the student experiment (e.g. ``attributes_distill``,
``face_embedding_distill``): the experiment that trains the teacher on the labels (``distill.teacher``), then one
list of overrides per student; each student is a run of the student experiment from the teacher's best checkpoint
(``task.teacher.checkpoint``). Every job is an ordinary ``run(cfg)`` in its own folder under
``<paths.log_dir>/<task name>/distill/<time>/``; the students share one cache of the teacher's outputs where the
task keeps one (``task.teacher.cache_dir``), and ``summary.csv`` and the printed table compare the task's metrics,
cost and time.

Command-line overrides apply to every job (e.g. ``trainer.max_epochs=3``), but a student's own overrides win over
them (``backbone.alpha=0.5`` sets the teacher's width, not the students'); ``distill.*`` overrides change the
recipe, e.g. ``distill.teacher_checkpoint=path`` skips training a teacher. Not a Hydra app: it runs several
composed configs, one per job, which one ``@hydra.main`` cannot.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.run import run, summary

log = logging.getLogger("mnet_tasks.distill")

COST_COLUMNS = ("job", "alpha", "rho", "input_size", "madds", "params")
RUN_COLUMNS = ("duration_s", "status", "output_dir")


def name_part(override: str) -> str:
    """``backbone.alpha=0.25`` -> ``alpha0.25``: a student's folder is named by its overrides."""
    key, value = override.split("=", 1)
    return re.sub(r"[^\w.-]", "", f"{key.split('.')[-1]}{value}")  # brackets or commas would not survive Hydra


def run_job(experiment: str, folder: Path, overrides: list[str]) -> dict[str, Any]:
    """One ``run(cfg)`` in ``folder``, which also keeps the job's resolved config (``config.yaml``)."""
    cfg = compose_config([f"experiment={experiment}", *overrides, f"paths.output_dir={folder}"])
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    record = run(cfg)
    print(summary(record), flush=True)
    return record


def summary_row(job: str, record: dict[str, Any], epoch: str) -> dict[str, Any]:
    """A job's cost and its ``final`` or ``best`` validation metrics (from metrics.json)."""
    row = {key: record.get(key) for key in (*COST_COLUMNS, *RUN_COLUMNS)}
    return {**row, **record["metrics"][epoch], "job": job}


def format_table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    def number(value: Any, scale: float = 1.0, digits: int = 4) -> str:
        return "-" if value is None else f"{value / scale:.{digits}f}"

    header = f"{'job':<26}{'alpha':>6}{'input':>6}{'MAdds M':>9}{'params M':>9}"
    lines = [header + "".join(f"{name:>{max(10, len(name) + 1)}}" for name in metrics) + f"{'s':>7}"]
    for row in rows:
        line = f"{row['job']:<26}{row['alpha']!s:>6}{row['input_size']!s:>6}{number(row['madds'], 1e6, 1):>9}"
        line += f"{number(row['params'], 1e6, 3):>9}"
        line += "".join(f"{number(row.get(name)):>{max(10, len(name) + 1)}}" for name in metrics)
        lines.append(line + f"{number(row['duration_s'], 1, 0):>7}")
    return "\n".join(lines)


def student_experiment(overrides: list[str]) -> str:
    """The ``experiment=`` the command names: the students' experiment, whose ``distill`` section is the recipe."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    chosen = [o.value() for o in parsed if o.key_or_group == "experiment" and isinstance(o.value(), str)]
    if not chosen:
        raise ConfigError("experiment is required: the students' experiment, one whose config has a distill section")
    return chosen[-1]


def main(overrides: list[str]) -> list[dict[str, Any]]:
    """Run the recipe; returns one summary row per job (teacher first unless a checkpoint was given)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    experiment = student_experiment(overrides)
    recipe_cfg = compose_config(overrides)
    if "distill" not in recipe_cfg:
        raise ConfigError(f"experiment={experiment} has no distill section (the teacher and the students to train)")
    recipe = recipe_cfg.distill
    every_job = [o for o in overrides if not o.lstrip("+~").startswith(("distill.", "experiment="))]
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    folder = Path(recipe.output_dir or Path(recipe_cfg.paths.log_dir) / recipe_cfg.task.name / "distill" / started)
    rows = []

    checkpoint = recipe.teacher_checkpoint
    if checkpoint is None:
        record = run_job(recipe.teacher, folder / "teacher", every_job)
        # The students learn from the teacher's best checkpoint (selected on validation), so its best epoch is
        # the teacher's result; a distilled student needs no early stopping (the paper): its final epoch is its.
        rows.append(summary_row("teacher", record, "best"))
        checkpoint = record["checkpoint"]
        if not checkpoint:
            raise FileNotFoundError("the teacher run saved no checkpoint: keep callbacks=default for distillation")

    failed = []
    for student in recipe.students:
        job = "student_" + "_".join(name_part(override) for override in student)
        distilled = [f"task.teacher.checkpoint={checkpoint}"]
        if "cache_dir" in recipe_cfg.task.teacher:  # a task that caches its teacher's outputs: one cache for all
            distilled.append(f"task.teacher.cache_dir={folder / 'teacher_cache'}")
        try:
            record = run_job(experiment, folder / job, [*every_job, *student, *distilled])
        except Exception:
            log.exception("%s failed; the other students go on", job)
            failed.append(job)
            continue
        rows.append(summary_row(job, record, "final"))

    metrics = sorted({name for row in rows for name in row} - {*COST_COLUMNS, *RUN_COLUMNS})
    with open(folder / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*COST_COLUMNS, *metrics, *RUN_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    table = format_table(rows, [recipe_cfg.task.monitor, *(m for m in metrics if m != recipe_cfg.task.monitor)][:3])
    print(f"\ndistilled from {checkpoint}\n{table}\nsummary: {folder / 'summary.csv'}", flush=True)
    if failed:
        raise RuntimeError(f"students failed: {', '.join(failed)} (their errors are logged above)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
