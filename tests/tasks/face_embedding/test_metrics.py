"""Face verification metrics: LFW's k-fold accuracy, TAR at FAR, the ROC AUC, missing images, the DDP merge, and the
ROC picture, against hand-computed values and brute-force references."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from mnet_tasks.tasks.face_embedding.metrics import (
    PairVerification,
    best_threshold,
    far_key,
    kfold_accuracy,
    tar_at_far,
)
from mnet_tasks.tasks.face_embedding.roc_plot import negative_count, roc_curve, save_roc, tar_at

# --- the hand-computed case -----------------------------------------------------------------------
# Eight images, 2-D unit embeddings at these angles: a pair's score is the cosine of their angle difference.
HAND_ANGLES = (0, 30, 45, 60, 90, 120, 150, 180)
# (first, second, fold, same): score
HAND_PAIRS = [
    (0, 1, 0, True),  # 30°: 0.866
    (2, 5, 0, True),  # 75°: 0.259
    (0, 3, 0, False),  # 60°: 0.5
    (0, 5, 0, False),  # 120°: -0.5
    (1, 2, 1, True),  # 15°: 0.966
    (0, 2, 1, True),  # 45°: 0.707
    (4, 7, 1, False),  # 90°: 0
    (1, 7, 1, False),  # 150°: -0.866
    (2, 6, -1, True),  # 105°: -0.259, large list
    (2, 7, -1, False),  # 135°: -0.707, large list
    (0, 7, -1, False),  # 180°: -1, large list
]


def unit_vectors(degrees) -> torch.Tensor:
    radians = np.radians(np.asarray(degrees, dtype=np.float64))
    return torch.from_numpy(np.stack([np.cos(radians), np.sin(radians)], 1)).float()


def pair_tensors(pairs) -> dict[str, torch.Tensor]:
    first, second, fold, same = zip(*pairs, strict=True)
    return {
        "first": torch.tensor(first),
        "second": torch.tensor(second),
        "fold": torch.tensor(fold),
        "same": torch.tensor(same),
    }


def hand_metric(**kwargs) -> PairVerification:
    return PairVerification(**pair_tensors(HAND_PAIRS), num_images=len(HAND_ANGLES), far_targets=(0.2, 0.1), **kwargs)


def as_floats(results: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in results.items()}


def assert_same_results(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key].cpu(), expected[key].cpu(), equal_nan=True, msg=key)


def test_hand_computed_pairs(caplog):
    metric = hand_metric()
    embeddings = unit_vectors(HAND_ANGLES)
    metric.update(embeddings[:5], torch.arange(5))
    metric.update(embeddings[5:], torch.arange(5, 8))
    with caplog.at_level(logging.WARNING):
        results = as_floats(metric.compute())
    expected_scores = np.cos(np.radians([HAND_ANGLES[b] - HAND_ANGLES[a] for a, b, _, _ in HAND_PAIRS]))
    np.testing.assert_allclose(metric.scores.numpy(), expected_scores, atol=1e-6)

    # Fold 0 is tested at the best threshold of fold 1's pairs, sorted: -0.866 D, 0 D, 0.707 S, 0.966 S. The cuts
    # below all, between each two, above all classify 2, 3, 4, 3, 2 right: the best is between 0 and 0.707,
    # t = 0.3536. Fold 0 at t: 0.866 S accepted (right), 0.259 S rejected (wrong), 0.5 D accepted (wrong), -0.5 D
    # rejected (right): 2/4.
    # Fold 1 is tested at the best threshold of fold 0's pairs, sorted: -0.5 D, 0.259 S, 0.5 D, 0.866 S. The cuts
    # classify 2, 3, 2, 3, 2 right: the two best are t = (-0.5 + 0.259) / 2 = -0.1206 and (0.5 + 0.866) / 2; the
    # lower wins. Fold 1 at t: 0.966 S and 0.707 S accepted (right), 0 D accepted (wrong), -0.866 D rejected
    # (right): 3/4. (The higher threshold would have scored 4/4.)
    np.testing.assert_allclose(
        metric.fold_thresholds.numpy(), [np.cos(np.radians(45)) / 2, (np.cos(np.radians(75)) - 0.5) / 2], atol=1e-6
    )
    assert metric.fold_accuracies.tolist() == [0.5, 0.75]
    assert results["accuracy"] == 0.625
    assert results["accuracy_std"] == 0.125  # population std: |0.5 - 0.625| = |0.75 - 0.625|

    # All 11 pairs. Negatives, highest first: 0.5, 0, -0.5, -0.707, -0.866, -1 (6); positives: 0.966, 0.866, 0.707,
    # 0.259, -0.259 (5). FAR 0.2 allows floor(1.2) = 1 false accept: the threshold is the 2nd highest negative, 0,
    # and 4 positives score above it: TAR 0.8. FAR 0.1 would need 10 negatives: NaN, and a warning.
    assert results["tar_far_2e-1"] == pytest.approx(0.8, abs=1e-7)
    assert math.isnan(results["tar_far_1e-1"])
    assert "6 negative pairs" in caplog.text and "10 for FAR 0.1" in caplog.text
    # AUC: of the 5 × 6 (positive, negative) pairs the positive scores higher in 6 + 6 + 6 + 5 (0.259 is below
    # 0.5) + 4 (-0.259 is below 0.5 and 0) = 27: 27/30 = 0.9.
    assert results["auc"] == pytest.approx(0.9, abs=1e-7)
    assert results["pairs"] == 11 and results["missing_pairs"] == 0
    assert set(results) == {"accuracy", "accuracy_std", "tar_far_2e-1", "tar_far_1e-1", "auc", "pairs", "missing_pairs"}


def test_far_key_names():
    assert [far_key(far) for far in (1e-3, 1e-4, 1e-5, 0.2)] == [
        "tar_far_1e-3",
        "tar_far_1e-4",
        "tar_far_1e-5",
        "tar_far_2e-1",
    ]
    with pytest.raises(ValueError, match="share a name"):
        PairVerification(**pair_tensors(HAND_PAIRS), num_images=8, far_targets=(1e-4, 1.2e-4))


def test_single_fold_uses_its_own_best_threshold():
    pairs = [(a, b, 0 if fold >= 0 else -1, same) for a, b, fold, same in HAND_PAIRS]
    metric = PairVerification(**pair_tensors(pairs), num_images=8)
    metric.update(unit_vectors(HAND_ANGLES), torch.arange(8))
    results = as_floats(metric.compute())
    # The 8 fold pairs sorted: -0.866 D, -0.5 D, 0 D, 0.259 S, 0.5 D, 0.707 S, 0.866 S, 0.966 S; the cut between 0
    # and 0.259 classifies 7 right, the only error being 0.5 D.
    assert results["accuracy"] == 7 / 8
    assert math.isnan(results["accuracy_std"])


def test_best_threshold_never_splits_a_tie():
    # Sorted: 0.1 D, 0.5 D, 0.5 S, 0.9 S. Cutting between the two 0.5s would count 4 right, but no threshold can
    # separate equal scores. The real cuts, -inf, 0.3, 0.7, +inf, count 2, 3, 3, 2: the lower of the best, 0.3.
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9], dtype=torch.float64)
    assert best_threshold(scores, torch.tensor([False, False, True, True])) == pytest.approx(0.3)
    assert best_threshold(scores, torch.tensor([True, True, False, False])) == -math.inf  # all same: 2 right
    assert best_threshold(scores[:0], torch.zeros(0, dtype=torch.bool)) == -math.inf


# --- brute-force references -----------------------------------------------------------------------


def scored_pairs(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> PairVerification:
    """A metric updated so that pair i scores ``scores[i]``: image 0 at angle 0, image i + 1 at arccos(score)."""
    embeddings = torch.from_numpy(np.stack([scores, np.sqrt(1 - scores**2)], 1))  # float64: scores to ~1e-16
    metric = PairVerification(
        first=torch.zeros(len(scores), dtype=torch.long),
        second=torch.arange(1, len(scores) + 1),
        fold=torch.from_numpy(fold),
        same=torch.from_numpy(same),
        num_images=len(scores) + 1,
    )
    metric.update(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    for start in range(0, len(scores), 4096):
        metric.update(
            embeddings[start : start + 4096], torch.arange(start + 1, start + 1 + len(embeddings[start:][:4096]))
        )
    return metric


def brute_force_tar(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The best TAR over every threshold t (a score, or +inf) whose false accepts (negatives > t) are at most
    far × negatives."""
    negatives, positives = np.sort(scores[~same]), np.sort(scores[same])
    candidates = np.r_[scores, np.inf]
    false_accepts = len(negatives) - np.searchsorted(negatives, candidates, side="right")
    true_accepts = len(positives) - np.searchsorted(positives, candidates, side="right")
    allowed = false_accepts <= far * len(negatives) + 1e-9
    return true_accepts[allowed].max() / len(positives)


@pytest.mark.parametrize("decimals", [None, 2])  # 2: scores on a grid of 0.01, so the thresholds fall on ties
def test_tar_at_far_matches_brute_force(decimals):
    rng = np.random.default_rng(7)
    negatives, positives = rng.normal(0.0, 0.2, 20_000), rng.normal(0.55, 0.2, 500)
    scores = np.clip(np.r_[negatives, positives], -1, 1)
    if decimals is not None:
        scores = np.round(scores, decimals)
    same = np.r_[np.zeros(20_000, bool), np.ones(500, bool)]
    fold = np.full(len(scores), -1)
    metric = scored_pairs(scores, same, fold)
    results = as_floats(metric.compute())
    used = metric.scores.numpy()
    np.testing.assert_allclose(used, scores, atol=1e-12)
    for far in (1e-3, 1e-4):
        reference = brute_force_tar(used, same, far)
        assert 0.05 < reference < 0.95  # a rate the test can get wrong
        assert results[far_key(far)] == pytest.approx(reference, abs=1e-7)
    reference_auc = binary_auroc(torch.from_numpy((used + 1) / 2), torch.from_numpy(same).long())
    assert results["auc"] == pytest.approx(float(reference_auc), abs=1e-6)
    assert math.isnan(results["accuracy"])  # no fold pairs


def test_tar_is_nan_with_too_few_negatives_and_warns_once(caplog):
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, 3000)
    same = np.r_[np.zeros(2500, bool), np.ones(500, bool)]  # 2500 negatives: FAR 1e-3 yes, 1e-4 (10000) no
    metric = scored_pairs(scores, same, np.full(3000, -1))
    with caplog.at_level(logging.WARNING):
        results = as_floats(metric.compute())
        assert math.isnan(results["tar_far_1e-4"]) and not math.isnan(results["tar_far_1e-3"])
        assert "2500 negative pairs" in caplog.text and "10000 for FAR 0.0001" in caplog.text
        caplog.clear()
        metric.update(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0]))  # a new epoch's compute
        assert math.isnan(float(metric.compute()["tar_far_1e-4"]))
    assert "negative pairs" not in caplog.text


def brute_force_kfold(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> tuple[float, float]:
    """Each fold at the threshold, among all midpoints and ±inf, that is right most often on the other folds
    (the lowest of equals), by trying every one."""
    accuracies = []
    for k in np.unique(fold[fold >= 0]):
        train, test = (fold >= 0) & (fold != k), fold == k
        distinct = np.unique(scores[train])
        candidates = np.r_[-np.inf, (distinct[1:] + distinct[:-1]) / 2, np.inf]
        right = ((scores[train][None, :] > candidates[:, None]) == same[train][None, :]).sum(1)
        threshold = candidates[np.argmax(right)]
        accuracies.append(np.mean((scores[test] > threshold) == same[test]))
    return float(np.mean(accuracies)), float(np.std(accuracies))


@pytest.mark.parametrize("num_images", [1300, 25])  # 25 images: many pairs repeat, so scores tie across folds
def test_kfold_accuracy_matches_brute_force(num_images):
    rng = np.random.default_rng(num_images)
    pairs = 650
    first, second = rng.integers(0, num_images, pairs), rng.integers(0, num_images, pairs)
    same = rng.random(pairs) < 0.5
    fold = np.r_[np.repeat(np.arange(10), 60), np.full(50, -1)]  # 10 folds of 60 and 50 large-list pairs
    embeddings = torch.from_numpy(rng.normal(size=(num_images, 3))).float()
    metric = PairVerification(
        torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(fold), torch.from_numpy(same), num_images
    )
    metric.update(embeddings, torch.arange(num_images))
    results = as_floats(metric.compute())
    scores = metric.scores.numpy()
    unit = embeddings.double().numpy() / np.linalg.norm(embeddings.double().numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(scores, (unit[first] * unit[second]).sum(1), atol=1e-6)
    if num_images == 25:
        assert len(np.unique(scores)) < pairs / 2  # the tie case really has ties
    accuracy, std = brute_force_kfold(scores, same, fold)
    assert results["accuracy"] == pytest.approx(accuracy, abs=1e-7)
    assert results["accuracy_std"] == pytest.approx(std, abs=1e-7)
    assert std > 0
    accuracies, _ = kfold_accuracy(torch.from_numpy(scores), torch.from_numpy(same), torch.from_numpy(fold))
    assert len(accuracies) == 10


# --- missing images, DDP, devices -----------------------------------------------------------------


def test_pairs_of_images_never_seen_are_dropped_and_counted():
    embeddings = unit_vectors(HAND_ANGLES)
    metric = hand_metric()
    seen = [0, 1, 2, 3, 4, 5, 7]  # image 6 (150°) is missing: it is in pair (2, 6), a large-list positive
    metric.update(embeddings[seen], torch.tensor(seen))
    results = metric.compute()
    kept = [pair for pair in HAND_PAIRS if 6 not in pair[:2]]
    reference = PairVerification(**pair_tensors(kept), num_images=8, far_targets=(0.2, 0.1))
    reference.update(embeddings[seen], torch.tensor(seen))
    expected = reference.compute()
    assert float(results.pop("missing_pairs")) == 1 and float(expected.pop("missing_pairs")) == 0
    assert float(results["pairs"]) == len(kept) == 10
    assert_same_results(results, expected)
    assert metric.scores.tolist() == reference.scores.tolist()


def test_an_image_seen_twice_keeps_its_first_embedding():
    # Repeats carry the same embedding in practice; should they differ (another batch size, another kernel), the
    # first one seen is kept, whatever the backend's order of writes.
    embeddings = unit_vectors(HAND_ANGLES)
    metric, reference = hand_metric(), hand_metric()
    metric.update(embeddings, torch.arange(8))
    metric.update(unit_vectors([90]), torch.tensor([0]))  # image 0 again, turned by 90°
    reference.update(embeddings, torch.arange(8))
    assert metric.compute()["accuracy"] == reference.compute()["accuracy"]
    assert metric.scores.tolist() == reference.scores.tolist()


def test_compute_before_any_update_drops_every_pair():
    metric = hand_metric()
    with pytest.warns(UserWarning, match="before the ``update``"):
        results = as_floats(metric.compute())
    assert results["missing_pairs"] == len(HAND_PAIRS) and results["pairs"] == 0
    assert all(math.isnan(results[key]) for key in ("accuracy", "tar_far_2e-1", "auc"))


def random_verification(rng: np.random.Generator, pairs: int = 3000):
    """Pair lists over 400 images of 40 people (10 each, embeddings scattered around the person's centre): 20%
    pairs of one person, 10 folds of 100 pairs and a large list; and the images' embeddings."""
    person = np.repeat(np.arange(40), 10)
    positives = rng.random(pairs) < 0.2
    first = rng.integers(0, 400, pairs)
    # same person: another of its 10 images; different: an image of one of the 39 others
    second = np.where(
        positives,
        person[first] * 10 + (first % 10 + rng.integers(1, 10, pairs)) % 10,
        ((person[first] + rng.integers(1, 40, pairs)) % 40) * 10 + rng.integers(0, 10, pairs),
    )
    assert np.array_equal(person[first] == person[second], positives) and not np.any(first == second)
    embeddings = rng.normal(size=(40, 16))[person] + rng.normal(scale=1.2, size=(400, 16))
    pair_args = {
        "first": torch.from_numpy(first),
        "second": torch.from_numpy(second),
        "fold": torch.from_numpy(np.r_[np.repeat(np.arange(10), 100), np.full(pairs - 1000, -1)]),
        "same": torch.from_numpy(positives),
        "num_images": 400,
        "far_targets": (1e-2, 1e-3),
    }
    return pair_args, torch.from_numpy(embeddings).float()


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # the emulated gather sets states without update()
def test_ddp_halves_merge_to_the_single_process_result():
    pair_args, embeddings = random_verification(np.random.default_rng(11))
    whole = PairVerification(**pair_args)
    for start in range(0, 400, 64):
        whole.update(embeddings[start : start + 64], torch.arange(start, min(start + 64, 400)))
    expected = whole.compute()
    assert float(expected["missing_pairs"]) == 0 and 0.05 < float(expected["tar_far_1e-3"]) < 0.95

    # Two ranks: even and odd images, interleaved as DistributedSampler deals them; rank 1 also repeats image 0
    # (its padding), with the same embedding.
    rank_images = [torch.arange(0, 400, 2), torch.cat([torch.arange(1, 400, 2), torch.tensor([0])])]
    ranks = [PairVerification(**pair_args) for _ in rank_images]
    for metric, images in zip(ranks, rank_images, strict=True):
        for batch in images.split(50):
            metric.update(embeddings[batch], batch)
    ranks[0].merge_state(ranks[1])
    assert_same_results(ranks[0].compute(), expected)

    # What the "cat" reduction leaves after a real gather: one concatenated tensor per state.
    gathered = PairVerification(**pair_args)
    gathered.embeddings = torch.cat([embeddings[images] for images in rank_images])
    gathered.indices = torch.cat(rank_images)
    assert_same_results(gathered.compute(), expected)


def test_buffers_move_with_the_metric():
    pair_args, embeddings = random_verification(np.random.default_rng(5))
    embeddings = embeddings.double()  # both in float64: float32 scores may order near-ties differently
    expected = PairVerification(**pair_args)
    expected.update(embeddings, torch.arange(400))
    expected = expected.compute()

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    metric = PairVerification(**pair_args).to(device, torch.float64)
    assert metric.first.device.type == device.type and metric.same.device.type == device.type
    assert metric.first.dtype == torch.long and metric.same.dtype == torch.bool and metric.fold.dtype == torch.long
    metric.update(embeddings.to(device), torch.arange(400, device=device))
    results = metric.compute()
    assert all(value.device.type == device.type for value in results.values())
    assert_same_results({k: v.cpu() for k, v in results.items()}, expected)

    # set_dtype casts every buffer, integer ones too: the pairs must survive it.
    cast = PairVerification(**pair_args)
    cast.set_dtype(torch.float64)
    assert cast.first.dtype == torch.float64
    cast.update(embeddings, torch.arange(400))
    assert_same_results(cast.compute(), expected)
    assert "first" not in cast.state_dict()  # not part of a checkpoint


def test_forward_only_accumulates():
    metric = hand_metric()
    embeddings = unit_vectors(HAND_ANGLES)
    assert metric(embeddings[:4], torch.arange(4)) is None
    metric(embeddings[4:], torch.arange(4, 8))
    assert float(metric.compute()["pairs"]) == len(HAND_PAIRS)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one entry per pair"):
        PairVerification(torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([0]), torch.tensor([True]), 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        PairVerification(torch.tensor([0]), torch.tensor([3]), torch.tensor([0]), torch.tensor([True]), 3)
    metric = hand_metric()
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        metric.update(torch.zeros(3, 2), torch.arange(4))
    metric.update(torch.zeros(1, 2), torch.tensor([8]))
    with pytest.raises(ValueError, match=r"0\.\.7"):
        metric.compute()


# --- the ROC picture ------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_curve_against_counting(decimals):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=500)
    if decimals is not None:
        scores = np.round(scores, decimals)
    same = rng.random(500) < 0.3
    far, tar = roc_curve(scores, same)
    assert (far[0], tar[0]) == (0, 0) and (far[-1], tar[-1]) == (1, 1)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    thresholds = np.sort(np.unique(scores))[::-1]
    assert len(far) == len(thresholds) + 1
    np.testing.assert_allclose(far[1:], [np.mean(scores[~same] >= t) for t in thresholds])
    np.testing.assert_allclose(tar[1:], [np.mean(scores[same] >= t) for t in thresholds])


def test_roc_curve_agrees_with_the_metric_and_draws(tmp_path):
    pair_args, embeddings = random_verification(np.random.default_rng(13), pairs=6000)
    metric = PairVerification(**pair_args)
    metric.update(embeddings, torch.arange(400))
    results = metric.compute()
    far, tar = roc_curve(metric.scores.numpy(), metric.same_used.numpy())
    negatives = int((~metric.same_used).sum())
    assert negative_count(far) == negatives
    for target in (*pair_args["far_targets"], 1 / negatives, 0.99 / negatives):
        expected = tar_at_far(metric.scores, metric.same_used, target)
        assert tar_at(far, tar, target) == pytest.approx(expected, nan_ok=True)
    for target in pair_args["far_targets"]:
        assert tar_at(far, tar, target) == pytest.approx(float(results[far_key(target)]), abs=1e-6)
    assert math.isnan(tar_at(far, tar, 0.99 / negatives))

    other = roc_curve(-metric.scores.numpy(), metric.same_used.numpy())
    path = save_roc(tmp_path / "roc" / "roc.png", {"student": (far, tar), "teacher": other})
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="positive and negative"):
        roc_curve(np.zeros(3), np.ones(3, bool))
