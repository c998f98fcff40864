"""Export: ONNX and TorchScript reproduce the checkpoint in PyTorch, carry their model card, int8 loads and predicts."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_DATA, export_config, reference_outputs, train_tiny

from mnet_tasks import MobileNetV1, load_pretrained
from mnet_tasks.config import ConfigError
from mnet_tasks.export import export, load_torchscript
from mnet_tasks.onnx_io import onnx_card, onnx_session
from mnet_tasks.trained import compose_for_checkpoint, load_trained

CLASSIFICATION = TINY_DATA["classification"]


@pytest.fixture(scope="module")
def classification(tmp_path_factory, data_dir):
    return train_tiny(CLASSIFICATION, tmp_path_factory.mktemp("classification"), data_dir)


def test_classification_onnx_matches_pytorch_and_int8_loads_and_predicts(classification, tmp_path):
    checkpoint, data, record = classification
    report = export(export_config(checkpoint, *data, "int8=true", f"output_dir={tmp_path}"))

    assert report["parity"]["passed"] and max(report["parity"]["max_abs_diff"].values()) < 1e-4
    assert json.loads((tmp_path / "last.export.json").read_text()) == report
    # an independent check at yet another batch size: the batch dimension is dynamic
    session = onnx_session(tmp_path / "last.onnx")
    assert onnx_card(session, tmp_path / "last.onnx").heads[0].num_outputs == 4
    images = torch.randn(5, 3, 64, 64)
    logits, probabilities = session.run(["logits", "probabilities"], {"images": images.numpy()})
    expected_logits, expected_probabilities = reference_outputs(checkpoint, images)
    np.testing.assert_allclose(logits, expected_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(probabilities, expected_probabilities.numpy(), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)

    # the safetensors weights are the checkpoint's, loadable as a pretrained backbone
    backbone = MobileNetV1(alpha=0.25, num_classes=4)
    load_pretrained(backbone, tmp_path / "last.safetensors")
    trained_backbone = load_trained(checkpoint, crop_pct=1.0).module.backbone
    for name, tensor in trained_backbone.state_dict().items():
        torch.testing.assert_close(backbone.state_dict()[name], tensor)

    # int8: quantized convolutions, the card kept, outputs of the same shape, a reported accuracy change
    int8_path = tmp_path / "last.int8.onnx"
    optimized = ort.SessionOptions()
    optimized.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8_path), optimized, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("QLinearConv") == 27 and "Conv" not in ops and "Clip" not in ops  # ReLU6 fused in int8
    assert ops.count("QuantizeLinear") == 2  # int8 from the input to the pooling: no float between the convs
    int8_session = onnx_session(int8_path)
    assert onnx_card(int8_session, int8_path) == onnx_card(session, tmp_path / "last.onnx")
    int8_probabilities = int8_session.run(["probabilities"], {"images": images.numpy()})[0]
    assert int8_probabilities.shape == (5, 4)
    np.testing.assert_allclose(int8_probabilities.sum(1), 1.0, atol=1e-5)
    accuracy = report["int8"]["accuracy"]
    assert accuracy["images"] == 16 and accuracy["metric"] == "top1"
    # fp32 in ONNX Runtime scores exactly what the training run's validation measured
    assert accuracy["fp32"] == pytest.approx(record["metrics"]["final"]["val/top1"])
    assert accuracy["change_points"] == pytest.approx(100 * (accuracy["int8"] - accuracy["fp32"]))
    assert 0.0 <= accuracy["agreement"] <= 1.0


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript is deprecated in PyTorch; it still works
def test_torchscript_export_matches_pytorch_at_any_batch_size(classification, tmp_path):
    checkpoint, data, _ = classification
    report = export(export_config(checkpoint, *data, "format=torchscript", f"output_dir={tmp_path}"))
    assert report["parity"]["passed"] and report["model"] == str(tmp_path / "last.pt")
    scripted, card = load_torchscript(tmp_path / "last.pt")
    assert card.output_names == ["logits", "probabilities"] and card.input_size == 64
    images = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        outputs = scripted(images)
    for output, expected in zip(outputs, reference_outputs(checkpoint, images), strict=True):
        torch.testing.assert_close(output, expected, atol=1e-4, rtol=1e-4)


def test_bad_requests_name_the_key_or_file(classification, tmp_path):
    checkpoint, data, _ = classification
    with pytest.raises(ConfigError, match="format must be one of"):
        export(export_config(checkpoint, *data, "format=tflite"))
    with pytest.raises(ConfigError, match="int8=true quantizes the ONNX model"):
        export(export_config(checkpoint, *data, "format=torchscript", "int8=true"))
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        compose_for_checkpoint("export", [], "ckpt_path")
    unnamed = tmp_path / "unnamed.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}}, unnamed)
    with pytest.raises(ValueError, match=r"unnamed\.ckpt does not name its task class"):
        load_trained(unnamed, crop_pct=1.0)
    uninstalled = tmp_path / "uninstalled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "mnet_tasks": {"task_class": "scenes"}}, uninstalled)
    with pytest.raises(ValueError, match=r"uninstalled\.ckpt: no task class registered as 'scenes'.*installed"):
        load_trained(uninstalled, crop_pct=1.0)
    weights = tmp_path / "weights.ckpt"
    torch.save(MobileNetV1(alpha=0.25).state_dict(), weights)
    with pytest.raises(ValueError, match=r"weights\.ckpt is not a checkpoint of this project"):
        load_trained(weights, crop_pct=1.0)
