"""Functional core of the invariance measures (docs/design.md, "Measures").

Inputs: ``logits`` [N, T, C] for N images with T views each (views in protocol order), ``target``
[N] class indices. ``p = softmax(logits)``; consecutive pairs are (t, t+1), t = 0..T-2.
Each ``*_sums`` function returns the (numerator, denominator) sums of one batch, so that the
``Metric`` classes only add them up (exact under DDP); the plain functions return the value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_logits(logits: Tensor, target: Tensor | None = None, min_views: int = 1) -> None:
    """Raise ``ValueError`` unless logits are [N, T, C] (T >= min_views) and target fits them."""
    if logits.dim() != 3:
        raise ValueError(
            f"logits must be [N, T, C] (images, views, classes); got {tuple(logits.shape)}"
        )
    if logits.shape[1] < min_views:
        raise ValueError(
            f"this measure needs at least {min_views} views per image; got {logits.shape[1]}"
        )
    if target is None:
        return
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must be [N] = [{logits.shape[0]}]; got {tuple(target.shape)}")
    if target.is_cuda:  # no host-device synchronisation per batch: a device-side assert
        torch._assert_async(((target >= 0) & (target < logits.shape[-1])).all())
    elif target.numel() and (target.min() < 0 or target.max() >= logits.shape[-1]):
        raise ValueError(
            f"target labels must be in [0, {logits.shape[-1]}); got {int(target.min())}..{int(target.max())}"
        )


def _in_top_k(logits: Tensor, target: Tensor, top_k: int) -> Tensor:
    """[N, T] bool: the label is among the top-k classes of the view."""
    check_logits(logits, target)
    k = min(top_k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == target[:, None, None]).any(-1)


def _top1_changes(logits: Tensor, pairs: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """[N, P] bool: the top-1 of view b differs from that of view a, for each pair (a, b) of
    ``pairs`` (default: consecutive views (t, t + 1), P = T - 1)."""
    check_logits(logits, min_views=2)
    top1 = logits.argmax(-1)
    if pairs is None:
        return top1[:, 1:] != top1[:, :-1]
    first, second = (torch.tensor(side, device=logits.device) for side in zip(*pairs, strict=True))
    return top1[:, first] != top1[:, second]


def _absolute_changes(logits: Tensor) -> Tensor:
    """[N, T-1]: |p_t[a_t] - p_{t+1}[a_t]| with a_t = argmax p_t (the MAC terms)."""
    check_logits(logits, min_views=2)
    probs = logits.float().softmax(-1)
    top1 = probs[:, :-1].argmax(-1, keepdim=True)
    return (probs[:, :-1].gather(-1, top1) - probs[:, 1:].gather(-1, top1)).abs()[..., 0]


def _absolute_differences(logits: Tensor, target: Tensor) -> Tensor:
    """[N, T-1]: |p_t[y] - p_{t+1}[y]| of the true class (the MAD terms)."""
    check_logits(logits, target, min_views=2)
    p_true = true_class_probability(logits, target)
    return (p_true[:, 1:] - p_true[:, :-1]).abs()


def _agreeing_pairs(logits: Tensor) -> Tensor:
    """[N]: view pairs (a < b) with the same top-1, sum_c n_c (n_c - 1) / 2 with n_c the views
    predicting class c."""
    check_logits(logits, min_views=2)
    n, _, c = logits.shape
    top1 = logits.argmax(-1)
    counts = torch.zeros(n, c, device=logits.device).scatter_add_(
        1, top1, torch.ones_like(top1, dtype=torch.float)
    )
    return (counts * (counts - 1) / 2).sum(-1)


def _sums(terms: Tensor) -> tuple[Tensor, Tensor]:
    return terms.sum().float(), torch.tensor(float(terms.numel()), device=terms.device)


def view_accuracy_sums(logits: Tensor, target: Tensor, top_k: int = 1) -> tuple[Tensor, Tensor]:
    """Correct (views with the label in the top-k) and total views."""
    return _sums(_in_top_k(logits, target, top_k))


def top1_change_sums(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Consecutive pairs whose top-1 differs, and the number of pairs."""
    return _sums(_top1_changes(logits))


def mean_absolute_change_sums(logits: Tensor) -> tuple[Tensor, Tensor]:
    """MAC: sum over pairs of |p_t[a_t] - p_{t+1}[a_t]|, a_t = argmax p_t; and the pair count."""
    return _sums(_absolute_changes(logits))


def mean_absolute_difference_sums(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """MAD (paper Fig. 7): sum over pairs of |p_t[y] - p_{t+1}[y]|; and the pair count."""
    return _sums(_absolute_differences(logits, target))


def jaggedness_counts(logits: Tensor, target: Tensor, top_k: int = 5) -> Tensor:
    """Per image [N]: pairs where [y in top-k(p_t)] != [y in top-k(p_{t+1})] (paper Sec. 2)."""
    check_logits(logits, target, min_views=2)
    k = min(top_k, logits.shape[-1])
    inside = (logits.topk(k, dim=-1).indices == target[:, None, None]).any(-1)  # [N, T]
    return (inside[:, 1:] != inside[:, :-1]).sum(-1)


def consistency_sums(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Over all pairs (a < b) of views of an image: pairs with the same top-1, and the pair count."""
    agree = _agreeing_pairs(logits)
    n, t = logits.shape[:2]
    return agree.sum(), torch.tensor(n * t * (t - 1) / 2, device=logits.device)


def flip_rates(logits: Tensor, distance: int = 1) -> Tensor:
    """ImageNet-P flip probability per sequence [N]: mean over j >= d of 1[top1_j != top1_{j-d}]."""
    check_logits(logits, min_views=distance + 1)
    top1 = logits.argmax(-1)
    return (top1[:, distance:] != top1[:, :-distance]).float().mean(-1)


def top5_distances(logits: Tensor) -> Tensor:
    """ImageNet-P top-5 distance per sequence [N], between consecutive frames.

    With sigma(i) the rank in frame j of the class ranked i in frame j-1 (ordinal ranks, ties by
    class index), d = sum_{i=1..5} |(i - 1) - min(sigma(i) - 1, 5)|; averaged over the frames
    (hendrycks/robustness ImageNet-P/test.py, ``dist`` with mode "top5").
    """
    check_logits(logits, min_views=2)
    order = torch.argsort(-logits, dim=-1, stable=True)  # classes by rank, per frame
    ranks = torch.argsort(order, dim=-1)  # 0-based rank of each class, per frame
    k = min(5, logits.shape[-1])
    previous_top = order[:, :-1, :k]  # [N, T-1, k]: classes ranked 0..k-1 in frame j-1
    sigma = ranks[:, 1:].gather(-1, previous_top)  # their 0-based ranks in frame j
    positions = torch.arange(k, device=logits.device)
    dist = (positions - sigma.clamp(max=5)).abs().sum(-1).float()  # [N, T-1]
    return dist.mean(-1)


def worst_of_k_correct(logits: Tensor, target: Tensor) -> Tensor:
    """Per image [N] bool: top-1 correct in every view."""
    check_logits(logits, target)
    return (logits.argmax(-1) == target[:, None]).all(-1)


def _ratio(sums: tuple[Tensor, Tensor]) -> Tensor:
    return sums[0] / sums[1]


def view_accuracy(logits: Tensor, target: Tensor, top_k: int = 1) -> Tensor:
    """Mean over images and views of 1[y in top-k(p_t)]."""
    return _ratio(view_accuracy_sums(logits, target, top_k))


def p_top1_change(logits: Tensor) -> Tensor:
    """P(top-1 change) between consecutive views."""
    return _ratio(top1_change_sums(logits))


def mean_absolute_change(logits: Tensor) -> Tensor:
    """MAC between consecutive views."""
    return _ratio(mean_absolute_change_sums(logits))


def mean_absolute_difference(logits: Tensor, target: Tensor) -> Tensor:
    """MAD of the true-class probability between consecutive views."""
    return _ratio(mean_absolute_difference_sums(logits, target))


def consistency(logits: Tensor) -> Tensor:
    """Fraction of view pairs of the same image that agree on the top-1."""
    return _ratio(consistency_sums(logits))


# -- per-image values ------------------------------------------------------------------------------
# Each returns [N] float: one value per image whose mean over images is the measure above (all
# images of a protocol have the same number of views, so the mean of per-image ratios equals the
# pooled ratio). They feed the bootstrap intervals (``lightning_inv.statistics``).


def view_accuracy_per_image(logits: Tensor, target: Tensor, top_k: int = 1) -> Tensor:
    """[N]: fraction of an image's views with the label in the top-k."""
    return _in_top_k(logits, target, top_k).float().mean(-1)


def top1_change_per_image(logits: Tensor, pairs: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """[N]: fraction of an image's view pairs (default: consecutive) whose top-1 differs."""
    return _top1_changes(logits, pairs).float().mean(-1)


def any_top1_change_per_image(
    logits: Tensor, pairs: Sequence[tuple[int, int]] | None = None
) -> Tensor:
    """[N]: 1 if the top-1 differs in at least one of an image's view pairs (default:
    consecutive), the worst case over the shifts (Shifman & Weiss 2024)."""
    return _top1_changes(logits, pairs).any(-1).float()


def first_views_accuracy_per_image(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: top-1 accuracy over views 0..T-2, the first view of each consecutive pair (how the
    authors' Table 1 script counts accuracy)."""
    check_logits(logits, target, min_views=2)
    return view_accuracy_per_image(logits[:, :-1], target, 1)


def true_class_probability_per_image(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: mean over an image's views of the softmax probability of the true class."""
    check_logits(logits, target)
    return true_class_probability(logits, target).mean(-1)


def mean_absolute_change_per_image(logits: Tensor) -> Tensor:
    """[N]: MAC of each image, mean over pairs of |p_t[a_t] - p_{t+1}[a_t]|."""
    return _absolute_changes(logits).mean(-1)


def mean_absolute_difference_per_image(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: MAD of each image, mean over pairs of |p_t[y] - p_{t+1}[y]|."""
    return _absolute_differences(logits, target).mean(-1)


def consistency_per_image(logits: Tensor, pairs: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """[N]: fraction of an image's view pairs that agree on the top-1: all pairs (a < b) by
    default, else the given ``pairs``."""
    if pairs is not None:
        return 1 - _top1_changes(logits, pairs).float().mean(-1)
    t = logits.shape[1]
    return _agreeing_pairs(logits) / (t * (t - 1) / 2)


def true_class_probability(logits: Tensor, target: Tensor) -> Tensor:
    """[N, T]: softmax probability of the true class in every view."""
    probs = logits.float().softmax(-1)
    return probs.gather(-1, target[:, None, None].expand(-1, probs.shape[1], 1))[..., 0]
