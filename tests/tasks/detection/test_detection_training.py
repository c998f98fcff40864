"""Detection really learns: SSD on the synthetic COCO shapes, scored by COCOeval, and Faster-RCNN's loss falls."""

from __future__ import annotations

import json

import pytest

from mnet_tasks.config import compose_config
from mnet_tasks.run import run

# The default 20 epochs (detection's conf/task_defaults/detection.yaml) end anywhere from AP50 0.48 to 0.65 with
# the dataloader's random streams (workers, seed); 30 put the bar out of that noise: 0.75 where 20 gave 0.48.
EPOCHS = 30


@pytest.mark.slow
@pytest.mark.learning
def test_ssd_alpha_025_learns_the_synthetic_shapes(tmp_path, data_dir, learning_seed, bars):
    cfg = compose_config(
        [
            "task=detection",
            "backbone.alpha=0.25",
            "data.num_workers=2",
            f"trainer.max_epochs={EPOCHS}",
            f"trainer.check_val_every_n_epoch={EPOCHS}",
            "trainer.enable_progress_bar=false",
            "callbacks=none",
            f"seed={learning_seed}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    record = run(cfg)  # the default recipe, longer, on the built-in data at the quick start's 171 px
    # An untrained detector scores ~0.
    bars.measure("val/map_50", record["metrics"]["final"]["val/map_50"], at_least=0.5)
    bars.measure("val/map", record["metrics"]["final"]["val/map"], at_least=0.25)
    bars.check()
    detections = json.loads((tmp_path / "detections_val.json").read_text())
    assert {d["category_id"] for d in detections} == {2, 5, 11}  # the synthetic set's sparse COCO-style ids
