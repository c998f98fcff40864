"""The command line as a user runs it: from another directory, in fresh processes."""

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import QUICK, run_cli
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("metrics.json"))]


def test_fast_dev_run_from_another_directory(tmp_path, quick):
    result = run_cli([*quick, "trainer.fast_dev_run=true"], cwd=tmp_path)
    (record,) = _metrics(tmp_path / "outputs" / "classification" / "runs")
    assert record["status"] == "completed" and record["input_size"] == 64
    assert "run folder:" in result.stdout and "M MAdds" in result.stdout


def test_multirun_gives_each_job_its_own_folder_and_a_failed_job_does_not_stop_the_sweep(tmp_path, quick):
    run_cli(["-m", *quick, "trainer.fast_dev_run=true", "backbone.alpha=0.25,-1,0.5"], cwd=tmp_path)
    records = _metrics(tmp_path / "outputs" / "classification" / "multiruns")
    assert [(r["alpha"], r["status"]) for r in records] == [(0.25, "completed"), (-1, "failed"), (0.5, "completed")]
    assert len({r["output_dir"] for r in records}) == 3
    assert "backbone.alpha" in records[1]["error"]


def test_resume_continues_and_eval_reproduces_the_checkpoint(tmp_path, quick):
    first = tmp_path / "first"
    run_cli([*quick, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={first}"], cwd=tmp_path)
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = tmp_path / "resumed"
    run_cli([*quick, "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={resumed}"], cwd=tmp_path)
    with open(resumed / "csv" / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("val/top1")}
    assert epochs == {"1"}  # epoch 0 came from the checkpoint, only epoch 1 ran
    (resumed_record,) = _metrics(resumed)
    assert resumed_record["epochs"] == 2

    evaluated = tmp_path / "eval"
    run_cli([*quick, "train=false", f"ckpt_path={last}", f"hydra.run.dir={evaluated}"], cwd=tmp_path)
    (trained,), (evaluation,) = _metrics(first), _metrics(evaluated)
    assert evaluation["mode"] == "eval" and evaluation["status"] == "completed"
    assert evaluation["checkpoint"] == str(last)
    assert trained["checkpoint"] == str(first / "checkpoints" / "epoch000.ckpt")
    assert evaluation["metrics"]["final"]["val/top1"] == pytest.approx(trained["metrics"]["final"]["val/top1"])
    final_loss = trained["metrics"]["final"]["val/loss"]
    assert evaluation["metrics"]["final"]["val/loss"] == pytest.approx(final_loss, rel=1e-4)


def test_config_errors_exit_nonzero_naming_the_key(tmp_path):
    result = run_cli(["backbone.rho=-1"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "backbone.rho" in result.stderr
    assert not (tmp_path / "datasets").exists()  # failed before the data was generated
    unknown = run_cli(["task=nonexistent"], cwd=tmp_path, check=False)
    assert unknown.returncode != 0 and "task" in unknown.stderr and "classification" in unknown.stderr


def test_console_script_matches_python_m(tmp_path):
    script = shutil.which("mnet-tasks")
    if script is None:
        pytest.skip("mnet-tasks is not installed (pip install . installs it)")
    via_script = subprocess.run([script, "--cfg", "job", "backbone.rho=0.714"], cwd=tmp_path, capture_output=True)
    via_module = run_cli(["--cfg", "job", "backbone.rho=0.714"], cwd=tmp_path)
    assert via_script.returncode == 0 and via_script.stdout.decode() == via_module.stdout


def test_wheel_ships_the_configs_and_runs_a_task_from_them(tmp_path, data_dir):
    """The packaged-configs problem: an installed (non-editable) package must find the core configs inside itself
    and each task's configs inside its task package, through the entry points, from any folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, REPO],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mnet_tasks-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mnet_tasks/conf/config.yaml" in names
    assert not [name for name in names if name.startswith(("mnet_tasks/conf/task/", "mnet_tasks/conf/data/"))]
    assert "mnet_tasks/tasks/classification/conf/task/classification.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

    def python(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    assert (
        Path(python("-c", "import mnet_tasks.config as c; print(c.config_dir())").strip())
        == site / "mnet_tasks" / "conf"
    )
    python("-m", "mnet_tasks", *QUICK, f"paths.data_dir={data_dir}", "trainer.fast_dev_run=true", "hydra.run.dir=run")
    record = json.loads((workdir / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["task"] == "classification"
    sources = OmegaConf.load(workdir / "run" / ".hydra" / "hydra.yaml").hydra.runtime.config_sources
    assert {"path": "mnet_tasks.tasks.classification.conf", "schema": "pkg", "provider": "mnet_tasks-plugin"} in sources
    assert {"path": str(site / "mnet_tasks" / "conf"), "schema": "file", "provider": "main"} in sources


@pytest.mark.slow
@pytest.mark.learning
def test_the_readme_main_command_trains_well_above_chance(tmp_path, learning_seed, bars):
    """`python -m mnet_tasks` as the README's first line runs it: defaults (the learning seed is the config's 42 unless
    tests/spread.py sets another), fresh data folder."""
    result = run_cli([f"seed={learning_seed}"], cwd=tmp_path)
    (record,) = _metrics(tmp_path / "outputs" / "classification" / "runs")
    assert (record["alpha"], record["rho"], record["input_size"], record["epochs"]) == (0.25, 0.571, 128, 10)
    # ten classes: chance is 0.1; seeds and CPU kernel paths gave 0.70 to 0.85 (tests/README.md)
    bars.measure("val/top1", record["metrics"]["final"]["val/top1"], at_least=0.5)
    bars.check()
    assert "val/top1" in result.stdout and (tmp_path / "datasets").is_dir()
