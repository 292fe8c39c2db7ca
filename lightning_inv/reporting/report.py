"""``report.html`` of an evaluation: every number with its interval, the paired comparisons, the
published values beside ours, the figures, and the images that make the paper's point (the
top-1 flipping under a one-step change, and every image's P(true class) over each sweep).
Self-contained: figures and thumbnails are inlined (docs/design.md, "Report pages")."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_inv.files import write_atomically
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.reporting import html as h
from lightning_inv.reporting.figures import ModelRun

Namer = Callable[[int], str]
GALLERY_SIZE = 6  # flips shown per protocol and model
CURVE_ROWS = 200  # images per ordered protocol in the per-image curves (the page stays small)
COUNTS = ("num_images", "num_views", "skipped_images")  # shown beside the protocol, not as rows


def measure_rows(models: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[h.Cell]]]:
    """One row per protocol x measure, one column per model: value [95% interval]."""
    names = list(models)
    keys = list(dict.fromkeys(k for row in models.values() for k in row))
    rows = []
    for key in keys:
        measures = [
            m
            for m in dict.fromkeys(m for model in names for m in models[model].get(key, {}))
            if not m.endswith("_ci95")
            and m not in COUNTS
            and any(_number(models[model].get(key, {}).get(m)) is not None for model in names)
        ]
        first = next((models[n][key] for n in names if key in models[n]), {})
        size = f"{first.get('num_images', '?')} images x {first.get('num_views', '?')} views"
        for measure in measures:
            cells = [h.Cell(f'{h.esc(key)} <span class="ci">{size}</span>', key), h.text(measure)]
            for model in names:
                row = models[model].get(key, {})
                cells.append(h.with_interval(_number(row.get(measure)), row.get(f"{measure}_ci95")))
            rows.append(cells)
    return ["protocol", "measure", *names], rows


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a plain number (not a flag, list or table)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def comparison_rows(comparisons: Mapping[str, Any]) -> list[list[h.Cell]]:
    """Paired differences; rows whose interval excludes 0 are marked ``notable``."""
    rows = []
    for pair, protocols in comparisons.items():
        for key, measures in protocols.items():
            for measure, value in measures.items():
                low, high = value.get("ci95") or (None, None)  # null: undefined (strict JSON)
                notable = low is not None and high is not None and (low > 0 or high < 0)
                rows.append(
                    [
                        h.text(pair),
                        h.text(key),
                        h.text(measure),
                        h.with_interval(
                            value["difference"], value["ci95"], "notable" if notable else ""
                        ),
                        h.Cell("excludes 0" if notable else "", int(notable)),
                    ]
                )
    return rows


def published_section(results: Mapping[str, Any]) -> str:
    """Every ``<preset>_published`` row: published value, ours with its interval, inside?"""
    rows = []
    for name, models in results.items():
        if not name.endswith("_published"):
            continue
        for model, row in models.items():
            for group, measures in row.items():
                if not isinstance(measures, dict):
                    continue
                for measure, value in measures.items():
                    if not isinstance(value, dict) or "inside" not in value:
                        continue
                    inside = bool(value["inside"])
                    rows.append(
                        [
                            h.text(name.removesuffix("_published")),
                            h.text(f"{model} ({row.get('weights', '')})"),
                            h.text(group),
                            h.text(measure),
                            h.Cell(h.number(value["published"]), value["published"], "num"),
                            h.with_interval(
                                value["ours"], value["ci95"], "" if inside else "outside"
                            ),
                            h.text("inside" if inside else "OUTSIDE"),
                        ]
                    )
    if not rows:
        return ""
    headers = [
        "preset",
        "model (weights)",
        "group",
        "measure",
        "published",
        "ours",
        "published value",
    ]
    return h.table(headers, rows)


def top1_changes(result: ProtocolResult) -> np.ndarray:
    """[N]: per image, the number of neighbouring views whose top-1 differ (needs kept views)."""
    top1 = result.top1
    assert top1 is not None, "the per-view top-1 was not kept"
    return (top1[:, 1:] != top1[:, :-1]).sum(axis=1)


def flips(result: ProtocolResult) -> list[tuple[int, int, float]]:
    """``(row, view, drop)`` for each image whose top-1 changes between two neighbouring views
    of a sweep: the neighbouring pair with the largest change of P(true class), largest first."""
    if result.top1 is None or result.p_true is None or result.top1.shape[1] < 2:
        return []
    changed = result.top1[:, 1:] != result.top1[:, :-1]  # [N, T - 1]
    jumps = np.abs(np.diff(result.p_true.astype(np.float64), axis=1))
    jumps = np.where(changed, jumps, -1.0)  # a pair without a flip is never chosen
    views = jumps.argmax(axis=1)
    rows = np.flatnonzero(changed.any(axis=1))
    found = [(int(r), int(views[r]), float(jumps[r, views[r]])) for r in rows]
    return sorted(found, key=lambda item: -item[2])


def gallery(runs: Sequence[ModelRun], namer: Namer, class_namer: Namer) -> str:
    """Per ordered protocol and model: the images whose top-1 flips between neighbouring views,
    the two views side by side with their top-1 and P(true class)."""
    parts = []
    for run in runs:
        for protocol in run.protocols:
            result = run.per_image.get(protocol.key)
            if not protocol.ordered or result is None:
                continue
            found = flips(result)
            if not found:
                continue
            items = []
            for row, view, _ in found[:GALLERY_SIZE]:
                index, label = int(result.indices[row]), int(result.labels[row])
                views = run.views(protocol.key, index)
                captions = []
                for t in (view, view + 1):
                    top1, p = int(result.top1[row, t]), float(result.p_true[row, t])  # type: ignore[index]
                    mark = "" if top1 == label else " (wrong)"
                    captions.append(
                        f"<div>{h.thumbnail(views[t])}<br>{h.esc(protocol.axis_label)} "
                        f"{protocol.positions[t]:g}: {h.esc(class_namer(top1))}{mark}<br>"
                        f"P(true) {p:.3f}</div>"
                    )
                items.append(
                    f'<figure class="pair"><div style="display:flex;gap:6px">{"".join(captions)}</div>'
                    f"<figcaption>{h.esc(namer(index))}, true class {h.esc(class_namer(label))}"
                    "</figcaption></figure>"
                )
            parts.append(
                f"<h3>{h.esc(protocol.key)}, {h.esc(run.name)}: {len(found)} of "
                f"{result.num_images} images flip between neighbouring views</h3>{''.join(items)}"
            )
    return "".join(parts)


def curves(runs: Sequence[ModelRun], namer: Namer, class_namer: Namer) -> str:
    """Per ordered protocol: one row per image with P(true class) over its views for every model
    and its count of top-1 changes; sortable, the ``CURVE_ROWS`` images with most changes."""
    parts = []
    first = runs[0] if runs else None
    for protocol in first.protocols if first else []:
        key = protocol.key
        results = {
            run.name: run.per_image[key]
            for run in runs
            if key in run.per_image and run.per_image[key].p_true is not None
        }
        if not protocol.ordered or not results:
            continue
        reference = next(iter(results.values()))
        results = {  # models measured on other images cannot share a row
            name: result
            for name, result in results.items()
            if np.array_equal(result.indices, reference.indices)
        }
        changes = np.stack([top1_changes(result) for result in results.values()])  # [M, N]
        order = np.argsort(-changes.max(axis=0), kind="stable")  # most jagged first
        shown = order[:CURVE_ROWS]
        rows = []
        for position, row in enumerate(shown):
            series = {
                name: (protocol.positions, result.p_true[row].tolist())  # type: ignore[index]
                for name, result in results.items()
            }
            chart = h.line_chart(series, protocol.axis_label, (0.0, 1.0), 300, 110, position == 0)
            rows.append(
                [
                    h.text(namer(int(reference.indices[row]))),
                    h.text(class_namer(int(reference.labels[row]))),
                    *[h.Cell(str(c), int(c), "num") for c in changes[:, row]],
                    h.Cell(chart),
                ]
            )
        headers = [
            "image",
            "true class",
            *[f"top-1 changes, {n}" for n in results],
            "P(true class)",
        ]
        left_out = len(order) - len(shown)
        note = (
            f'<p class="muted">The {CURVE_ROWS} images with the most top-1 changes; {left_out} '
            "more in per_image.csv.</p>"
            if left_out
            else ""
        )
        parts.append(f"<h3>{h.esc(key)}</h3>{note}" + h.table(headers, rows))
    return "".join(parts)


def evaluation_report(
    output: Path,
    results: Mapping[str, Any],
    runs: Sequence[ModelRun],
    namers: tuple[Namer, Namer],
    figures: Mapping[str, Path],
) -> Path:
    """Write ``output / "report.html"`` (atomically) and return its path."""
    namer, class_namer = namers
    config = results.get("config", {})
    headers, rows = measure_rows(results["models"])
    comparisons = comparison_rows(results.get("comparisons", {}))
    skipped = [
        [h.text(m), h.text(s["image"]), h.text(s["reason"])]
        for m, r in results.get("skipped", {}).items()
        for s in r
    ]
    figure_html = "".join(
        h.file_image(path, name) for name, path in figures.items() if path.is_file()
    )
    intro = (
        f"<p>{len(results['models'])} model(s) on <b>{h.esc(config.get('data', '?'))}</b>"
        f" ({h.esc(config.get('num_images') or 'all')} images); 95% bootstrap intervals over images"
        f" ({h.esc(config.get('resamples', '?'))} resamples). Click a column heading to sort.</p>"
    )
    sections = [
        ("Measures", h.table(headers, rows)),
        (
            "Paired comparisons",
            h.table(["models", "protocol", "measure", "difference [95%]", "interval"], comparisons)
            if comparisons
            else "",
        ),
        ("Published values beside ours", published_section(results)),
        ("Figures", figure_html),
        ("Top-1 flips under a one-step change", gallery(runs, namer, class_namer)),
        ("P(true class) over each sweep, per image", curves(runs, namer, class_namer)),
        ("Skipped images", h.table(["model", "image", "reason"], skipped) if skipped else ""),
        ("Configuration", f"<pre>{h.esc(_yaml_like(config))}</pre>"),
    ]
    document = h.page(f"lightning-inv evaluation: {output.name}", sections, intro)
    return write_atomically(output / "report.html", document)


def _yaml_like(config: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in config.items())
