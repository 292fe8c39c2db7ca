"""torchmetrics ``Metric`` classes built on the per-image functions of ``measures``.

Each class keeps two sums (the per-image values and the number of images), so its value is the
mean over images of the measure's per-image value, exact under DDP (summed over processes).
For views of one protocol (the same T for every image) this equals the pooled ratio over all
views or pairs. States are updated out of place (``s = s + x``): with ``ddp_spawn`` on CPU the
processes start from one pickled module whose tensors live in shared memory, and an in-place
``+=`` would add every process's counts into the same storage.

>>> import torch
>>> logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])
>>> TopOneChange()(logits)
tensor(0.5000)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_inv.measuring import measures


class PerImageMean(Metric):
    """The mean over images of ``per_image(logits [N, T, C], target [N]) -> [N]``.
    ``update(logits, target=None)`` (target only where the measure needs the labels)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, per_image: Callable[..., Tensor], needs_target: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_image = per_image
        self.needs_target = needs_target
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        if self.needs_target and target is None:
            raise ValueError(f"{type(self).__name__} needs the labels: update(logits, target)")
        values = self.per_image(logits, target) if self.needs_target else self.per_image(logits)
        self.total = self.total + values.double().sum()
        self.images = self.images + len(values)

    def compute(self) -> Tensor:
        return (self.total / self.images).float()


class ViewAccuracy(PerImageMean):
    """Top-k accuracy over the views (``measures.view_accuracy``)."""

    higher_is_better = True

    def __init__(self, top_k: int = 1, **kwargs) -> None:
        super().__init__(partial(measures.view_accuracy, top_k=top_k), True, **kwargs)


class TopOneChange(PerImageMean):
    """P(top-1 change) between consecutive views (``measures.top1_change``)."""

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.top1_change, False, **kwargs)


class MeanAbsoluteChange(PerImageMean):
    """MAC (``measures.mean_absolute_change``)."""

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.mean_absolute_change, False, **kwargs)


class MeanAbsoluteDifference(PerImageMean):
    """MAD of the true class, paper Fig. 7 (``measures.mean_absolute_difference``)."""

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.mean_absolute_difference, True, **kwargs)


class Consistency(PerImageMean):
    """Fraction of view pairs (all pairs) with the same top-1 (``measures.consistency``)."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.consistency, False, **kwargs)


class FlipRate(PerImageMean):
    """ImageNet-P flip probability FP_d (``measures.flip_rate``)."""

    higher_is_better = False

    def __init__(self, distance: int = 1, **kwargs) -> None:
        super().__init__(partial(measures.flip_rate, distance=distance), False, **kwargs)


class TopFiveDistance(PerImageMean):
    """ImageNet-P top-5 distance between consecutive frames (``measures.top5_distance``)."""

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.top5_distance, False, **kwargs)


class WorstOfKAccuracy(PerImageMean):
    """Fraction of images correct in every view (``measures.worst_of_k_accuracy``)."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(measures.worst_of_k_accuracy, True, **kwargs)


class Jaggedness(Metric):
    """Paper Sec. 2 on ``measures.jaggedness_counts``: ``compute()`` returns ``{"mean": mean
    count of top-5 transitions per image, "fraction": fraction of images with at least one}``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, top_k: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.top_k = top_k
        self.add_state("transitions", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("jagged", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        counts = measures.jaggedness_counts(logits, target, self.top_k)
        self.transitions = self.transitions + counts.sum().double()
        self.jagged = self.jagged + (counts > 0).sum().double()
        self.images = self.images + len(counts)

    def compute(self) -> dict[str, Tensor]:
        return {
            "mean": (self.transitions / self.images).float(),
            "fraction": (self.jagged / self.images).float(),
        }
