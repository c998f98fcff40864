"""Detectors export whole to ONNX, post-processing and NMS included, and match PyTorch on any image size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mnet_tasks.bench import (
    benchmark,
    task_subjects,
)
from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.export import export
from mnet_tasks.onnx_io import onnx_session
from mnet_tasks.task_module import build_task
from mnet_tasks.tasks.detection.adapter import DetectionAdapter
from mnet_tasks.trained import compose_for_checkpoint, load_trained


def graph_ops(graph) -> set[str]:
    """Every operator of an ONNX graph, inside its If/Loop branches too."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            for branch in [attribute.g, *attribute.graphs]:
                ops |= graph_ops(branch)
    return ops


def save_checkpoint(path, task: str, *overrides: str) -> None:
    """A Faster-RCNN or SSD checkpoint as Lightning writes it (hyper-parameters, weights, the task class)."""
    cfg = compose_config([f"task={task}", "backbone.alpha=0.25", "backbone.resolution=96", *overrides])
    torch.manual_seed(0)
    module = build_task(cfg, num_classes=3, category_ids=[2, 5, 9], category_names=["a", "b", "c"])
    payload = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(payload)
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("task", "overrides"),
    [("detection_frcnn", []), ("detection", []), ("detection", ["+task.detector.classification=sigmoid"])],
    ids=["faster_rcnn", "ssd", "ssd_sigmoid"],
)
def test_exported_detector_matches_pytorch_on_images_of_other_sizes(tmp_path, task, overrides):
    checkpoint = tmp_path / "model.ckpt"
    save_checkpoint(checkpoint, task, *overrides)
    report = export(compose_for_checkpoint("export", [f"ckpt_path={checkpoint}"], "ckpt_path"))
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"]["count"] == 0

    trained = load_trained(checkpoint, crop_pct=1.0)
    session = onnx_session(report["model"])
    assert "NonMaxSuppression" in graph_ops(onnx.load(report["model"]).graph)
    image = torch.rand(3, 70, 130, generator=torch.Generator().manual_seed(1))  # neither the traced nor a square size
    boxes, labels, scores = session.run(None, {"image": image.numpy()})
    with torch.inference_mode():
        expected = trained.module.detector([image])[0]
    assert len(scores) == len(expected["scores"]) > 0
    np.testing.assert_allclose(np.sort(scores), np.sort(expected["scores"].numpy()), atol=1e-4)
    assert set(labels.tolist()) <= {1, 2, 3} and boxes[:, 2].max() <= 130 and boxes[:, 3].max() <= 70
    assert report["card"]["heads"][0]["ids"] == [2, 5, 9] and report["card"]["preprocess"] == "image"


def test_detection_formats_it_cannot_write_are_refused(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    save_checkpoint(checkpoint, "detection")
    with pytest.raises(ConfigError, match="format=torchscript: a detection model exports to onnx"):
        export(compose_for_checkpoint("export", [f"ckpt_path={checkpoint}", "format=torchscript"], "ckpt_path"))
    with pytest.raises(ConfigError, match="int8=true: int8 quantization does not cover detection"):
        export(compose_for_checkpoint("export", [f"ckpt_path={checkpoint}", "int8=true"], "ckpt_path"))


def test_detection_benchmark_runs_ssd_beside_torchvisions_ssdlite_eager_and_exported():
    subjects, anchor = task_subjects(DetectionAdapter(), [0.25], [128], None)
    runtimes = ["eager_nchw", "onnxruntime_fp32"]
    rows = benchmark(subjects, runtimes, 1, repeats=2, warmup=1, rounds=1, throughput_batch=0)
    assert anchor == "torchvision_ssdlite320_mobilenet_v3_large"
    assert {(r["model"], r["runtime"]) for r in rows} == {
        (model, runtime) for model in (anchor, "mnet_tasks SSD128 a=0.25") for runtime in runtimes
    }
    ours = next(r for r in rows if r["model"] != anchor)
    assert ours["params"] == sum(p.numel() for p in subjects[1].build().parameters())
    assert all(r["latency_ms"] > 0 and r["throughput_images_per_s"] is None for r in rows)
