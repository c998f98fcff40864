"""``python -m mnet_tasks task=detection``: end to end on tiny synthetic COCO data, from another directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import TINY_DATA, run_cli

from mnet_tasks.export import export
from mnet_tasks.predict import predict
from mnet_tasks.tasks.detection.synthetic import CATEGORY_IDS
from mnet_tasks.trained import compose_for_checkpoint

TINY = [*TINY_DATA["detection"], "backbone.alpha=0.25", "data.num_workers=0", "trainer.enable_progress_bar=false"]


def test_train_then_evaluate_a_checkpoint(tmp_path, data_dir):
    common = [*TINY, "task=detection", f"paths.data_dir={data_dir}"]
    run_cli([*common, "trainer.max_epochs=1", "hydra.run.dir=train"], cwd=tmp_path)
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert trained["status"] == "completed" and trained["task"] == "detection"
    assert trained["dataset"] == "synthetic_coco_shapes" and trained["monitor"] == "val/map"
    assert {"val/map", "val/map_50", "val/map_75", "val/map_small"} <= set(trained["metrics"]["final"])
    assert trained["madds"] > 0 and trained["params"] > 0
    assert (tmp_path / "train" / "pictures" / "detections_epoch000.png").is_file()

    checkpoint = trained["checkpoint"]
    run_cli([*common, "train=false", f"ckpt_path={checkpoint}", "hydra.run.dir=eval"], cwd=tmp_path)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["mode"] == "eval" and evaluated["status"] == "completed"
    assert evaluated["metrics"]["final"]["val/map"] == trained["metrics"]["final"]["val/map"]
    detections = json.loads((tmp_path / "eval" / "detections_val.json").read_text())
    assert detections, "an untrained SSD still scores some boxes above 0.01"
    assert {d["category_id"] for d in detections} <= set(CATEGORY_IDS[:3])  # the dataset's sparse ids
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}

    # Exported to ONNX (NMS in the graph), then predicting a folder of images: boxes in the images' pixels.
    report = export(compose_for_checkpoint("export", [f"ckpt_path={checkpoint}"], "ckpt_path"))
    assert report["parity"]["passed"] and report["card"]["outputs"] == ["boxes", "labels", "scores"]
    images = next(Path(data_dir).glob("synthetic_coco_shapes*")) / "val2017"
    for model in (report["model"], checkpoint):
        output_dir = tmp_path / Path(model).suffix[1:]
        overrides = [f"model={model}", f"images={images}", f"output_dir={output_dir}", "min_score=0.0"]
        result = predict(compose_for_checkpoint("predict", [*overrides, "num_workers=0"], "model"))
        assert len(result["predictions"]) == 4 and len(list((output_dir / "pictures").glob("*.png"))) == 4
        found = [d for record in result["predictions"] for d in record["detections"]]
        assert found and {d["category_id"] for d in found} <= set(CATEGORY_IDS[:3])
        assert all(0 <= d["box"][0] <= d["box"][2] <= 96 for d in found)  # the 96 px synthetic images
        with open(output_dir / "predictions.csv", newline="") as file:
            assert len(list(csv.DictReader(file))) == len(found)


def test_faster_rcnn_runs_from_the_command_line(tmp_path, data_dir):
    result = run_cli(
        [*TINY, "task=detection_frcnn", f"paths.data_dir={data_dir}", "trainer.fast_dev_run=true", "hydra.run.dir=run"],
        cwd=tmp_path,
    )
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["input_size"] == 96
    assert "detection on synthetic_coco_shapes" in result.stdout
    assert Path(tmp_path / "run" / ".hydra" / "config.yaml").is_file()
