"""``python -m mnet_tasks.distill [overrides]``: train a teacher, distill students from it, compare them.

The recipe is the ``distill`` section of ``conf/experiment/attributes_distill.yaml``: the experiment that trains
the teacher on the labels (``distill.teacher``, by default ``attributes_teacher``), then one list of overrides per
student; each student is ``experiment=attributes_distill`` (pure distillation, unlabeled images included) from
the teacher's best checkpoint. Every job is an ordinary ``run(cfg)`` in its own folder under
``<paths.log_dir>/attributes/distill/<time>/``; the students share one cache of the teacher's outputs, and
``summary.csv`` and the printed table compare mean AP, cost and time.

Command-line overrides apply to every job (e.g. ``trainer.max_epochs=3``), but a student's own overrides win over
them (``backbone.alpha=0.5`` sets the teacher's width, not the students'); ``distill.*`` overrides change the
recipe, e.g. ``distill.teacher_checkpoint=path`` skips training a teacher. It is the two-command recipe, as one::

    python -m mnet_tasks experiment=attributes_teacher hydra.run.dir=outputs/attributes/teacher
    python -m mnet_tasks experiment=attributes_distill \
        task.teacher.checkpoint=outputs/attributes/teacher/checkpoints/epoch009.ckpt
"""

from __future__ import annotations

import csv
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnet_tasks.config import compose_config
from mnet_tasks.run import run, summary

log = logging.getLogger("mnet_tasks.distill")

STUDENT_EXPERIMENT = "attributes_distill"
SUMMARY_COLUMNS = (
    "job",
    "alpha",
    "rho",
    "input_size",
    "madds",
    "params",
    "val/map",
    "val/mean_accuracy",
    "val/emulation_ce",
    "duration_s",
    "status",
    "output_dir",
)


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
    metrics = record["metrics"][epoch]
    row = {key: record.get(key) for key in SUMMARY_COLUMNS}
    row.update({key: metrics.get(key) for key in SUMMARY_COLUMNS if key.startswith("val/")}, job=job)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    def number(value: Any, scale: float = 1.0, digits: int = 4) -> str:
        return "-" if value is None else f"{value / scale:.{digits}f}"

    lines = [f"{'job':<26}{'alpha':>6}{'input':>6}{'MAdds M':>9}{'params M':>9}{'val/map':>9}{'emul. CE':>9}{'s':>7}"]
    for row in rows:
        lines.append(
            f"{row['job']:<26}{row['alpha']!s:>6}{row['input_size']!s:>6}{number(row['madds'], 1e6, 1):>9}"
            f"{number(row['params'], 1e6, 3):>9}{number(row['val/map']):>9}{number(row['val/emulation_ce']):>9}"
            f"{number(row['duration_s'], 1, 0):>7}"
        )
    return "\n".join(lines)


def main(overrides: list[str]) -> list[dict[str, Any]]:
    """Run the recipe; returns one summary row per job (teacher first unless a checkpoint was given)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    recipe_cfg = compose_config([f"experiment={STUDENT_EXPERIMENT}", *overrides])
    recipe = recipe_cfg.distill
    every_job = [o for o in overrides if not o.lstrip("+~").startswith("distill.")]
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    folder = Path(recipe.output_dir or Path(recipe_cfg.paths.log_dir) / "attributes" / "distill" / started)
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
        distilled = [f"task.teacher.checkpoint={checkpoint}", f"task.teacher.cache_dir={folder / 'teacher_cache'}"]
        try:
            record = run_job(STUDENT_EXPERIMENT, folder / job, [*every_job, *student, *distilled])
        except Exception:
            log.exception("%s failed; the other students go on", job)
            failed.append(job)
            continue
        rows.append(summary_row(job, record, "final"))

    with open(folder / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\ndistilled from {checkpoint}\n{format_table(rows)}\nsummary: {folder / 'summary.csv'}", flush=True)
    if failed:
        raise RuntimeError(f"students failed: {', '.join(failed)} (their errors are logged above)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
