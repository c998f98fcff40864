"""A training process killed mid-epoch and resumed with ckpt_path=last ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.run import resolve_last_checkpoint

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


def test_killed_run_resumes_mid_epoch_to_the_same_result(quick, tmp_path):
    args = [*quick, *RESUMABLE]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_cli([*args, f"hydra.run.dir={straight}"], cwd=tmp_path)

    (tmp_path / "hold_training.py").write_text(HOLD_CALLBACK)
    marker = tmp_path / "held"
    hold = ["+callbacks.hold._target_=hold_training.HoldAfterStep", f"+callbacks.hold.step={HOLD_STEP}"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnet_tasks",
            *args,
            f"hydra.run.dir={interrupted}",
            *hold,
            f"+callbacks.hold.marker={marker}",
        ],
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
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

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
    straight_weights, resumed_weights = _final_weights(straight), _final_weights(interrupted)
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-5, rtol=0, msg=name)


def test_ckpt_path_last_is_the_run_folders_last_checkpoint(tmp_path):
    cfg = compose_config(["ckpt_path=last", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no checkpoint at .*last\.ckpt.*hydra\.run\.dir="):
        resolve_last_checkpoint(cfg)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    resolve_last_checkpoint(cfg)
    assert cfg.ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt")
