"""Everything an evaluation writes besides results.json: the CSVs, skipped.csv, the printed
tables, the figures and the loggers."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_inv.files import write_csv
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.protocols.presets import Preset
from lightning_inv.reporting.comparison_table import comparison_rows
from lightning_inv.reporting.figures import ModelRun, write_figures
from lightning_inv.reporting.loggers import (
    create_logger,
    log_comparison_to_wandb,
    log_evaluation,
    log_evaluation_to_wandb,
    per_image_summary,
)
from lightning_inv.reporting.report import evaluation_report
from lightning_inv.reporting.tables import (
    Namer,
    print_comparisons,
    print_lie_table,
    print_preset_summaries,
    print_table,
    write_measures_csv,
    write_per_image_csv,
)


def write_outputs(
    output: Path,
    results: Mapping[str, Any],
    per_image: Mapping[str, Mapping[str, ProtocolResult]],
    runs: Sequence[ModelRun],
    namers: tuple[Namer, Namer],
    presets: Sequence[Preset] = (),
    logger_kind: str = "none",
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> str | None:
    """CSVs, skipped.csv, the tables, figures and loggers (before results.json says complete);
    the first output that could not be written, as a message, or None. ``namers``: (image
    index -> name, class index -> name); ``configs``: what each model's logger run records."""
    namer, class_namer = namers
    write_per_image_csv(output / "per_image.csv", list(per_image.items()), namer)
    write_measures_csv(output / "per_image_measures.csv", list(per_image.items()), namer)
    skipped = [
        [model, s["image"], s["reason"]] for model, rows in results["skipped"].items() for s in rows
    ]
    if skipped:
        write_csv(output / "skipped.csv", ["model", "image", "reason"], skipped)
        print(
            f"skipped {len(skipped)} unreadable images (names and reasons in skipped.csv)",
            file=sys.stderr,
        )
    print()
    print_table(results["models"])
    print_lie_table(results["models"])
    print_comparisons(results["comparisons"])
    print_preset_summaries(presets, results)
    figures: dict[str, Path] = {}
    if runs:
        try:
            figures = write_figures(runs, output / "figures", class_namer, presets)
        except Exception as err:  # the numbers are written; the figures are not
            return f"the figures could not be drawn ({type(err).__name__}: {err})"
    try:
        report = evaluation_report(output, results, runs, namers, figures)
    except Exception as err:  # the numbers and figures are written; the page is not
        return f"report.html could not be written ({type(err).__name__}: {err})"
    print(f"\nresults: {output / 'results.json'}\nper-image: {output / 'per_image.csv'}")
    if figures:
        print(f"figures: {output / 'figures'} ({len(figures)} PNG)")
    print(f"report: {report} (open it in a browser)")
    rows = [r for spec, res in per_image.items() for r in per_image_summary(spec, res, namer)]
    if logger_kind == "wandb":  # a group, one run per model
        log_evaluation_to_wandb(
            output, output.name, results["models"], configs or {}, rows, figures
        )
        log_comparison_to_wandb(output, output.name, *comparison_rows(runs, *namers))
    elif logger_kind == "csv":
        logger = create_logger("csv", output, output.name, {})
        log_evaluation(logger, results["models"], rows, figures)
    return None
