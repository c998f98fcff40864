"""A training process killed mid-epoch and resumed with ckpt_path=last ends exactly where an uninterrupted run ends."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.run import resolve_last_checkpoint, run

# 32 training images in batches of 4: 8 steps per epoch, 16 in all; last.ckpt every 3 steps. Two loader workers:
# the augmentations must not depend on which worker drew an image.
RESUMABLE = [
    "data.batch_size=4",
    "data.num_workers=2",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=3",
]

# Importable by the training process (python -m puts its working directory on sys.path): holds training still
# once global step HOLD_STEP's checkpoint is written, so that the kill lands mid-epoch without timing luck.
HOLD_CALLBACK = """
import time
from pathlib import Path
import pytorch_lightning as pl

class HoldAfterStep(pl.Callback):
    def __init__(self, step, marker):
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:  # the checkpoint of that step was written at its batch end
            Path(self.marker).write_text(str(batch_idx))
            time.sleep(600)
"""
HOLD_STEP = 3


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(straight: Path, resumed: Path) -> None:
    straight_weights, resumed_weights = _final_weights(straight), _final_weights(resumed)
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-5, rtol=0, msg=name)


def hold_and_signal(args: list[str], run_dir: Path, tmp_path: Path, signal_number: int) -> int:
    """Train ``args`` in ``run_dir`` until it holds at ``HOLD_STEP``, send it ``signal_number``; its exit code."""
    (tmp_path / "hold_training.py").write_text(HOLD_CALLBACK)
    marker = tmp_path / f"held_{run_dir.name}"
    hold = ["+callbacks.hold._target_=hold_training.HoldAfterStep", f"+callbacks.hold.step={HOLD_STEP}"]
    command = [sys.executable, "-m", "mnet_tasks", *args, f"hydra.run.dir={run_dir}", *hold]
    process = subprocess.Popen(
        [*command, f"+callbacks.hold.marker={marker}"],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"training never reached step {HOLD_STEP} (exit code {process.poll()})"
        process.send_signal(signal_number)
        return process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_killed_run_resumes_mid_epoch_to_the_same_result(quick, tmp_path):
    args = [*quick, *RESUMABLE]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_cli([*args, f"hydra.run.dir={straight}"], cwd=tmp_path)

    assert hold_and_signal(args, interrupted, tmp_path, signal.SIGKILL) == -signal.SIGKILL

    checkpoint = torch.load(interrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == HOLD_STEP and checkpoint["epoch"] == 0  # mid-epoch: 3 of its 8 steps
    assert not (interrupted / "metrics.json").exists()  # SIGKILL: no chance to write anything

    resumed = run_cli([*args, f"hydra.run.dir={interrupted}", "ckpt_path=last"], cwd=tmp_path)
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr

    expected = json.loads((straight / "metrics.json").read_text())
    record = json.loads((interrupted / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == expected["epochs"] == 2
    assert record["best_epoch"] == expected["best_epoch"]  # the epoch before the kill is remembered
    for kind in ("final", "best"):
        assert record["metrics"][kind].keys() == expected["metrics"][kind].keys()
        for name, value in expected["metrics"][kind].items():
            assert record["metrics"][kind][name] == pytest.approx(value, abs=1e-5), (kind, name)
    assert_same_weights(straight, interrupted)


def test_ctrl_c_before_any_checkpoint_leaves_one_and_the_resumed_run_keeps_the_whole_history(quick, tmp_path):
    """SIGINT mid-epoch, before the first epoch or step checkpoint: OnExceptionCheckpoint writes last.ckpt, the
    message says how to go on, and the resumed run ends with an uninterrupted run's weights and one CSV log in
    which every epoch and every step appears once."""
    args = [*quick, "data.batch_size=4", "data.num_workers=2", "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_cli([*args, f"hydra.run.dir={straight}"], cwd=tmp_path)

    assert hold_and_signal(args, interrupted, tmp_path, signal.SIGINT) != 0
    assert not (interrupted / "checkpoints" / "last.ckpt").exists()  # no epoch or step checkpoint yet
    checkpoint = torch.load(interrupted / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == HOLD_STEP and checkpoint["epoch"] == 0
    record = json.loads((interrupted / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("KeyboardInterrupt: training was interrupted")
    assert f"ckpt_path=last hydra.run.dir={interrupted}" in record["error"]
    logged_before = len(csv_rows(interrupted))

    run_cli([*args, f"hydra.run.dir={interrupted}", "ckpt_path=last"], cwd=tmp_path)
    record = json.loads((interrupted / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    assert not (interrupted / "checkpoints" / "interrupted.ckpt").exists()  # a run that ends normally removes it
    assert_same_weights(straight, interrupted)

    rows, expected = csv_rows(interrupted), csv_rows(straight)
    assert logged_before > 0 and len(rows) == len(expected)  # the first run's rows kept, none twice
    validation = [row["epoch"] for row in rows if row.get("val/loss")]
    assert validation == [row["epoch"] for row in expected if row.get("val/loss")] == ["0", "1"]
    steps = [row["step"] for row in rows if row.get("train/loss")]
    assert steps == [row["step"] for row in expected if row.get("train/loss")] and len(set(steps)) == len(steps)

    # resuming the finished run trains nothing and keeps its log whole
    run_cli([*args, f"hydra.run.dir={interrupted}", "ckpt_path=last"], cwd=tmp_path)
    assert csv_rows(interrupted) == rows


def test_a_fresh_run_in_a_used_folder_starts_its_log_afresh(quick, tmp_path):
    cfg = compose_config(
        [*quick, "trainer.max_epochs=1", "trainer.log_every_n_steps=1", f"paths.output_dir={tmp_path}"]
    )
    run(cfg)
    first = csv_rows(tmp_path)
    run(cfg)
    assert csv_rows(tmp_path) == first  # not appended to the earlier run's rows


def test_ckpt_path_last_is_the_run_folders_last_checkpoint(tmp_path):
    cfg = compose_config(["ckpt_path=last", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no checkpoint at .*last\.ckpt.*hydra\.run\.dir="):
        resolve_last_checkpoint(cfg)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    resolve_last_checkpoint(cfg)
    assert cfg.ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt")


def test_ckpt_path_last_in_a_run_folder_without_a_checkpoint_says_so(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")  # a run was here, and stopped before saving anything
    cfg = compose_config(["ckpt_path=last", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=rf"the run in {re.escape(str(tmp_path))} saved no checkpoint"):
        resolve_last_checkpoint(cfg)
