"""Figures: the data they draw is the data given (sorted, normalised, chosen as documented)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.protocols import RandomLocation, Scale, Translate
from lightning_inv.reporting import plots
from lightning_inv.reporting.figures import ModelRun, write_figures


def _rows(p_true: list[list[float]]) -> list[dict]:
    return [
        {"index": i, "image": f"img{i}", "label": 1, "p_true": p, "top1": [1] * len(p)}
        for i, p in enumerate(p_true)
    ]


def _result(protocol, p_true: list[list[float]], shift: dict | None = None) -> ProtocolResult:
    """A protocol's per-image results for figures: labels 1, top-1 always 1."""
    p = np.asarray(p_true, dtype=np.float32)
    n = len(p)
    return ProtocolResult(
        protocol,
        np.arange(n),
        np.ones(n, dtype=np.int64),
        {"accuracy": np.ones(n)},
        p,
        np.ones(p.shape, dtype=np.int32),
        shift or {},
    )


def test_most_jagged_picks_the_rows_that_move_most():
    rows = _rows([[0.5, 0.5, 0.5], [0.1, 0.9, 0.1], [0.4, 0.6, 0.4], [0.2, 0.2, 0.9]])
    assert plots.most_jagged(rows, count=2) == [1, 3]  # total changes 1.6 and 0.7


def test_heatmap_rows_are_sorted_by_their_sum():
    rows = {"m": _rows([[0.1, 0.2], [0.9, 0.8], [0.5, 0.5]])}
    figure = plots.plot_probability_heatmaps(rows, [0, 1], "shift (px)")
    shown = np.asarray(figure.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[0.9, 0.8], [0.5, 0.5], [0.1, 0.2]])
    assert figure.axes[0].get_xlabel() == "shift (px)"


def test_feature_sum_curves_are_divided_by_their_mean_and_pick_the_strongest_channels():
    sums = torch.tensor([[[1.0, 10.0, 0.1], [3.0, 30.0, 0.1]]])  # [N=1, T=2, K=3]
    figure = plots.plot_feature_sums(
        {"m": {"translate_mean": ([0, 1], sums)}}, {"translate_mean": "shift (px)"}, channels=2
    )
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["channel 1", "channel 0"]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.5, 1.5])


def test_write_figures_draws_the_applicable_paper_figures(tmp_path):
    torch.manual_seed(0)
    translate = Translate(canvas=32, fill="mean", max_shift=2)
    locations = [RandomLocation(canvas=32, scale=s, fill="mean") for s in (0.5, 0.7)]
    images = [
        {"image": torch.rand(3, 32, 32), "label": 1, "index": i, "name": f"img{i}"}
        for i in range(3)
    ]
    p = torch.rand(3, translate.num_views).tolist()
    results = {
        translate.key: {"accuracy": 0.5, "p_top1_change": 0.2, "jagged_fraction": 0.3},
        locations[0].key: {"accuracy": 0.4, "accuracy_ci95": [0.3, 0.5]},
        locations[1].key: {"accuracy": 0.6},
    }
    shift = {"a": np.zeros(3), "b": np.array([1.0, 2.0, 0.0])}
    run = ModelRun(
        "m",
        results,
        {translate.key: _result(translate, p, shift)},
        [translate, *locations],
        images,
        {translate.key: torch.rand(3, translate.num_views, 4)},
    )
    paths = write_figures([run], tmp_path, namer=str)
    assert set(paths) == {
        "fig1_probability_translate_mean",
        "fig2a_heatmap_translate_mean",
        "fig2b_sensitivity",
        "fig4_feature_sums",
        "fig6_accuracy_vs_scale",
        "fig10_nonshiftability",
    }
    for path in paths.values():
        assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("count", [1, 4])
def test_frames_show_the_protocol_views_at_their_positions(count):
    protocol = Translate(canvas=16, fill="black", scale=0.5, max_shift=3)
    image = torch.ones(3, 16, 16)
    views = protocol(image[None], torch.tensor([0]))[0]
    strip = plots.frames(protocol, views, count=count)
    assert len(strip) == count and strip[0][0] == -3
    np.testing.assert_array_equal(strip[0][1], views[0].permute(1, 2, 0).numpy())


def test_models_with_different_canvases_share_a_figure_with_their_own_x_values(tmp_path):
    """A scale sweep's x values (object side in px) depend on the canvas of each model."""
    runs = []
    for name, canvas in (("small", 32), ("large", 40)):
        scale = Scale(canvas=canvas, fill="mean")
        result = _result(scale, torch.rand(2, scale.num_views).tolist())
        sums = {scale.key: torch.rand(2, scale.num_views, 3)}
        images = [
            {"image": torch.rand(3, canvas, canvas), "label": 1, "index": i, "name": str(i)}
            for i in range(2)
        ]
        results = {scale.key: {"accuracy": 0.5, "p_top1_change": 0.1}}
        runs.append(ModelRun(name, results, {scale.key: result}, [scale], images, sums))
    paths = write_figures(runs, tmp_path, namer=str)
    assert "fig4_feature_sums" in paths
    assert runs[0].protocols[0].positions != runs[1].protocols[0].positions
