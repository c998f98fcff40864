"""The best constant guess: how well one and the same location, given as the answer for every test photo, scores.

``python -m mnet_tasks.tasks.geolocalization.baseline task=geolocalization [data overrides]`` prints it for the
configured data (the built-in synthetic set by default, or ``data.root=...``) at every Im2GPS scale. The candidates
are the training photos' locations and the centroids of the cells built from them; the best one is chosen for each
scale (and for the median) separately with the test set in hand, so the numbers bound from above what a model that
ignores the picture can do. A geolocation model has to beat them to have learnt anything from the pixels.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from mnet_tasks.tasks.geolocalization.distance import great_circle_km
from mnet_tasks.tasks.geolocalization.metrics import IM2GPS_SCALES_KM, scale_name

# torch.quantile refuses inputs of more than 2**24 elements; the candidates are taken in blocks below that.
_BLOCK_ELEMENTS = 2**22


def best_constant_guess(
    candidates: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    scales_km: Sequence[float] = IM2GPS_SCALES_KM,
) -> dict[str, float]:
    """``acc_<d>km``: the highest share of ``truth`` within d km of one candidate; ``median_km``: the lowest median
    error of one candidate (for an even count the mean of the two middle errors, as the task's metric).

    ``candidates`` and ``truth`` are ``(C, 2)`` and ``(N, 2)`` latitude/longitude in degrees.
    """
    candidates = torch.as_tensor(candidates, dtype=torch.float64)
    truth = torch.as_tensor(truth, dtype=torch.float64)
    for name, points in (("candidates", candidates), ("truth", truth)):
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise ValueError(f"{name} must be a non-empty (N, 2) latitude/longitude array, got {tuple(points.shape)}")
    best = dict.fromkeys(map(scale_name, scales_km), 0.0)
    best_median = float("inf")
    rows = max(1, _BLOCK_ELEMENTS // len(truth))
    for block in candidates.split(rows):
        distances = great_circle_km(block[:, None, 0], block[:, None, 1], truth[None, :, 0], truth[None, :, 1])
        for threshold in scales_km:
            share = float((distances <= threshold).double().mean(1).max())
            best[scale_name(threshold)] = max(best[scale_name(threshold)], share)
        best_median = min(best_median, float(torch.quantile(distances, 0.5, dim=1).min()))
    return {**best, "median_km": best_median}


def main(overrides: list[str]) -> dict[str, float]:
    from hydra.utils import instantiate

    from mnet_tasks.config import compose_config
    from mnet_tasks.tasks.geolocalization.data import GeoDataModule

    cfg = compose_config(overrides)
    datamodule = instantiate(cfg.data, output_dir=None)  # nothing is written: no run folder
    if not isinstance(datamodule, GeoDataModule):
        raise SystemExit(
            f"the best constant guess needs geolocation data (task=geolocalization), not {cfg.data._target_}"
        )
    datamodule.prepare_data()
    train = datamodule.geo_list("train").locations
    truth = datamodule.geo_list("val").locations
    candidates = np.concatenate([train, *(partition.centroids for partition in datamodule.partitions)])
    report = best_constant_guess(candidates, truth, cfg.task.distance_scales_km)
    print(f"best constant guess on {datamodule.dataset_name}: {len(truth)} test photos, {len(candidates)} candidates")
    for name, value in report.items():
        print(f"  {name:<12} {value:.1f}" if name == "median_km" else f"  {name:<12} {value:.4f}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
