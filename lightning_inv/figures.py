"""The figures of one ``evaluate.py`` run: which plot applies to which protocols, and file names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lightning_inv import plots
from lightning_inv.data.samples import imagenet_description
from lightning_inv.evaluation import InvarianceEvaluator
from lightning_inv.protocols.views import Protocol, RandomLocation


@dataclass
class ModelRun:
    """What the figures need from one model's evaluation (kept after its evaluator is freed).

    ``last_layer_sums`` holds, per protocol key, the feature sums [N, T, K] of the deepest probed
    layer (the curves of the other layers are dropped to save memory).
    """

    name: str
    results: dict[str, Any]
    per_image: dict[str, list[dict[str, Any]]]
    protocols: list[Protocol]
    dataset: Dataset
    last_layer_sums: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_evaluator(
        cls, name: str, evaluator: InvarianceEvaluator, dataset: Dataset
    ) -> ModelRun:
        last = {}
        for key, layers in evaluator.curves.items():
            if layers:
                last[key] = list(layers.values())[-1]
        return cls(name, evaluator.results, evaluator.per_image, evaluator.protocols, dataset, last)

    def protocol(self, key: str) -> Protocol | None:
        return next((p for p in self.protocols if p.key == key), None)


def _item(dataset: Dataset, index: int) -> dict[str, Any]:
    """The item whose ``"index"`` is ``index`` (rows hold the underlying index of a ``Subset``)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset[index]


def write_figures(
    runs: Sequence[ModelRun],
    directory: Path,
    describe_label: Callable[[int], str] = imagenet_description,
) -> dict[str, Path]:
    """Draw every figure that the runs' protocols allow; returns ``{figure name: PNG path}``.

    ``describe_label`` names a class index in titles (ImageNet names by default).

    Models are compared within a figure where their protocols agree on the x axis (same key and
    positions); the first run's views illustrate Fig. 1.
    """
    if not runs:
        return {}
    first = runs[0]
    paths: dict[str, Path] = {}
    sequence_keys = [p.key for p in first.protocols if p.kind == "sequence"]
    for key in sequence_keys:
        protocol = first.protocol(key)
        assert protocol is not None
        comparable = [
            run
            for run in runs
            if (p := run.protocol(key)) is not None
            and p.positions == protocol.positions
            and len(run.per_image.get(key, [])) == len(first.per_image.get(key, []))
        ]
        rows_by_model = {run.name: run.per_image[key] for run in comparable}
        if not first.per_image.get(key):
            continue
        picks = plots.most_jagged(first.per_image[key], count=3)
        strips, titles = [], []
        for pick in picks:
            row = first.per_image[key][pick]
            sample = _item(first.dataset, row["index"])
            strips.append(plots.view_strip(protocol, sample["image"], row["index"]))
            titles.append(f"{row['image']} ({describe_label(row['label'])})")
        paths[f"fig1_probability_{key}"] = plots.save(
            plots.plot_probability_vs_shift(
                rows_by_model, protocol.positions, protocol.axis_label, picks, strips, titles
            ),
            directory / f"fig1_probability_{key}.png",
        )
        paths[f"fig2a_heatmap_{key}"] = plots.save(
            plots.plot_probability_heatmaps(rows_by_model, protocol.positions, protocol.axis_label),
            directory / f"fig2a_heatmap_{key}.png",
        )
    results_by_model = {run.name: run.results for run in runs}
    if sequence_keys or any("p_top1_change" in r for r in first.results.values()):
        paths["fig2b_sensitivity"] = plots.save(
            plots.plot_sensitivity_bars(results_by_model), directory / "fig2b_sensitivity.png"
        )
    fig4_keys = [k for k in sequence_keys if k.startswith(("translate", "scale"))]
    if fig4_keys and any(run.last_layer_sums for run in runs):
        paths["fig4_feature_sums"] = plots.save(
            plots.plot_feature_sums(
                {
                    run.name: {
                        k: (run.protocol(k).positions, sums)  # type: ignore[union-attr]
                        for k, sums in run.last_layer_sums.items()
                        if k in fig4_keys
                    }
                    for run in runs
                    if run.last_layer_sums
                },
                {k: first.protocol(k).axis_label for k in fig4_keys},  # type: ignore[union-attr]
            ),
            directory / "fig4_feature_sums.png",
        )
    accuracy_by_model = {
        run.name: {
            p.scale: run.results[p.key]["accuracy"]
            for p in run.protocols
            if isinstance(p, RandomLocation) and "accuracy" in run.results.get(p.key, {})
        }
        for run in runs
    }
    if any(len(v) > 1 for v in accuracy_by_model.values()):
        paths["fig6_accuracy_vs_scale"] = plots.save(
            plots.plot_accuracy_vs_scale(accuracy_by_model),
            directory / "fig6_accuracy_vs_scale.png",
        )
    for key in sequence_keys:
        rates = {
            run.name: run.results[key]["nonshiftability_rate"]
            for run in runs
            if "nonshiftability_rate" in run.results.get(key, {})
        }
        if rates:
            paths["fig10_nonshiftability"] = plots.save(
                plots.plot_nonshiftability(rates, key), directory / "fig10_nonshiftability.png"
            )
            break
    return paths
