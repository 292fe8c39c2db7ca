"""The numbers of an evaluation as text and CSV: the printed tables and the per-image CSVs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightning_inv.data.datamodules import unwrap
from lightning_inv.data.images import imagefolder_items
from lightning_inv.data.samples import imagenet_description
from lightning_inv.files import write_csv
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.protocols.lie import LIE_MEASURE_KINDS, lie_measure
from lightning_inv.protocols.presets import Preset
from lightning_inv.protocols.tangents import GENERATORS

Namer = Callable[[int], str]
Runs = Sequence[tuple[str, Mapping[str, ProtocolResult]]]
SUMMARY_COLUMNS = ("accuracy", "p_top1_change", "mac", "jagged_fraction", "consistency")
LIE_COLUMNS = tuple(lie_measure(kind, g) for kind in LIE_MEASURE_KINDS for g in GENERATORS)
COMPARED = ("accuracy", "p_top1_change", "mac", "consistency", *LIE_COLUMNS)


def cell(row: Mapping[str, Any], measure: str) -> str:
    """``value [low,high]`` of one measure in a result row, ``-`` when the row has none."""
    if measure not in row:
        return "-"
    interval = row.get(f"{measure}_ci95")
    if measure.startswith("lie_"):  # squared derivatives span decades: 3 significant digits
        return f"{row[measure]:.3g}" + (
            f" [{interval[0]:.2g},{interval[1]:.2g}]" if interval else ""
        )
    return f"{row[measure]:.3f}" + (f" [{interval[0]:.2f},{interval[1]:.2f}]" if interval else "")


def _number(value: float, measure: str) -> str:
    return f"{value:+.3g}" if measure.startswith("lie_") else f"{value:+.3f}"


def print_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """Rows: protocol key, then model; cells: value [95% interval]."""
    width = max([len(m) for m in results] + [5])
    keys = list(dict.fromkeys(k for rows in results.values() for k in rows))
    header = f"{'protocol':30s} {'model':{width}s} " + " ".join(
        f"{c:>22s}" for c in SUMMARY_COLUMNS
    )
    print(header)
    print("-" * len(header))
    for key in keys:
        for model, rows in results.items():
            row = rows.get(key, {})
            if "accuracy" in row and not any(c in row for c in LIE_COLUMNS):
                cells = " ".join(f"{cell(row, c):>22s}" for c in SUMMARY_COLUMNS)
                print(f"{key:30s} {model:{width}s} {cells}")


def print_lie_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """The Lie derivative protocols: per protocol and model, each measure [95% interval]
    (squared derivatives; units in docs/results.md)."""
    keys = [
        k
        for k in dict.fromkeys(k for rows in results.values() for k in rows)
        if any(c in rows.get(k, {}) for rows in results.values() for c in LIE_COLUMNS)
    ]
    if not keys:
        return
    width = max([len(m) for m in results] + [5])
    for key in keys:
        columns = [
            c for c in LIE_COLUMNS if any(c in rows.get(key, {}) for rows in results.values())
        ]
        print(f"\n{key}: Lie derivatives, mean over images [95% interval]")
        for column in columns:
            cells = "  ".join(
                f"{model:>{width}s} {cell(rows.get(key, {}), column):24s}"
                for model, rows in results.items()
            )
            print(f"  {column:24s} {cells}")


def print_comparisons(comparisons: Mapping[str, Any]) -> None:
    """Paired differences whose interval excludes 0, per pair of models."""
    for pair, rows in comparisons.items():
        lines = [
            f"  {key:30s} {m:24s} {_number(d['difference'], m)} "
            f"[{_number(d['ci95'][0], m)}, {_number(d['ci95'][1], m)}]"
            for key, measures in rows.items()
            for m, d in measures.items()
            if m in COMPARED and (d["ci95"][0] > 0 or d["ci95"][1] < 0)
        ]
        which = " (accuracy, P(top-1 change), MAC, consistency, Lie derivatives)" if lines else ""
        print(f"\n{pair}: {len(lines)} differences with a 95% interval that excludes 0{which}")
        for line in lines:
            print(line)


def print_preset_summaries(presets: Sequence[Preset], summaries: Mapping[str, Any]) -> None:
    """Each preset's contrast in P(top-1 change), its published values beside ours and its
    rank correlations."""
    for preset in presets:
        for model, rows in summaries.get(f"{preset.name}_correlation", {}).items():
            print(f"\n{preset.name}, {model}: rank correlation over images (Spearman)")
            for name, c in rows.items():
                low, high = c["ci95"]
                print(f"  {name}: {c['spearman']:+.2f} [{low:+.2f}, {high:+.2f}]")
        contrast = preset.contrast
        if contrast is None:
            continue
        first, second = contrast.first, contrast.second
        difference = f"{first}_minus_{second}"
        for model, measures in summaries.get(f"{preset.name}_{contrast.name}", {}).items():
            if "p_top1_change" in measures:
                c = measures["p_top1_change"]
                low, high = c["ci95"]
                print(
                    f"\n{preset.name}, {model}: P(top-1 change) {first.title()} {c[first]:.3f} "
                    f"- {second.title()} {c[second]:.3f} = {c[difference]:+.3f} "
                    f"[{low:+.3f}, {high:+.3f}]"
                )
        for model, row in summaries.get(f"{preset.name}_published", {}).items():
            print(
                f"\n{preset.name}, {model} beside the published {row['paper_name']} "
                f"({row['weights']}; sizes combined as the mean over each protocol's sizes):"
            )
            for group in (first, second):
                for measure, value in row.get(group, {}).items():
                    low, high = value["ci95"]
                    verdict = "inside" if value["inside"] else "OUTSIDE"
                    print(
                        f"  {group:5s} {measure:14s} published {value['published']:.3f}  ours "
                        f"{value['ours']:.3f} [{low:.3f}, {high:.3f}]  {verdict} our interval"
                    )


def write_per_image_csv(path: Path, runs: Runs, namer: Namer) -> Path:
    """One row per image, view, protocol and model: true-class probability and top-1."""

    def rows() -> Iterator[list[Any]]:
        for model, results in runs:
            for key, result in results.items():
                if result.p_true is None or result.top1 is None:
                    continue
                positions = result.protocol.positions
                for i, index in enumerate(result.indices):
                    for view, position in enumerate(positions):
                        yield [
                            namer(int(index)),
                            int(result.labels[i]),
                            model,
                            key,
                            view,
                            position,
                            f"{result.p_true[i, view]:.6f}",
                            int(result.top1[i, view]),
                        ]

    header = ["image", "label", "model", "protocol", "view", "position", "p_true", "top1"]
    return write_csv(path, header, rows())


def write_measures_csv(path: Path, runs: Runs, namer: Namer) -> Path:
    """One row per image, protocol, model and measure: what the intervals resample."""

    def rows() -> Iterator[list[Any]]:
        for model, results in runs:
            for key, result in results.items():
                for measure, values in result.values.items():
                    for i, index in enumerate(result.indices):
                        yield [
                            namer(int(index)),
                            int(result.labels[i]),
                            model,
                            key,
                            measure,
                            f"{values[i]:.6g}",
                        ]

    return write_csv(path, ["image", "label", "model", "protocol", "measure", "value"], rows())


def label_namer(data: str, data_root: Path | None = None) -> Namer:
    """Class index -> a name for figure titles: ImageNet names, folder names or digits."""
    if data == "digits":
        return str
    if data == "imagefolder" and data_root is not None:
        _, classes = imagefolder_items(data_root)
        if len(classes) != 1000:  # folders not named by ImageNet synsets: labels are folder order
            return classes.__getitem__
    return imagenet_description


def image_namer(dataset: Dataset) -> Namer:
    """Data set index -> the image's name (relative path or sample name), without reading it."""
    base, _ = unwrap(dataset)
    items = getattr(base, "items", None)
    return (lambda i: items[i].name) if items is not None else str
