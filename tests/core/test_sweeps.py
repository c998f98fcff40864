"""Sweeps: summary.csv at the end of a multirun and after the fact, Optuna, the submitit launcher, and the
paper-table experiment configs."""

import csv
import itertools
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, sweep_jobs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnet_tasks.config import compose_config, config_dir
from mnet_tasks.sweeps import main as sweeps_main


def _summary(sweep_root: Path) -> list[dict]:
    (path,) = sweep_root.glob("*/multiruns/*/summary.csv")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_multirun_summary_lists_every_job_with_its_overrides_and_keeps_the_failed_one(tmp_path, quick):
    run_cli(["-m", *quick, "trainer.max_epochs=1", "backbone.alpha=0.25,-1"], cwd=tmp_path)
    rows = _summary(tmp_path / "outputs")
    assert [(row["job"], row["status"], row["backbone.alpha"]) for row in rows] == [
        ("0", "completed", "0.25"),
        ("1", "failed", "-1"),
    ]
    completed, failed = rows
    record = json.loads((tmp_path / "outputs").glob("*/multiruns/*/0/metrics.json").__next__().read_text())
    assert float(completed["val/top1"]) == pytest.approx(record["metrics"]["final"]["val/top1"])
    assert float(completed["best/val/top1"]) == pytest.approx(record["metrics"]["best"]["val/top1"])
    assert completed["epochs"] == "1" and int(completed["madds"]) == record["madds"]
    assert completed["commit"] and completed["date"] and int(completed["checkpoint_bytes"]) > 0
    assert "backbone.alpha" in failed["error"] and failed["val/top1"] == ""


def _job(folder: Path, overrides: list[str], record: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps(record))


def test_sweeps_command_summarises_a_folder_after_the_fact_killed_jobs_included(tmp_path):
    done = {"task": "t", "status": "completed", "metrics": {"final": {"val/acc": 0.5}, "best": {"val/acc": 0.6}}}
    _job(tmp_path / "sweep" / "0", ["task=t", "backbone.alpha=0.5"], done)
    _job(tmp_path / "sweep" / "1", ["task=t", "backbone.alpha=0.25"], {**done, "status": "running"})
    _job(tmp_path / "sweep" / "10", ["task=t", "backbone.alpha=1.0"], None)  # killed before run() started
    _job(tmp_path / "sweep" / "2", ["task=t", "backbone.alpha=0.75"], None)

    sweeps_main([str(tmp_path / "sweep")])

    with (tmp_path / "sweep" / "summary.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[:4] == ["job", "status", "override/task", "backbone.alpha"]
    assert [(r["job"], r["status"], r["backbone.alpha"]) for r in rows] == [
        ("0", "completed", "0.5"),
        ("1", "running", "0.25"),
        ("2", "missing", "0.75"),
        ("10", "missing", "1.0"),
    ]
    assert (rows[0]["val/acc"], rows[0]["best/val/acc"], rows[0]["task"]) == ("0.5", "0.6", "t")


def test_sweeps_command_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sweeps_main([str(tmp_path / "nowhere")])


def test_optuna_sweep_runs_two_trials_and_reports_the_best_of_the_task_metric(tmp_path, quick):
    run_cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *quick, "trainer.max_epochs=1"], cwd=tmp_path)
    rows = _summary(tmp_path / "outputs")
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert len({row["task.optimizer.lr"] for row in rows}) == 2  # the sampler chose each trial's lr
    (results,) = (tmp_path / "outputs").glob("*/multiruns/*/optimization_results.yaml")
    best = OmegaConf.load(results)
    assert best.best_value == pytest.approx(max(float(row["best/val/top1"]) for row in rows))


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_direction_follows_the_task_monitor_mode(mode, direction):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", ["hparams_search=optuna", f"task.monitor_mode={mode}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction
    assert set(cfg.hydra.sweeper.params) >= {"task.optimizer.lr", "task.weight_decay"}


def test_submitit_local_launcher_runs_two_jobs(tmp_path, quick):
    run_cli(
        ["-m", "hydra/launcher=slurm_local", *quick, "trainer.max_epochs=1", "backbone.alpha=0.25,0.5"], cwd=tmp_path
    )
    rows = _summary(tmp_path / "outputs")
    assert [(row["status"], row["alpha"]) for row in rows] == [("completed", "0.25"), ("completed", "0.5")]
    assert list((tmp_path / "outputs").glob("*/multiruns/*/.submitit/*/*_result.pkl"))  # ran through submitit


def _job_configs(overrides: list[str]) -> list:
    """The config of every job the experiment's ``hydra.sweeper.params`` would launch, composed in-process."""
    return [compose_config(job) for job in sweep_jobs(overrides)]


def _sizes(alphas, sizes, **fixed):
    return [{"backbone.alpha": a, "input_size": s, **fixed} for a, s in itertools.product(alphas, sizes)]


TIMM_WEIGHTS = "timm:mobilenetv1_100.ra4_e3600_r224_in1k"
# The paper's ImageNet recipe (experiment=imagenet_paper), which every ImageNet table trains with.
IMAGENET_RECIPE = {"task.lr_schedule.name": "exponential", "task.lr_schedule.decay_epochs": 2, "data.synthetic": None}
# The COCO recipe (experiment=detection_coco): from timm's ImageNet weights, whose inputs are in [-1, 1].
COCO_RECIPE = {"backbone.pretrained": TIMM_WEIGHTS, "normalize.mean": [0.5] * 3, "data.synthetic": None}

# experiment -> (extra overrides, the task's name, what each job's config holds, in the sweep's order)
EXPERIMENTS = {
    "paper_table6": ([], "classification", _sizes((1.0, 0.75, 0.5, 0.25), (224,), **IMAGENET_RECIPE)),
    "paper_table7": ([], "classification", _sizes((1.0,), (224, 192, 160, 128), **IMAGENET_RECIPE)),
    "paper_table4_5": (
        [],
        "classification",
        [
            {
                "backbone.alpha": 1.0,
                "input_size": 224,
                "backbone.separable": True,
                "backbone.shallow": False,
                **IMAGENET_RECIPE,
            },
            {
                "backbone.alpha": 1.0,
                "input_size": 224,
                "backbone.separable": False,
                "backbone.shallow": False,
                **IMAGENET_RECIPE,
            },
            {
                "backbone.alpha": 0.75,
                "input_size": 224,
                "backbone.separable": True,
                "backbone.shallow": False,
                **IMAGENET_RECIPE,
            },
            {
                "backbone.alpha": 1.0,
                "input_size": 224,
                "backbone.separable": True,
                "backbone.shallow": True,
                **IMAGENET_RECIPE,
            },
        ],
    ),
    "paper_table10": (
        [],
        "finegrained",
        _sizes((1.0,), (224, 192), **{"backbone.pretrained": TIMM_WEIGHTS, "task.finetune.backbone_lr_scale": 0.1}),
    ),
    "paper_table11": ([], "geolocalization", _sizes((1.0,), (224,), **{"data.train_csv": "mp16_places365.csv"})),
    "paper_table12": ([], "attributes", _sizes((1.0, 0.5, 0.25), (224, 128), **{"task.gt_weight": 0.0})),
    "paper_table13": (
        [],
        "detection",
        [
            {
                "input_size": 300,
                "task.detector.name": "ssd",
                "data.crop": "zoom",
                **COCO_RECIPE,
            },
            *(
                {
                    "input_size": size,
                    "task.detector.name": "faster_rcnn",
                    "data.square": False,
                    "task.finetune.freeze_bn": True,
                    **COCO_RECIPE,
                }
                for size in (300, 600)
            ),
        ],
    ),
    "alpha_rho_grid": (
        ["task=geolocalization"],
        "geolocalization",
        _sizes((1.0, 0.75, 0.5, 0.25), (224, 192, 160, 128)),
    ),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_experiment_config_composes_each_job_of_its_sweep(experiment):
    extra, task, expected = EXPERIMENTS[experiment]
    configs = _job_configs([f"experiment={experiment}", *extra])
    assert [cfg.task.name for cfg in configs] == [task] * len(expected)
    assert [
        {key: OmegaConf.select(cfg, key) for key in want} for cfg, want in zip(configs, expected, strict=True)
    ] == expected
    assert all(cfg.data.root is None for cfg in configs)  # data.root is the command line's
