"""Face verification from embeddings: LFW's 10-fold accuracy and the true accept rate at a false accept rate (the
paper's Table 14 reports it at FAR 1e-4).

A pair of images is scored by the cosine similarity of their embeddings and accepted as the same person above a
threshold. The metric accumulates embeddings per image, not scores per pair: a pair's two images rarely meet in
one batch, and under DDP each process sees a different share of the images. The pair lists are fixed at
construction; ``compute()`` gathers every embedding, then scores all pairs at once.

The statistics are computed in float64 on the CPU (exact midpoints between float32 scores, and MPS has no float64):
sorting the scores of even a million pairs costs little next to a validation epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

log = logging.getLogger(__name__)

FAR_TARGETS = (1e-3, 1e-4)
_SCORE_CHUNK_ELEMENTS = 1 << 24  # pair embeddings gathered at once when scoring: 64 MiB of float32 per side


TAR_PREFIX = "tar_far_"


def far_key(far: float) -> str:
    """``tar_far_1e-4``: the name of the true accept rate at one false accept rate."""
    return f"{TAR_PREFIX}{far:.0e}".replace("e-0", "e-")


# Rates such as 1e-4 or 1/n are not exact in binary: a relative slack of 1e-9 lets 1e-4 × 10000 negatives allow
# exactly one false accept, whichever way the product rounds.
_RATE_SLACK = 1 + 1e-9


def allowed_false_accepts(far: float, negatives: int) -> int:
    """The most negative pairs that may be accepted at ``far``: ``floor(far × negatives)``."""
    return math.floor(far * negatives * _RATE_SLACK)


def negatives_needed(far: float) -> int:
    """The fewest negative pairs that allow one false accept at ``far``: below that the FAR cannot be measured."""
    return math.ceil(1 / (far * _RATE_SLACK))


def best_threshold(scores: Tensor, same: Tensor) -> float:
    """The threshold that classifies the most pairs right (same person when ``score > threshold``).

    Candidates are the midpoints between consecutive distinct scores, plus -inf (accept all) and +inf (reject
    all). Among equally good thresholds the lowest wins. One sort and a cumulative sum: O(P log P).
    """
    if scores.numel() == 0:
        return -math.inf
    sorted_scores, order = scores.double().sort()
    positive = same.bool()[order].long()
    # Cut i falls between the i lowest scores and the rest: those below are called different, those above same.
    positives_below = torch.cat([positive.new_zeros(1), positive.cumsum(0)])
    negatives_below = torch.arange(len(positives_below)) - positives_below
    correct = negatives_below + (positives_below[-1] - positives_below)
    # A cut between two equal scores is no threshold: it would split a tie.
    is_cut = torch.ones_like(correct, dtype=torch.bool)
    is_cut[1:-1] = sorted_scores[1:] > sorted_scores[:-1]
    best = int(torch.where(is_cut, correct, -1).argmax())  # the first maximum: the lowest threshold
    if best == 0:
        return -math.inf
    if best == len(sorted_scores):
        return math.inf
    return float((sorted_scores[best - 1] + sorted_scores[best]) / 2)


def kfold_accuracy(scores: Tensor, same: Tensor, fold: Tensor) -> tuple[Tensor, Tensor]:
    """LFW's protocol: each fold's accuracy at the best threshold of the other folds' pairs.

    Returns the per-fold accuracies and thresholds (float64), one per fold id >= 0 that has pairs, in id order.
    With a single fold there are no other folds: its threshold is its own best one, an optimistic accuracy.
    """
    scores, same, fold = scores.double(), same.bool(), fold.long()
    folds = torch.unique(fold[fold >= 0]).tolist()
    accuracies, thresholds = [], []
    for k in folds:
        test = fold == k
        train = test if len(folds) == 1 else (fold >= 0) & ~test
        threshold = best_threshold(scores[train], same[train])
        accuracies.append(((scores[test] > threshold) == same[test]).double().mean())
        thresholds.append(threshold)
    return torch.tensor(accuracies, dtype=torch.float64), torch.tensor(thresholds, dtype=torch.float64)


def tar_at_far(scores: Tensor, same: Tensor, far: float) -> float:
    """The share of positive pairs accepted at a threshold that accepts at most ``far`` of the negatives.

    With n negatives, k = floor(far × n) may be accepted: the threshold is the (k+1)-th highest negative score and
    a pair is accepted when its score is strictly above it, so ties with that negative are rejected and the
    measured FAR never exceeds ``far``. NaN when there are fewer than 1/far negatives (not even one false accept
    is allowed, so the rate cannot be measured) or no positives.
    """
    scores, same = scores.double(), same.bool()
    negatives, positives = scores[~same], scores[same]
    allowed = allowed_false_accepts(far, len(negatives))
    if allowed < 1 or len(positives) == 0:
        return math.nan
    if allowed >= len(negatives):
        return 1.0
    threshold = negatives.kthvalue(len(negatives) - allowed).values  # the (allowed + 1)-th highest
    return float((positives > threshold).double().mean())


def roc_auc(scores: Tensor, same: Tensor) -> float:
    """Area under the ROC curve: the chance that a positive pair outscores a negative one, ties counting half
    (the Mann-Whitney statistic, from average ranks). NaN without both positives and negatives."""
    scores, same = scores.double(), same.bool()
    positives = int(same.sum())
    negatives = len(same) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    sorted_scores, order = scores.sort()
    _, group, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    last_rank = counts.cumsum(0).double()
    average_rank = (last_rank - (counts - 1) / 2)[group]  # 1-based ranks, a tie sharing the mean of its ranks
    rank_sum = float(average_rank[same[order]].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


class PairVerification(Metric):
    """Verification of image pairs from their embeddings (LFW protocol), accumulated per image so it works under
    DDP.

    ``first``/``second`` (long ``[P]``) index each pair's images in the evaluation image list (0..num_images-1);
    ``fold`` (long ``[P]``) is the pair's LFW fold 0..K-1, or -1 for pairs outside the folds (a large pair list
    that only serves the TAR at FAR); ``same`` (bool ``[P]``) marks pairs of one person.

    ``compute()`` returns:

    - ``accuracy``, ``accuracy_std``: LFW's K-fold accuracy (:func:`kfold_accuracy`) over the fold pairs, its mean
      and population standard deviation over folds (``np.std``, as FaceNet and InsightFace print mean ± std; LFW's
      own standard error is ``accuracy_std / sqrt(K - 1)``). NaN without fold pairs; the std is NaN with one fold.
    - ``tar_far_1e-3``, ``tar_far_1e-4`` (:func:`far_key` of each of ``far_targets``): :func:`tar_at_far` over all
      usable pairs, folds and large list together; NaN when there are too few negatives, with a warning once per
      count of negatives (so the sanity check's few batches do not silence the real epochs).
    - ``auc``: :func:`roc_auc` over all usable pairs.
    - ``pairs``, ``missing_pairs``: pairs scored, and pairs dropped because an image never got an embedding (a
      missing or unreadable image the data skipped).

    It also keeps the last ``compute()``'s ``scores`` and ``same_used`` (1-D, CPU, the usable pairs, for the ROC
    picture) and ``fold_accuracies`` and ``fold_thresholds``. Calling the metric (``forward``) only accumulates:
    a batch's own value would mean nothing, as it holds few of the pairs.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        first: Tensor,
        second: Tensor,
        fold: Tensor,
        same: Tensor,
        num_images: int,
        far_targets: Sequence[float] = FAR_TARGETS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        first, second, fold = (torch.as_tensor(t).long().flatten() for t in (first, second, fold))
        same = torch.as_tensor(same).bool().flatten()
        if not len(first) == len(second) == len(fold) == len(same):
            raise ValueError(
                f"first, second, fold and same need one entry per pair, got {len(first)}, {len(second)}, "
                f"{len(fold)} and {len(same)}"
            )
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        ends = torch.cat([first, second])
        if len(ends) and (int(ends.min()) < 0 or int(ends.max()) >= num_images):
            raise ValueError(f"pair image indices must lie in 0..{num_images - 1}")
        if len(fold) and int(fold.min()) < -1:
            raise ValueError("fold must be a fold number >= 0, or -1 for pairs outside the folds")
        self.far_targets = tuple(float(far) for far in far_targets)
        if not all(0 < far <= 1 for far in self.far_targets):
            raise ValueError(f"far_targets must be rates in (0, 1], got {far_targets!r}")
        if len({far_key(far) for far in self.far_targets}) != len(self.far_targets):
            raise ValueError(f"far_targets {far_targets!r} share a name: {[far_key(f) for f in self.far_targets]}")
        self.num_images = int(num_images)
        self.num_folds = len(torch.unique(fold[fold >= 0]))
        # Buffers, not states: they move with .to(device) but stay out of reset(), syncing and the checkpoint.
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)
        self.register_buffer("fold", fold, persistent=False)
        self.register_buffer("same", same, persistent=False)
        self.add_state("embeddings", [], dist_reduce_fx="cat")
        self.add_state("indices", [], dist_reduce_fx="cat")
        self.scores: Tensor | None = None
        self.same_used: Tensor | None = None
        self.fold_accuracies: Tensor | None = None
        self.fold_thresholds: Tensor | None = None
        self._warned_negatives: set[int] = set()

    def forward(self, embeddings: Tensor, indices: Tensor) -> None:
        """Accumulate only (see the class docstring)."""
        self.update(embeddings, indices)

    def update(self, embeddings: Tensor, indices: Tensor) -> None:
        """Keep the ``[B, D]`` embeddings of images ``indices`` ``[B]``."""
        if embeddings.ndim != 2 or indices.shape != embeddings.shape[:1]:
            raise ValueError(
                f"expected [B, D] embeddings and [B] image indices, got {tuple(embeddings.shape)} and "
                f"{tuple(indices.shape)}"
            )
        self.embeddings.append(embeddings.detach())
        self.indices.append(indices.detach().long())

    def compute(self) -> dict[str, Tensor]:
        scores, usable = self._usable_pair_scores()
        same = self.same.bool().cpu()[usable]
        fold = self.fold.long().cpu()[usable]
        self.scores, self.same_used = scores, same
        self.fold_accuracies, self.fold_thresholds = kfold_accuracy(scores, same, fold)
        folds = len(self.fold_accuracies)
        results = {
            "accuracy": float(self.fold_accuracies.mean()) if folds else math.nan,
            "accuracy_std": float(self.fold_accuracies.std(correction=0)) if folds > 1 else math.nan,
        }
        negatives = int((~same).sum())
        unmeasurable = [far for far in self.far_targets if negatives < negatives_needed(far)]
        if unmeasurable and negatives not in self._warned_negatives:
            self._warned_negatives.add(negatives)  # once per count: the sanity check's few batches don't silence it
            needs = ", ".join(f"{negatives_needed(far)} for FAR {far:g}" for far in unmeasurable)
            log.warning(
                "TAR at FAR is NaN: the usable pairs hold %d negative pairs, and measuring the rate needs %s "
                "(add pairs of different people to the large pair list)",
                negatives,
                needs,
            )
        for far in self.far_targets:
            results[far_key(far)] = tar_at_far(scores, same, far)
        results["auc"] = roc_auc(scores, same)
        results["pairs"] = len(scores)
        results["missing_pairs"] = len(usable) - len(scores)
        return {name: torch.tensor(value, dtype=torch.float32, device=self.device) for name, value in results.items()}

    def _usable_pair_scores(self) -> tuple[Tensor, Tensor]:
        """Cosine scores (float64, CPU) of the pairs whose two images both have an embedding, and the mask of those
        pairs (CPU)."""
        if isinstance(self.embeddings, list) and not self.embeddings:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(len(self.first), dtype=torch.bool)
        embeddings = dim_zero_cat(self.embeddings)
        indices = dim_zero_cat(self.indices).long()  # long again: an empty rank's placeholder is float
        if len(indices) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings for {len(indices)} image indices")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.num_images):
            raise ValueError(
                f"image indices must lie in 0..{self.num_images - 1}, got {indices.min()}..{indices.max()}"
            )
        device = embeddings.device
        # An image seen twice (DistributedSampler pads with repeats): its first embedding, deterministically.
        indices = indices.to(device)
        sorted_indices, order = indices.sort(stable=True)
        first_seen = torch.ones_like(sorted_indices, dtype=torch.bool)
        first_seen[1:] = sorted_indices[1:] != sorted_indices[:-1]
        rows = order[first_seen]
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        table = embeddings.new_zeros((self.num_images, embeddings.shape[1]), dtype=dtype)
        table[indices[rows]] = F.normalize(embeddings[rows].to(dtype), dim=1)
        seen = torch.zeros(self.num_images, dtype=torch.bool, device=device)
        seen[indices[rows]] = True

        first, second = self.first.long().to(device), self.second.long().to(device)
        usable = seen[first] & seen[second]
        first, second = first[usable], second[usable]
        chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(1, table.shape[1]))
        scores = [
            (table[first[start : start + chunk]] * table[second[start : start + chunk]]).sum(1)
            for start in range(0, len(first), chunk)
        ]
        scores = torch.cat(scores) if scores else table.new_zeros(0)
        return scores.double().cpu(), usable.cpu()
