"""Two-process DDP (gloo on CPU) through the real CLI: the verification metric gathers every process's embeddings,
so the pair scores of the distributed run equal those of one process evaluating the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_face_embedding import TINY_FACES

# 60 validation photos over two ranks, batches of 16: the ranks' last batches are short and padded by the sampler.
COMMON = [
    *TINY_FACES,
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_two_process_ddp_scores_every_pair_once(tmp_path: Path, data_dir: Path) -> None:
    run_cli([*COMMON, "trainer=ddp", f"paths.data_dir={data_dir}", "hydra.run.dir=ddp"], cwd=tmp_path)
    run_dir = tmp_path / "ddp"
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, in this folder
    distributed = json.loads((run_dir / "metrics.json").read_text())
    assert distributed["status"] == "completed", distributed

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    overrides = [*COMMON, f"paths.data_dir={data_dir}", "train=false", f"ckpt_path={checkpoint}", "hydra.run.dir=one"]
    run_cli(overrides, cwd=tmp_path)
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in ("val/accuracy", "val/tar_far_1e-3", "val/auc"):
        assert distributed["metrics"]["final"][key] == pytest.approx(single["metrics"]["final"][key], abs=1e-6), key
