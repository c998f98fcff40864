"""Anchors of the two detectors, built on torchvision's generators."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

# The released TF Object Detection API's SSD MobileNet anchors: six maps, scales 0.2 .. 0.95.
SSD_MIN_SCALE = 0.2
SSD_MAX_SCALE = 0.95
SSD_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


class TFDefaultBoxes(DefaultBoxGenerator):
    """SSD default boxes laid out as the TF Object Detection API does it for MobileNet.

    torchvision's generator gives every map the pairs {1, s'} plus (r, 1/r) per ratio; the TF layout instead has
    every ratio of ``aspect_ratios`` at scale s_k plus ratio 1 at s'_k = sqrt(s_k s_{k+1}), and its lowest map
    ("reduce_boxes_in_lowest_layer") only three boxes: ratio 1 at scale 0.1, and ratios 2 and 1/2 at s_0.
    Centres, clipping and scaling to pixels are torchvision's.
    """

    def __init__(
        self,
        num_maps: int,
        min_scale: float = SSD_MIN_SCALE,
        max_scale: float = SSD_MAX_SCALE,
        aspect_ratios: Sequence[float] = SSD_ASPECT_RATIOS,
        reduce_lowest: bool = True,
    ):
        self.box_aspect_ratios = tuple(aspect_ratios)
        self.reduce_lowest = reduce_lowest
        # The parent's ``aspect_ratios`` only sets the number of maps here; scales follow min/max as in TF.
        super().__init__([[] for _ in range(num_maps)], min_ratio=min_scale, max_ratio=max_scale)

    def _generate_wh_pairs(
        self, num_outputs: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> list[torch.Tensor]:
        pairs_per_map = []
        for k in range(num_outputs):
            scale = self.scales[k]
            if k == 0 and self.reduce_lowest:
                shapes = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
            else:
                shapes = [(scale, ratio) for ratio in self.box_aspect_ratios]
                shapes.append((math.sqrt(scale * self.scales[k + 1]), 1.0))
            pairs = [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in shapes]
            pairs_per_map.append(torch.as_tensor(pairs, dtype=dtype, device=device))
        return pairs_per_map

    def num_anchors_per_location(self) -> list[int]:
        return [len(pairs) for pairs in self._wh_pairs]


def rpn_anchors(input_size: int, scales: Sequence[float], aspect_ratios: Sequence[float]) -> AnchorGenerator:
    """Faster-RCNN's RPN anchors on one stride-16 map, sized as fractions of the input's shorter side.

    The TF layout uses 64..512 px at 600 px (scales 0.25 .. 2 of a 256 px base): fractions keep that coverage
    at 300 px and at the small sizes of quick runs.
    """
    sizes = tuple(max(8, round(scale * input_size)) for scale in scales)
    return AnchorGenerator(sizes=(sizes,), aspect_ratios=(tuple(aspect_ratios),))
