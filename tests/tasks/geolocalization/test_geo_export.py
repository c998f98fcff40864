"""An exported geolocation model: every head's logits and probabilities, each cell named with its centroid."""

import numpy as np
import torch
from conftest import export_config, reference_outputs, tiny_data, train_tiny

from mnet_tasks.export import export
from mnet_tasks.onnx_io import onnx_card, onnx_session

TINY_PHOTOS = tiny_data("geolocalization")


def test_geolocalization_export_gives_every_head_with_its_cells(tmp_path, data_dir):
    checkpoint, data, _ = train_tiny(TINY_PHOTOS, tmp_path / "run", data_dir)
    report = export(export_config(checkpoint, *data, "int8=true", f"output_dir={tmp_path / 'export'}"))
    assert report["parity"]["passed"]
    assert report["int8"]["accuracy"]["metric"] == "cell_top1"
    session = onnx_session(tmp_path / "export" / "last.onnx")
    card = onnx_card(session, "last.onnx")
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert [head.name for head in card.heads] == ["coarse", "fine"] and card.predict_head == "fine"
    assert card.output_names == ["logits_coarse", "probabilities_coarse", "logits_fine", "probabilities_fine"]
    fine = hparams["partitions"][1]
    assert card.head("fine").labels == fine["tokens"]
    assert card.head("fine").centroids == [list(c) for c in zip(fine["latitudes"], fine["longitudes"], strict=True)]
    images = torch.randn(2, 3, 64, 64)
    outputs = session.run(card.output_names, {"images": images.numpy()})
    for output, expected in zip(outputs, reference_outputs(checkpoint, images), strict=True):
        np.testing.assert_allclose(output, expected.numpy(), atol=1e-4)
