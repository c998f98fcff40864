import os
import subprocess
import sys
from pathlib import Path

import pytest

# A small but real configuration: the built-in synthetic data, shrunk, and a thin network.
QUICK = [
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "data.synthetic.num_classes=4",
    "data.synthetic.train_per_class=8",
    "data.synthetic.val_per_class=4",
    "data.synthetic.image_size=48",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One cache of generated synthetic data for the whole session."""
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def quick(data_dir) -> list[str]:
    return [*QUICK, f"paths.data_dir={data_dir}"]


def run_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m mnet_tasks ARGS`` in a fresh process started in ``cwd`` (not the repo)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "mnet_tasks", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        output = f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-3000:]}"
        raise AssertionError(f"exit {result.returncode}\n{output}")
    return result
