"""What running an exported model needs, carried with it: its input and preprocessing, its outputs and what each
of their columns means. It travels in the ONNX metadata, the TorchScript extra files and the safetensors header."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import albumentations as A
from albumentations.pytorch import ToTensorV2

from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform

CARD_KEY = "mnet_tasks"  # the metadata key (ONNX, safetensors) or extra file stem (TorchScript) of the card


@dataclass(frozen=True)
class Head:
    """One output of the model: ``num_outputs`` scores, named by ``labels`` (attribute names, cell tokens, object
    categories) or by their index when ``labels`` is empty; ``ids`` are the dataset's ids of the outputs (COCO
    category ids); a geolocation head also has each cell's centroid (latitude, longitude)."""

    name: str
    num_outputs: int
    labels: list[str] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCard:
    """What running the model needs: the preprocessing and how to read its outputs.

    ``preprocess`` is ``center_crop`` (resize the shorter side to ``input_size / crop_pct``, centre-crop
    ``input_size``, normalise by ``mean``/``std``; the model takes ``images`` ``(N, 3, input_size, input_size)``
    float32) or ``image`` (the image as it is, ``(3, H, W)`` float32 in ``[0, 1]``: the model resizes and
    normalises it itself). ``outputs`` are the model's outputs in order; ``family`` is the registered task class.
    """

    task: str
    family: str
    alpha: float
    input_size: int
    crop_pct: float
    heads: list[Head]
    predict_head: str
    outputs: list[str]
    activation: str
    preprocess: str = "center_crop"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    def head(self, name: str) -> Head:
        return next(head for head in self.heads if head.name == name)

    def probability_output(self, head_name: str) -> str:
        return self.output_names[2 * [head.name for head in self.heads].index(head_name) + 1]

    def transform(self) -> A.Compose:
        """From an ``HxWx3`` uint8 image to what the model takes (``preprocess``)."""
        if self.preprocess == "image":
            return A.Compose([A.ToFloat(max_value=255.0), ToTensorV2()])
        return eval_transform(self.input_size, self.crop_pct, self.mean, self.std)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> ModelCard:
        try:
            values = json.loads(text)
            values["heads"] = [Head(**head) for head in values["heads"]]
            return cls(**values)
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{source}: its {CARD_KEY} model card cannot be read ({error})") from error
