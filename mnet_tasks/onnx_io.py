"""ONNX files in and out: the torch.export-based writer, the model card in the metadata, ONNX Runtime sessions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnet_tasks.model_card import CARD_KEY, ModelCard

INPUT_NAME = "images"
TRACED_BATCH = 2  # torch.export specialises batch sizes 0 and 1; the batch dimension stays dynamic


def export_onnx(
    network: nn.Module, path: str | Path, input_size: int, output_names: Sequence[str], card: ModelCard | None = None
) -> Path:
    """Export with the torch.export-based exporter, batch dimension dynamic; the card goes in the metadata."""
    path = Path(path)
    example = torch.randn(TRACED_BATCH, 3, input_size, input_size)
    torch.onnx.export(
        network.eval(),
        (example,),
        path,
        dynamo=True,
        external_data=False,
        verbose=False,
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    if card is not None:
        write_card(path, card)
    return path


def set_metadata(path: str | Path, metadata: Mapping[str, str]) -> None:
    """Write ``metadata`` into the ONNX file's properties (where the model card travels)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.save(model, str(path))


def write_card(path: str | Path, card: ModelCard) -> None:
    set_metadata(path, {CARD_KEY: card.to_json()})


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation; ``threads`` intra-op threads (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_card(session, path: str | Path) -> ModelCard:
    """The model card an exported model carries in its metadata."""
    metadata = session.get_modelmeta().custom_metadata_map
    if CARD_KEY not in metadata:
        raise ValueError(f"{path} carries no {CARD_KEY} model card: export it with python -m mnet_tasks.export")
    return ModelCard.from_json(metadata[CARD_KEY], path)


def onnx_call(session) -> Callable[[torch.Tensor], list[np.ndarray]]:
    """An ONNX Runtime session as a runtime call: its one input in, every output out."""
    input_name = session.get_inputs()[0].name
    return lambda images: session.run(None, {input_name: images.numpy()})
