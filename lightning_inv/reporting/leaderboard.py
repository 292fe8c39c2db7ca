"""Rank the models of several evaluation runs on one measure, with intervals: one CSV (the
shape of timm's results tables: one row per model, rank first) and one report page."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_inv.files import read_json, write_atomically, write_csv
from lightning_inv.reporting import html as h

# Measures where less is more invariant (ranked ascending by default); the rest descending.
LOWER_IS_BETTER = (
    "p_top1_change",
    "any_top1_change",
    "jagged_fraction",
    "jaggedness_mean",
    "mac",
    "mad",
    "lie_",
    "nonshiftability",
)
CSV_COLUMNS = [
    "rank",
    "model",
    "value",
    "ci95_low",
    "ci95_high",
    "weights",
    "data",
    "num_images",
    "run",
]


class LeaderboardError(ValueError):
    """A run folder or the measure cannot be ranked; the message names the fix."""


@dataclass(frozen=True)
class Entry:
    model: str
    value: float
    ci95: tuple[float, float] | None
    weights: str
    data: str
    num_images: int | None
    run: Path


def lower_is_better(measure: str) -> bool:
    name = measure.rpartition("/")[2]
    return any(name == m or (m.endswith("_") and name.startswith(m)) for m in LOWER_IS_BETTER)


def read_run(folder: Path) -> dict[str, Any]:
    """The complete results.json of an evaluation run folder."""
    path = folder / "results.json"
    if not path.is_file():
        hint = (
            f"it is a training run: its page is {folder / 'report.html'}; rank its checkpoint by "
            "evaluating it (python evaluate.py --models .../last.ckpt)"
            if (folder / "invariance_history.json").is_file()
            else "give the folder evaluate.py wrote (--output)"
        )
        raise LeaderboardError(f"{folder} has no results.json: {hint}")
    results = read_json(path)
    if not results.get("complete"):
        raise LeaderboardError(
            f"{path} says complete: false (an interrupted run): finish it with "
            f"python evaluate.py --resume {folder}"
        )
    return results


def entries(folders: list[Path], measure: str) -> list[Entry]:
    """Every model of every run that measured ``measure`` (``PROTOCOL/MEASURE``)."""
    protocol, _, name = measure.rpartition("/")
    if not protocol:
        raise LeaderboardError(f"--measure must be PROTOCOL/MEASURE, got {measure!r}")
    found, available = [], set()
    for folder in folders:
        results = read_run(folder)
        config = results.get("config", {})
        for model, rows in results["models"].items():
            available.update(
                f"{k}/{m}" for k, row in rows.items() for m in row if not m.endswith("_ci95")
            )
            value = rows.get(protocol, {}).get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            ci = rows[protocol].get(f"{name}_ci95")
            found.append(
                Entry(
                    model,
                    float(value),
                    (float(ci[0]), float(ci[1])) if ci else None,
                    str(results.get("weights", {}).get(model) or ""),
                    str(config.get("data", "")),
                    rows[protocol].get("num_images"),
                    folder,
                )
            )
    if not found:
        close = sorted(
            k for k in available if k.endswith("/" + name) or k.startswith(protocol + "/")
        )
        raise LeaderboardError(
            f"no run measured {measure}; measured there: {', '.join(close[:12]) or ', '.join(sorted(available)[:12])}"
        )
    return found


def ranked(found: list[Entry], ascending: bool) -> list[Entry]:
    return sorted(found, key=lambda e: (e.value if ascending else -e.value, e.model))


def write_leaderboard(
    found: list[Entry], measure: str, ascending: bool, output: Path
) -> tuple[Path, Path]:
    """``leaderboard.csv`` and ``leaderboard.html`` in ``output``; returns their paths."""
    output.mkdir(parents=True, exist_ok=True)
    order = ranked(found, ascending)
    rows = [
        [
            rank,
            e.model,
            e.value,
            e.ci95[0] if e.ci95 else math.nan,
            e.ci95[1] if e.ci95 else math.nan,
            e.weights,
            e.data,
            e.num_images,
            str(e.run),
        ]
        for rank, e in enumerate(order, 1)
    ]
    csv_path = write_csv(output / "leaderboard.csv", CSV_COLUMNS, rows)
    datasets = {(e.data, e.num_images) for e in order}
    warning = (
        '<p class="outside">These runs measured different data sets or image counts: their '
        "intervals are over different images, so the ranks compare unlike things.</p>"
        if len(datasets) > 1
        else ""
    )
    cells = [
        [
            h.Cell(str(rank), rank, "num"),
            h.text(e.model),
            h.with_interval(e.value, e.ci95),
            h.text(e.weights),
            h.text(e.data),
            h.Cell(str(e.num_images), e.num_images, "num"),
            h.text(e.run),
        ]
        for rank, e in enumerate(order, 1)
    ]
    intro = (
        f"<p>{len(order)} model(s) from {len({e.run for e in order})} run(s), ranked on "
        f"<b>{h.esc(measure)}</b> ({'lowest' if ascending else 'highest'} first), 95% bootstrap "
        f"intervals over each run's images.</p>{warning}"
    )
    table = h.table(["rank", "model", measure, "weights", "data", "images", "run"], cells)
    page = h.page(f"lightning-inv leaderboard: {measure}", [("Ranking", table)], intro)
    return csv_path, write_atomically(output / "leaderboard.html", page)
