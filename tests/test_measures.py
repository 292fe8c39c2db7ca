"""Invariance metrics: hand-computed cases, theory-guaranteed properties, the ImageNet-P reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from lightning_inv.measuring import metrics as M
from lightning_inv.measuring.engine import view_logits
from lightning_inv.protocols import Circular


def _log(probs: list[list[list[float]]]) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` [N, T, C]."""
    return torch.tensor(probs).log()


# One image, three views, three classes; label y = 0.
#   view 0: p = (0.6, 0.3, 0.1)  top-1 = 0
#   view 1: p = (0.2, 0.7, 0.1)  top-1 = 1
#   view 2: p = (0.5, 0.4, 0.1)  top-1 = 0
HAND = _log([[[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]])
LABEL = torch.tensor([0])


def test_hand_case_values():
    # accuracy: views 0 and 2 correct -> 2/3
    assert M.ViewAccuracy()(HAND, LABEL).item() == pytest.approx(2 / 3)
    # top-1 changes on pairs (0,1) and (1,2) -> 2/2
    assert M.TopOneChange()(HAND).item() == pytest.approx(1.0)
    # MAC: |0.6 - 0.2| (a_0 = 0) and |0.7 - 0.4| (a_1 = 1) -> (0.4 + 0.3) / 2
    assert M.MeanAbsoluteChange()(HAND).item() == pytest.approx(0.35, abs=1e-6)
    # MAD on the true class: |0.2 - 0.6| and |0.5 - 0.2| -> (0.4 + 0.3) / 2
    assert M.MeanAbsoluteDifference()(HAND, LABEL).item() == pytest.approx(0.35, abs=1e-6)
    # consistency over all pairs: (0,2) agree, (0,1) and (1,2) do not -> 1/3
    assert M.Consistency()(HAND).item() == pytest.approx(1 / 3)
    # worst-of-k: view 1 is wrong -> 0
    assert M.WorstOfKAccuracy()(HAND, LABEL).item() == 0.0
    # flip rate d=1 equals the top-1 change here: 1; d=2 compares views 0 and 2: 0
    assert M.FlipRate()(HAND).item() == 1.0
    assert M.FlipRate(distance=2)(HAND).item() == 0.0


def test_jaggedness_hand_case_counts_top5_transitions():
    # Seven classes so that top-5 membership can change; label 6.
    # view 0: class 6 ranked 1st; view 1: last (out of top-5); view 2: 2nd (in again); view 3: in.
    logits = torch.tensor(
        [
            [
                [0, 1, 2, 3, 4, 5, 9],
                [1, 2, 3, 4, 5, 6, -1],
                [0, 1, 2, 3, 4, 9, 8],
                [0, 1, 2, 3, 4, 5, 9],
            ]
        ],
        dtype=torch.float,
    )
    second = torch.tensor([[[0, 1, 2, 3, 4, 5, 9]] * 4], dtype=torch.float)  # never changes
    metric = M.Jaggedness()
    metric.update(logits, torch.tensor([6]))  # transitions: in->out, out->in, in->in = 2
    metric.update(second, torch.tensor([6]))  # 0 transitions
    result = metric.compute()
    assert result["mean"].item() == pytest.approx(1.0)  # (2 + 0) / 2 images
    assert result["fraction"].item() == pytest.approx(0.5)  # one of two images is jagged


def _reference_t5d(logits: np.ndarray) -> float:
    """hendrycks/robustness ImageNet-P/test.py, ranking_dist with mode 'top5', difficulty 1."""
    num_classes = logits.shape[-1]
    cum_sum_top5 = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (num_classes - 1 - 5)))
    result = 0.0
    for video in logits:
        ranks = [rankdata(-frame, method="ordinal") for frame in video]
        per_video = []
        perm1 = ranks[0]
        perm1_inv = np.argsort(perm1)
        for perm2 in ranks[1:]:
            sigma = perm2[perm1_inv]
            per_video.append(np.sum(np.abs(cum_sum_top5[:5] - cum_sum_top5[sigma - 1][:5])))
            perm1, perm1_inv = perm2, np.argsort(perm2)
        result += np.mean(per_video) / len(logits)
    return float(result)


def test_top5_distance_hand_made_rankings():
    # Frame 0 ranks classes 0 > 1 > 2 > ... ; frame 1 swaps classes 0 and 1 (ranks 1 and 2):
    # sigma = (2, 1, 3, 4, 5) -> |0-1| + |1-0| + 0 + 0 + 0 = 2.
    base = torch.arange(10, 0, -1, dtype=torch.float)
    swapped = base.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    # Frame 2 pushes class 2 (rank 3 in frame 1) to the bottom: ranks of frame-1's top 5 in
    # frame 2 are (1, 2, 10, 3, 4) -> 0 + 0 + |2 - 5| + |3 - 2| + |4 - 3| = 5.
    dropped = swapped.clone()
    dropped[2] = -5
    logits = torch.stack([base, swapped, dropped])[None]
    assert M.TopFiveDistance()(logits).item() == pytest.approx((2 + 5) / 2)
    assert _reference_t5d(logits.numpy()) == pytest.approx((2 + 5) / 2)


def test_top5_distance_matches_the_imagenet_p_reference_on_random_sequences():
    torch.manual_seed(0)
    logits = torch.randn(6, 9, 20)
    logits[:, 1:] = logits[:, :1] + 0.5 * torch.randn(6, 8, 20)  # related frames
    assert M.TopFiveDistance()(logits).item() == pytest.approx(
        _reference_t5d(logits.numpy()), rel=1e-6
    )


def test_a_model_that_ignores_its_input_is_perfectly_stable():
    constant = torch.randn(1, 1, 10).expand(5, 8, 10)
    target = torch.randint(0, 10, (5,))
    assert M.TopOneChange()(constant).item() == 0
    assert M.MeanAbsoluteChange()(constant).item() == 0
    assert M.Consistency()(constant).item() == 1
    assert M.Jaggedness()(constant, target)["fraction"].item() == 0
    assert M.TopFiveDistance()(constant).item() == 0


def test_states_are_sums_and_do_not_grow():
    metric = M.TopOneChange()
    for _ in range(5):
        metric.update(torch.randn(4, 6, 10))
    assert all(getattr(metric, name).numel() == 1 for name in metric._defaults)
    assert metric.full_state_update is False and metric.higher_is_better is False


def test_bad_shapes_and_labels_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        M.TopOneChange().update(torch.randn(4, 10))
    with pytest.raises(ValueError, match="at least 2 views"):
        M.TopOneChange().update(torch.randn(4, 1, 10))
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 10\)"):
        M.ViewAccuracy().update(torch.randn(4, 3, 10), torch.tensor([0, 1, 2, 10]))


class _CircularNet(nn.Module):
    """Convs with circular padding, then global average pooling; optional unblurred stride 2."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, padding_mode="circular", bias=False),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=stride, padding=1, padding_mode="circular", bias=False),
            nn.ReLU(),
            nn.Conv2d(16, 10, 3, padding=1, padding_mode="circular", bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(-2, -1))


def test_stride_free_circular_network_is_exactly_invariant_under_circular_shifts():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    logits, _ = view_logits(
        _CircularNet(stride=1).eval(), Circular(canvas=32, max_shift=16), images
    )
    torch.testing.assert_close(logits[:, 0], logits[:, 1], atol=1e-5, rtol=1e-5)
    assert M.Consistency()(logits).item() == 1.0


def test_the_same_network_with_an_unblurred_stride_is_not_invariant():
    torch.manual_seed(0)
    # Sparse dots: a sharp "part" that a stride-2 grid sees at even positions but not at odd ones.
    images = (torch.rand(64, 3, 32, 32) > 0.98).float()
    logits, _ = view_logits(
        _CircularNet(stride=2).eval(), Circular(canvas=32, max_shift=16), images
    )
    assert (logits[:, 0] - logits[:, 1]).abs().max() > 1e-3
    assert M.Consistency()(logits).item() < 1.0
