"""Every invariance measure, defined once: a per-image function (docs/design.md, "Measures").

Inputs: ``logits`` [N, T, C] for N images with T views each (views in protocol order), ``target``
[N] class indices. ``p = softmax(logits)``; consecutive pairs are (t, t+1), t = 0..T-2. Each
function returns one value per image [N]; a measure's number is the mean over images, so it gets
a bootstrap interval over images and exact DDP results. ``MEASURES`` names them for the
protocols (``Protocol.measures``); the torchmetrics classes of ``lightning_inv.measuring.metrics``
and the measuring core (``ProtocolMeasures``) are built on these functions.

>>> import torch
>>> logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])  # 1 image, 3 views, 2 classes
>>> top1_change(logits)  # pairs (0, 1) and (1, 2): the top-1 changes in one of two
tensor([0.5000])
>>> view_accuracy(logits, torch.tensor([1]))
tensor([0.6667])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_inv.device_path import accelerated
from lightning_inv.measuring.lie import log_probability_lie, softmax_lie
from lightning_inv.protocols.lie import lie_measure
from lightning_inv.protocols.tangents import GENERATORS

if TYPE_CHECKING:
    from lightning_inv.protocols import Protocol

Pairs = Sequence[tuple[int, int]]


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
    if accelerated(target):  # no host-device synchronisation per batch: a device-side assert
        torch._assert_async(((target >= 0) & (target < logits.shape[-1])).all())
    elif target.numel() and (target.min() < 0 or target.max() >= logits.shape[-1]):
        raise ValueError(
            f"target labels must be in [0, {logits.shape[-1]}); got {int(target.min())}..{int(target.max())}"
        )


def true_class_probability_per_view(logits: Tensor, target: Tensor) -> Tensor:
    """[N, T]: softmax probability of the true class in every view."""
    probs = logits.float().softmax(-1)
    return probs.gather(-1, target[:, None, None].expand(-1, probs.shape[1], 1))[..., 0]


def _in_top_k(logits: Tensor, target: Tensor, top_k: int) -> Tensor:
    """[N, T] bool: the label is among the top-k classes of the view."""
    check_logits(logits, target)
    k = min(top_k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == target[:, None, None]).any(-1)


def _top1_changes(logits: Tensor, pairs: Pairs | None = None) -> Tensor:
    """[N, P] bool: the top-1 of view b differs from that of view a, for each pair (a, b) of
    ``pairs`` (default: consecutive views (t, t + 1), P = T - 1)."""
    check_logits(logits, min_views=2)
    top1 = logits.argmax(-1)
    if pairs is None:
        return top1[:, 1:] != top1[:, :-1]
    first, second = (torch.tensor(side, device=logits.device) for side in zip(*pairs, strict=True))
    return top1[:, first] != top1[:, second]


# -- the measures, one per-image function each -----------------------------------------------------


def view_accuracy(logits: Tensor, target: Tensor, top_k: int = 1) -> Tensor:
    """[N]: fraction of an image's views with the label in the top-k."""
    return _in_top_k(logits, target, top_k).float().mean(-1)


def first_views_accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: top-1 accuracy over views 0..T-2, the first view of each consecutive pair (how the
    authors' Table 1 script counts accuracy)."""
    check_logits(logits, target, min_views=2)
    return view_accuracy(logits[:, :-1], target, 1)


def centred_accuracy(logits: Tensor, target: Tensor, zero: int) -> Tensor:
    """[N]: top-1 correct in view ``zero`` (the unshifted view of a sweep)."""
    return view_accuracy(logits[:, zero : zero + 1], target)


def true_class_probability(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: mean over an image's views of the softmax probability of the true class."""
    check_logits(logits, target)
    return true_class_probability_per_view(logits, target).mean(-1)


def top1_change(logits: Tensor, pairs: Pairs | None = None) -> Tensor:
    """[N]: fraction of an image's view pairs (default: consecutive) whose top-1 differs
    (AW Table 1's P(top-1 change))."""
    return _top1_changes(logits, pairs).float().mean(-1)


def any_top1_change(logits: Tensor, pairs: Pairs | None = None) -> Tensor:
    """[N]: 1 if the top-1 differs in at least one of an image's view pairs (default:
    consecutive), the worst case over the shifts (Shifman & Weiss 2024)."""
    return _top1_changes(logits, pairs).any(-1).float()


def mean_absolute_change(logits: Tensor) -> Tensor:
    """[N]: MAC, mean over consecutive pairs of |p_t[a_t] - p_{t+1}[a_t]|, a_t = argmax p_t
    (AW Table 1)."""
    check_logits(logits, min_views=2)
    probs = logits.float().softmax(-1)
    top1 = probs[:, :-1].argmax(-1, keepdim=True)
    changes = (probs[:, :-1].gather(-1, top1) - probs[:, 1:].gather(-1, top1)).abs()[..., 0]
    return changes.mean(-1)


def mean_absolute_difference(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: MAD, mean over consecutive pairs of |p_t[y] - p_{t+1}[y]| (AW Fig. 7)."""
    check_logits(logits, target, min_views=2)
    p_true = true_class_probability_per_view(logits, target)
    return (p_true[:, 1:] - p_true[:, :-1]).abs().mean(-1)


def jaggedness_counts(logits: Tensor, target: Tensor, top_k: int = 5) -> Tensor:
    """[N]: consecutive pairs where [y in top-k(p_t)] != [y in top-k(p_{t+1})] (AW Sec. 2)."""
    check_logits(logits, target, min_views=2)
    inside = _in_top_k(logits, target, top_k)
    return (inside[:, 1:] != inside[:, :-1]).sum(-1)


def consistency(logits: Tensor, pairs: Pairs | None = None) -> Tensor:
    """[N]: fraction of an image's view pairs that agree on the top-1: all pairs (a < b) by
    default (sum over classes c of n_c (n_c - 1) / 2, n_c the views predicting c), else the
    given ``pairs`` (Zhang 2019, Chaman & Dokmanic 2021)."""
    if pairs is not None:
        return 1 - _top1_changes(logits, pairs).float().mean(-1)
    check_logits(logits, min_views=2)
    n, t, c = logits.shape
    top1 = logits.argmax(-1)
    counts = torch.zeros(n, c, device=logits.device).scatter_add_(
        1, top1, torch.ones_like(top1, dtype=torch.float)
    )
    return (counts * (counts - 1) / 2).sum(-1) / (t * (t - 1) / 2)


def flip_rate(logits: Tensor, distance: int = 1) -> Tensor:
    """[N]: ImageNet-P flip probability, mean over j >= d of 1[top1_j != top1_{j-d}]."""
    check_logits(logits, min_views=distance + 1)
    top1 = logits.argmax(-1)
    return (top1[:, distance:] != top1[:, :-distance]).float().mean(-1)


def top5_distance(logits: Tensor) -> Tensor:
    """[N]: ImageNet-P top-5 distance between consecutive frames, mean over the frames.

    With sigma(i) the rank in frame j of the class ranked i in frame j-1 (ordinal ranks, ties by
    class index), d = sum_{i=1..5} |(i - 1) - min(sigma(i) - 1, 5)| (hendrycks/robustness
    ImageNet-P/test.py, ``dist`` with mode "top5").
    """
    check_logits(logits, min_views=2)
    order = torch.argsort(-logits, dim=-1, stable=True)  # classes by rank, per frame
    ranks = torch.argsort(order, dim=-1)  # 0-based rank of each class, per frame
    k = min(5, logits.shape[-1])
    previous_top = order[:, :-1, :k]  # [N, T-1, k]: classes ranked 0..k-1 in frame j-1
    sigma = ranks[:, 1:].gather(-1, previous_top)  # their 0-based ranks in frame j
    positions = torch.arange(k, device=logits.device)
    return (positions - sigma.clamp(max=5)).abs().sum(-1).float().mean(-1)


def worst_of_k_accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """[N]: 1 if the top-1 is correct in every view (Engstrom et al. 2019)."""
    check_logits(logits, target)
    return (logits.argmax(-1) == target[:, None]).all(-1).float()


# -- the registry the protocols name ---------------------------------------------------------------

PerImage = Callable[[Tensor, Tensor, "Protocol"], Tensor]


@dataclass(frozen=True)
class Measure:
    """One measure: its per-image value ``per_image(logits [N, T, C], target [N], protocol) ->
    [N]`` (the reported number is the mean over images), and its direction. A ``differential``
    measure reads the rows of a differential protocol instead of its views: [N, 1 + K, C], the
    logits of the image, then the logit derivatives along the protocol's K ``generators``."""

    name: str
    per_image: PerImage
    higher_is_better: bool
    description: str
    differential: bool = False


def compared_pairs(protocol: Protocol) -> Pairs | None:
    """The pairs an unordered protocol draws (pair_shift, circular); None for a sweep, whose
    pair measures take consecutive views (consistency: all pairs of views)."""
    return None if protocol.ordered else protocol.pairs


def _zero(protocol: Protocol) -> int:
    return list(protocol.positions).index(0)


def _lie_measures() -> list[Measure]:
    """``lie_softmax_<g>`` and ``lie_logp_<g>`` for every generator g (rows of a
    ``LieDerivative`` protocol; units of ``GENERATORS``, squared)."""

    def softmax_row(generator: str) -> PerImage:
        def value(rows: Tensor, target: Tensor, protocol: Protocol) -> Tensor:
            position = protocol.generators.index(generator)  # type: ignore[attr-defined]
            return softmax_lie(rows, position + 1)[:, position]

        return value

    def logp_row(generator: str) -> PerImage:
        def value(rows: Tensor, target: Tensor, protocol: Protocol) -> Tensor:
            position = protocol.generators.index(generator)  # type: ignore[attr-defined]
            return log_probability_lie(rows, target, position + 1)[:, position]

        return value

    measures = []
    for generator, unit in GENERATORS.items():
        measures.append(
            Measure(
                lie_measure("softmax", generator),
                softmax_row(generator),
                False,
                f"||d softmax / dt||^2, t: {unit} (local equivariance error, Gruver et al. 2023)",
                differential=True,
            )
        )
        measures.append(
            Measure(
                lie_measure("logp", generator),
                logp_row(generator),
                False,
                f"(d log p(true class) / dt)^2, t: {unit}",
                differential=True,
            )
        )
    return measures


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(
            "accuracy",
            lambda x, y, p: view_accuracy(x, y, 1),
            True,
            "top-1 accuracy over the views",
        ),
        Measure(
            "top5_accuracy",
            lambda x, y, p: view_accuracy(x, y, 5),
            True,
            "top-5 accuracy over the views",
        ),
        Measure(
            "centred_accuracy",
            lambda x, y, p: centred_accuracy(x, y, _zero(p)),
            True,
            "top-1 accuracy of the unshifted view",
        ),
        Measure(
            "accuracy_first_views",
            lambda x, y, p: first_views_accuracy(x, y),
            True,
            "top-1 accuracy of the first view of each pair (the authors' Table 1 script)",
        ),
        Measure(
            "true_class_probability",
            lambda x, y, p: true_class_probability(x, y),
            True,
            "mean softmax probability of the true class over the views",
        ),
        Measure(
            "p_top1_change",
            lambda x, y, p: top1_change(x, compared_pairs(p)),
            False,
            "P(top-1 changes between the compared views: consecutive ones of a sweep)",
        ),
        Measure(
            "any_top1_change",
            lambda x, y, p: any_top1_change(x, compared_pairs(p)),
            False,
            "fraction of images whose top-1 changes in at least one compared pair "
            "(worst case over the shifts, Shifman & Weiss 2024)",
        ),
        Measure(
            "mac",
            lambda x, y, p: mean_absolute_change(x),
            False,
            "mean |p_t[a_t] - p_t+1[a_t]|, a_t the top-1 of view t",
        ),
        Measure(
            "mad",
            lambda x, y, p: mean_absolute_difference(x, y),
            False,
            "mean |p_t[y] - p_t+1[y]| of the true class (paper Fig. 7)",
        ),
        Measure(
            "jaggedness_mean",
            lambda x, y, p: jaggedness_counts(x, y).float(),
            False,
            "true class entering/leaving the top-5 between consecutive views, per image",
        ),
        Measure(
            "jagged_fraction",
            lambda x, y, p: (jaggedness_counts(x, y) > 0).float(),
            False,
            "fraction of images with at least one such transition (paper: ~30%)",
        ),
        Measure(
            "consistency",
            lambda x, y, p: consistency(x, compared_pairs(p)),
            True,
            "fraction of view pairs with the same top-1 (all pairs of a sweep; the drawn "
            "pairs of pair_shift and circular)",
        ),
        Measure(
            "flip_rate",
            lambda x, y, p: flip_rate(x),
            False,
            "ImageNet-P flip probability between consecutive frames",
        ),
        Measure(
            "top5_distance",
            lambda x, y, p: top5_distance(x),
            False,
            "ImageNet-P top-5 distance between consecutive frames",
        ),
        Measure(
            "worst_of_k_accuracy",
            lambda x, y, p: worst_of_k_accuracy(x, y),
            True,
            "fraction of images correct in every view",
        ),
        *_lie_measures(),
    )
}
