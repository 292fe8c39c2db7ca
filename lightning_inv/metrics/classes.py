"""torchmetrics ``Metric`` classes over the functional core: sum states only, exact under DDP.

States are updated out of place (``s = s + x``): with ``ddp_spawn`` on CPU the processes start
from one pickled module whose tensors live in shared memory, and an in-place ``+=`` would add
every process's counts into the same storage.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_inv.metrics import functional as F


class _RatioMetric(Metric):
    """A ratio of two summed states; subclasses say how one batch contributes."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("numerator", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("denominator", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _add(self, sums: tuple[Tensor, Tensor]) -> None:
        self.numerator = self.numerator + sums[0].double()
        self.denominator = self.denominator + sums[1].double()

    def compute(self) -> Tensor:
        return (self.numerator / self.denominator).float()


class ViewAccuracy(_RatioMetric):
    """Top-k accuracy over all images and views. ``update(logits [N, T, C], target [N])``."""

    higher_is_better = True

    def __init__(self, top_k: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.top_k = top_k

    def update(self, logits: Tensor, target: Tensor) -> None:
        self._add(F.view_accuracy_sums(logits, target, self.top_k))


class TopOneChange(_RatioMetric):
    """P(top-1 change) between consecutive views. ``update(logits [N, T, C], target=None)``."""

    higher_is_better = False

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        self._add(F.top1_change_sums(logits))


class MeanAbsoluteChange(_RatioMetric):
    """MAC: mean |p_t[a_t] - p_{t+1}[a_t]|, a_t the top-1 of view t."""

    higher_is_better = False

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        self._add(F.mean_absolute_change_sums(logits))


class MeanAbsoluteDifference(_RatioMetric):
    """MAD (paper Fig. 7): mean |p_t[y] - p_{t+1}[y]| of the true class."""

    higher_is_better = False

    def update(self, logits: Tensor, target: Tensor) -> None:
        self._add(F.mean_absolute_difference_sums(logits, target))


class Consistency(_RatioMetric):
    """Fraction of pairs of views of the same image (all pairs) that agree on the top-1."""

    higher_is_better = True

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        self._add(F.consistency_sums(logits))


class FlipRate(_RatioMetric):
    """ImageNet-P flip probability FP_d, averaged over sequences."""

    higher_is_better = False

    def __init__(self, distance: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.distance = distance

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        rates = F.flip_rates(logits, self.distance)
        self._add((rates.sum(), torch.tensor(float(len(rates)), device=rates.device)))


class TopFiveDistance(_RatioMetric):
    """ImageNet-P top-5 distance between consecutive frames, averaged over sequences."""

    higher_is_better = False

    def update(self, logits: Tensor, target: Tensor | None = None) -> None:
        dist = F.top5_distances(logits)
        self._add((dist.sum(), torch.tensor(float(len(dist)), device=dist.device)))


class WorstOfKAccuracy(_RatioMetric):
    """Fraction of images whose top-1 is correct in every view (Engstrom et al. 2019)."""

    higher_is_better = True

    def update(self, logits: Tensor, target: Tensor) -> None:
        correct = F.worst_of_k_correct(logits, target)
        self._add((correct.sum().float(), torch.tensor(float(len(correct)), device=correct.device)))


class Jaggedness(Metric):
    """Paper Sec. 2: per image, the number of 1-step transitions of the true class into or out of
    the top-5. ``compute()`` returns ``{"mean": mean count per image, "fraction": fraction of
    images with at least one transition}``."""

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
        counts = F.jaggedness_counts(logits, target, self.top_k)
        self.transitions = self.transitions + counts.sum().double()
        self.jagged = self.jagged + (counts > 0).sum().double()
        self.images = self.images + len(counts)

    def compute(self) -> dict[str, Tensor]:
        return {
            "mean": (self.transitions / self.images).float(),
            "fraction": (self.jagged / self.images).float(),
        }
