"""An exported attribute model: named sigmoid probabilities, the same as the checkpoint's."""

import numpy as np
import torch
from conftest import export_config, reference_outputs, tiny_data, train_tiny

from mnet_tasks.export import export
from mnet_tasks.onnx_io import onnx_card, onnx_session

TINY_FACES = tiny_data("attributes")


def test_attribute_export_gives_named_sigmoid_probabilities(tmp_path, data_dir):
    checkpoint, data, _ = train_tiny(TINY_FACES, tmp_path / "run", data_dir)
    report = export(export_config(checkpoint, *data, f"output_dir={tmp_path / 'export'}"))
    assert report["parity"]["passed"]
    session = onnx_session(tmp_path / "export" / "last.onnx")
    card = onnx_card(session, "last.onnx")
    names = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["attribute_names"]
    assert card.activation == "sigmoid" and card.heads[0].labels == names and card.crop_pct == 1.0
    images = torch.randn(3, 3, 64, 64)
    logits, probabilities = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(probabilities, torch.sigmoid(torch.from_numpy(logits)).numpy(), atol=1e-6)
    np.testing.assert_allclose(logits, reference_outputs(checkpoint, images)[0].numpy(), atol=1e-4)
