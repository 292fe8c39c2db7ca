"""The figures of one ``evaluate.py`` run: which paper figure applies to which protocols.

One function per figure (``fig1_and_fig2a``, ``fig2b``, ``fig4``, ``fig6``, ``fig10``, and the
figures presets own: ``table1_sizes``, ``offset_curves``, ``lie_layers``); ``write_figures`` draws every one the run's protocols allow. The drawing itself is
``lightning_inv.reporting.plots``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_inv.data.datamodules import unwrap
from lightning_inv.data.samples import imagenet_description
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.measuring.evaluator import InvarianceEvaluator
from lightning_inv.measuring.statistics import bootstrap_interval
from lightning_inv.protocols import Crop, Embed, Protocol, RandomLocation
from lightning_inv.protocols.presets import Preset
from lightning_inv.reporting import plots

Namer = Callable[[int], str]


@dataclass
class ModelRun:
    """What the figures need from one model's evaluation (kept after its evaluator is freed).

    ``last_layer_sums`` holds, per protocol key, the feature sums [n, T, K] of the deepest probed
    layer for the first images (Fig. 4).
    """

    name: str
    results: dict[str, Any]
    per_image: dict[str, ProtocolResult]
    protocols: list[Protocol]
    dataset: Dataset
    last_layer_sums: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_evaluator(
        cls, name: str, evaluator: InvarianceEvaluator, dataset: Dataset
    ) -> ModelRun:
        return cls(
            name,
            evaluator.results,
            evaluator.per_image,
            evaluator.protocols,
            dataset,
            dict(evaluator.curves),
        )

    def protocol(self, key: str) -> Protocol | None:
        return next((p for p in self.protocols if p.key == key), None)

    def views(self, key: str, index: int) -> torch.Tensor:
        """The views [T, 3, S, S] of data set item ``index`` under protocol ``key``, made again
        (from the original photo where the protocol cuts from it)."""
        protocol = self.protocol(key)
        if protocol is None:
            raise KeyError(f"{self.name} has no protocol {key}")
        sample = _item(self.dataset, index)
        original = sample.get("original")
        return protocol(
            sample["image"][None], torch.tensor([index]), None if original is None else [original]
        )[0]


def _item(dataset: Dataset, index: int) -> dict[str, Any]:
    """The item whose ``"index"`` is ``index`` (rows hold the underlying index of a ``Subset``)."""
    base, _ = unwrap(dataset)
    return base[index]


def fig1_and_fig2a(runs: Sequence[ModelRun], directory: Path, namer: Namer) -> dict[str, Path]:
    """Fig. 1 (P(true class) against the sweep for the 3 images that move most, with views) and
    Fig. 2A (heat maps) for every ordered protocol of the first run; models whose protocol has
    the same positions and images share the figure."""
    first, paths = runs[0], {}
    for protocol in first.protocols:
        result = first.per_image.get(protocol.key)
        if not protocol.sweep or result is None or result.p_true is None or not result.num_images:
            continue
        key = protocol.key
        p_by_model = {
            run.name: run.per_image[key].p_true
            for run in runs
            if (p := run.protocol(key)) is not None
            and p.positions == protocol.positions
            and key in run.per_image
            and run.per_image[key].p_true is not None
            and list(run.per_image[key].indices) == list(result.indices)
        }
        picks = plots.most_jagged(result.p_true, count=3)
        strips, titles = [], []
        for pick in picks:
            sample = _item(first.dataset, int(result.indices[pick]))
            views = first.views(key, int(result.indices[pick]))
            strips.append(plots.frames(protocol, views))
            titles.append(f"{sample['name']} ({namer(int(result.labels[pick]))})")
        paths[f"fig1_probability_{key}"] = plots.save(
            plots.plot_probability_vs_shift(
                p_by_model, protocol.positions, protocol.axis_label, picks, strips, titles
            ),
            directory / f"fig1_probability_{key}.png",
        )
        paths[f"fig2a_heatmap_{key}"] = plots.save(
            plots.plot_probability_heatmaps(p_by_model, protocol.positions, protocol.axis_label),
            directory / f"fig2a_heatmap_{key}.png",
        )
    return paths


def fig2b(runs: Sequence[ModelRun], directory: Path) -> dict[str, Path]:
    """Fig. 2B: P(top-1 change) and jagged fraction per protocol and model, with intervals."""
    results = {run.name: run.results for run in runs}
    if not any("p_top1_change" in row for run in runs for row in run.results.values()):
        return {}
    figure = plots.plot_sensitivity_bars(results)
    return {"fig2b_sensitivity": plots.save(figure, directory / "fig2b_sensitivity.png")}


def fig4(runs: Sequence[ModelRun], directory: Path) -> dict[str, Path]:
    """Fig. 4: last-layer feature sums against the probed sweeps."""
    keys = [k for run in runs for k in run.last_layer_sums]
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    sums = {
        run.name: {k: (run.protocol(k).positions, s) for k, s in run.last_layer_sums.items()}  # type: ignore[union-attr]
        for run in runs
        if run.last_layer_sums
    }
    labels = {k: next(r.protocol(k) for r in runs if r.protocol(k)).axis_label for k in keys}  # type: ignore[union-attr]
    figure = plots.plot_feature_sums(sums, labels)
    return {"fig4_feature_sums": plots.save(figure, directory / "fig4_feature_sums.png")}


def fig6(runs: Sequence[ModelRun], directory: Path) -> dict[str, Path]:
    """Fig. 6: accuracy against object scale at random locations (with intervals)."""
    accuracy, intervals = {}, {}
    for run in runs:
        rows = {
            p.scale: run.results[p.key]
            for p in run.protocols
            if isinstance(p, RandomLocation) and "accuracy" in run.results.get(p.key, {})
        }
        accuracy[run.name] = {s: row["accuracy"] for s, row in rows.items()}
        intervals[run.name] = {
            s: row["accuracy_ci95"] for s, row in rows.items() if "accuracy_ci95" in row
        }
    if not any(len(v) > 1 for v in accuracy.values()):
        return {}
    figure = plots.plot_accuracy_vs_scale(accuracy, intervals_by_model=intervals)
    return {"fig6_accuracy_vs_scale": plots.save(figure, directory / "fig6_accuracy_vs_scale.png")}


def offset_curves(
    runs: Sequence[ModelRun], directory: Path, keys: Sequence[str]
) -> dict[str, Path]:
    """Per-offset accuracy and P(true class), mean over images with a 95% band per offset, for
    the protocols ``keys`` (antialiased-cnns' diagonal evaluation, ``validate_diagonal``)."""
    paths = {}
    for key in keys:
        curves, protocol = {}, None
        for run in runs:
            result = run.per_image.get(key)
            if result is None or result.p_true is None or not result.num_images:
                continue
            protocol = protocol or run.protocol(key)
            correct = (result.top1 == result.labels[:, None]).astype(np.float64)
            curves[run.name] = {
                "P(true class)": _mean_with_band(result.p_true.astype(np.float64)),
                "top-1 accuracy": _mean_with_band(correct),
            }
        if curves and protocol is not None:
            title = f"Accuracy and P(true class) per offset, {key}"
            figure = plots.plot_offset_curves(
                curves, protocol.positions, protocol.axis_label, title
            )
            paths[key] = plots.save(figure, directory / f"{key}.png")
    return paths


def _mean_with_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per view (column) of [N, T]: mean over images and its 95% bootstrap interval."""
    bands = np.array([bootstrap_interval(column) for column in values.T])
    return values.mean(axis=0), bands[:, 0], bands[:, 1]


def fig10(runs: Sequence[ModelRun], directory: Path) -> dict[str, Path]:
    """Fig. 10: per-image nonshiftability against depth (convolutions before the layer), one
    panel per model."""
    for protocol in runs[0].protocols:
        per_model = {
            run.name: run.per_image[protocol.key].nonshiftability
            for run in runs
            if protocol.key in run.per_image and run.per_image[protocol.key].nonshiftability
        }
        if per_model:
            depths = {
                run.name: run.per_image[protocol.key].depths
                for run in runs
                if protocol.key in run.per_image
            }
            figure = plots.plot_nonshiftability(per_model, protocol.key, depths_by_model=depths)
            return {
                "fig10_nonshiftability": plots.save(figure, directory / "fig10_nonshiftability.png")
            }
    return {}


def table1_sizes(runs: Sequence[ModelRun], directory: Path, keys: Sequence[str]) -> dict[str, Path]:
    """The authors' Table 1 plot: measures against the size s of the protocols ``keys`` (a crop
    of area s, or the photo at 1/s of the canvas)."""
    rows: dict[str, dict[float, dict[str, Any]]] = {}
    for run in runs:
        for key in keys:
            p = run.protocol(key)
            size = p.area if isinstance(p, Crop) else p.zoom_out if isinstance(p, Embed) else None
            if size is not None and key in run.results:
                rows.setdefault(run.name, {})[float(size)] = run.results[key]
    if not rows:
        return {}
    return {"table1_sizes": plots.save(plots.plot_table1(rows), directory / "table1_sizes.png")}


def lie_layers(runs: Sequence[ModelRun], directory: Path, keys: Sequence[str]) -> dict[str, Path]:
    """Per-layer contributions to the Lie derivative of the differential protocol ``keys[0]``
    beside the nonshiftability of the sweep ``keys[1]`` on the same images, per model."""
    lie_key, sweep_key = keys
    rows = {}
    for run in runs:
        row = run.results.get(lie_key, {})
        if "lie_layers" not in row:
            continue
        sweep = run.per_image.get(sweep_key)
        shifts = sweep.nonshiftability if sweep is not None else {}
        rows[run.name] = (row, shifts, sweep.depths if sweep is not None else {})
    if not rows:
        return {}
    generator = next(iter(rows.values()))[0].get("lie_layers_generator") or "translate_x"
    figure = plots.plot_lie_layers(rows, generator, sweep_key)
    return {"lie_layers": plots.save(figure, directory / "lie_layers.png")}


PresetFigure = Callable[[Sequence[ModelRun], Path, Sequence[str]], dict[str, Path]]
PRESET_FIGURES: dict[str, PresetFigure] = {
    "table1_sizes": table1_sizes,
    "offset_curves": offset_curves,
    "lie_layers": lie_layers,
}


def write_figures(
    runs: Sequence[ModelRun],
    directory: Path,
    namer: Namer = imagenet_description,
    presets: Sequence[Preset] = (),
) -> dict[str, Path]:
    """Draw every figure the runs' protocols allow (Fig. 1, 2A, 2B, 4, 6, 10) and the figures
    the ``presets`` own; returns ``{figure name: PNG path}``. ``namer`` names a class index in
    titles (ImageNet names by default)."""
    if not runs:
        return {}
    paths = fig1_and_fig2a(runs, directory, namer)
    for draw in (fig2b, fig4, fig6, fig10):
        paths.update(draw(runs, directory))
    for preset in presets:
        for name, keys in preset.figures:
            paths.update(PRESET_FIGURES[name](runs, directory, keys))
    return paths
