"""The Im2GPS report as torchmetrics metrics: the share of photos located within 1, 25, 200, 750 and 2500 km of
the truth (street, city, region, country, continent), and the median error in km.

Both take ``(predicted, true)`` as ``(N, 2)`` latitude/longitude tensors in degrees. Their states are reduced
across processes (sums, and the gathered distances for the median), so they are exact under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from mnet_tasks.tasks.geolocalization.distance import great_circle_km

IM2GPS_SCALES_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)


def _check_locations(predicted: torch.Tensor, true: torch.Tensor) -> None:
    if predicted.shape != true.shape or predicted.ndim != 2 or predicted.shape[1] != 2:
        raise ValueError(
            f"expected (N, 2) latitude/longitude tensors of the same shape, got {tuple(predicted.shape)} "
            f"and {tuple(true.shape)}"
        )


def _distances_km(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    _check_locations(predicted, true)
    return great_circle_km(predicted[:, 0], predicted[:, 1], true[:, 0], true[:, 1])


def scale_name(threshold_km: float) -> str:
    """``acc_25km``: the metric name of one distance scale."""
    return f"acc_{threshold_km:g}km"


def geo_metrics(scales_km: Sequence[float] = IM2GPS_SCALES_KM) -> MetricCollection:
    """``acc_<d>km`` for each distance scale and ``median_km``: the Im2GPS report."""
    accuracies = {scale_name(t): AccuracyWithin(t) for t in scales_km}
    # No compute groups: they are inferred from equal states after the first batch, and the scales' counts are
    # often equal then (all photos within 200, 750 and 2500 km) without being the same metric.
    return MetricCollection({**accuracies, "median_km": MedianDistance()}, compute_groups=False)


class AccuracyWithin(Metric):
    """Share of predictions within ``threshold_km`` (inclusive) of the truth: Im2GPS's accuracy at one scale."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold_km: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if not threshold_km >= 0:
            raise ValueError(f"threshold_km must be a distance >= 0, got {threshold_km!r}")
        self.threshold_km = float(threshold_km)
        self.add_state("within", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, true: torch.Tensor) -> None:
        distances = _distances_km(predicted, true)
        self.within += (distances <= self.threshold_km).sum()
        self.total += distances.numel()

    def compute(self) -> torch.Tensor:
        return self.within.double() / self.total.clamp(min=1)


class MedianDistance(Metric):
    """Median great-circle error in km (for an even count, the mean of the two middle values, as numpy's)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("distances", [], dist_reduce_fx="cat")

    def update(self, predicted: torch.Tensor, true: torch.Tensor) -> None:
        self.distances.append(_distances_km(predicted, true))

    def compute(self) -> torch.Tensor:
        if isinstance(self.distances, list) and not self.distances:
            raise ValueError("MedianDistance.compute() called before any update()")
        return torch.quantile(dim_zero_cat(self.distances), 0.5)
