"""Training really learns: the full pipeline (config -> synthetic data -> task -> trainer) beats chance widely."""

import pytest


@pytest.mark.learning
@pytest.mark.xdist_group("shapes_run")  # the transfer test fine-tunes the same run's checkpoint
def test_alpha_025_learns_the_synthetic_shapes_well_above_chance(shapes_run, bars):
    record, checkpoint = shapes_run  # as configured: RMSprop, cosine decay, no label smoothing
    assert record["status"] == "completed" and checkpoint.is_file()
    chance = 1 / 10  # ten shape classes, balanced validation split
    bars.measure("best val/top1", record["metrics"]["best"]["val/top1"], at_least=3.5 * chance)
    bars.measure("final val/top1", record["metrics"]["final"]["val/top1"], at_least=3 * chance)
    bars.check()
