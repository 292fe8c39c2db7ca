"""The typicality study: does invariance learned from augmentation hold outside the augmented range?

    python -m lightning_inv.studies.typicality runs/typicality [--output docs/figures/typicality.png]

Reads the ``invariance_history.json`` of every run folder ``<config>-s<seed>`` under the given
folder (``configs/typicality_{centred,top,full}.yaml`` trained with seeds 0, 1, 2, the loop in docs/results.md)
and prints, for the last epoch, the mean and spread over seeds of each configuration on each
callback set (``seen``: top half, ``unseen``: bottom half, ``thin`` / ``thick``: top half with
eroded / dilated digits): random-location accuracy (mean over the set's object scales),
translation-sweep accuracy, P(top-1 change) and jaggedness. Writes the numbers per seed as JSON
beside the figure (per-epoch curves, ``study_plots.plot_typicality``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

MEASURES = {  # column -> how to read it from one history record of one set
    "location accuracy": lambda r, s: _mean(
        [v for k, v in r.items() if re.fullmatch(rf"{s}_random_location_\w+_s[\d.]+/accuracy", k)]
    ),
    "sweep accuracy": lambda r, s: _sweep(r, s, "accuracy"),
    "P(top-1 change)": lambda r, s: _sweep(r, s, "p_top1_change"),
    "jaggedness": lambda r, s: _sweep(r, s, "jaggedness_mean"),
}
RUN_NAME = re.compile(r"(?P<config>.+)-s(?P<seed>\d+)$")


def _mean(values: list[float]) -> float:
    if not values:
        raise KeyError("no random-location numbers for this set in the history")
    return sum(values) / len(values)


def _sweep(record: dict[str, Any], name: str, measure: str) -> float:
    keys = [k for k in record if re.fullmatch(rf"{name}_translate_\w+/{measure}", k)]
    if len(keys) != 1:
        raise KeyError(f"expected one {name} translation sweep with {measure}, found {keys}")
    return float(record[keys[0]])


def set_names(record: dict[str, Any]) -> list[str]:
    """The callback sets of a history record, in order of appearance."""
    names = [k.split("_translate_")[0] for k in record if "_translate_" in k]
    return list(dict.fromkeys(names))


def load_runs(root: Path) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """``{config: {seed: history}}`` from ``root/<config>-s<seed>/invariance_history.json``."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(dict)
    for path in sorted(root.glob("*/invariance_history.json")):
        match = RUN_NAME.match(path.parent.name)
        if match is None:
            continue
        history = json.loads(path.read_text())["history"]
        if history:
            runs[match["config"]][int(match["seed"])] = history
    if not runs:
        raise FileNotFoundError(
            f"no <config>-s<seed>/invariance_history.json under {root}: run the typicality "
            "loop of docs/results.md first"
        )
    return dict(runs)


def summarise(runs: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per config, set and measure: per-seed values at the last epoch, their mean and spread
    (sample standard deviation), and the per-epoch curve of every seed."""
    out: dict[str, Any] = {}
    for config, seeds in runs.items():
        for seed, history in sorted(seeds.items()):
            last = history[-1]
            for name in set_names(last):
                for measure, read in MEASURES.items():
                    row = (
                        out.setdefault(config, {})
                        .setdefault(name, {})
                        .setdefault(measure, {"per_seed": {}, "curves": {}})
                    )
                    row["per_seed"][seed] = read(last, name)
                    row["curves"][seed] = [read(r, name) for r in history]
    for sets in out.values():
        for measures in sets.values():
            for row in measures.values():
                values = list(row["per_seed"].values())
                row["mean"] = statistics.fmean(values)
                row["sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def table(summary: dict[str, Any]) -> str:
    """Markdown: one row per config and set, mean +- sd over seeds per measure."""
    lines = [
        "| training | test set | seeds | " + " | ".join(MEASURES) + " |",
        "| --- | --- | --- |" + " --- |" * len(MEASURES),
    ]
    for config, sets in summary.items():
        for name, measures in sets.items():
            seeds = len(next(iter(measures.values()))["per_seed"])
            cells = [f"{m['mean']:.3f} +- {m['sd']:.3f}" for m in measures.values()]
            lines.append(f"| {config} | {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="folder of <config>-s<seed> run folders")
    parser.add_argument("--output", type=Path, default=None, help="figure (PNG); JSON beside it")
    args = parser.parse_args(argv)
    try:
        summary = summarise(load_runs(args.root))
    except (FileNotFoundError, KeyError) as err:
        parser.exit(2, f"error: {err}\n")
    print(table(summary))
    if args.output is not None:
        from lightning_inv.files import write_json
        from lightning_inv.reporting.plots import save
        from lightning_inv.reporting.study_plots import plot_typicality

        save(plot_typicality(summary), args.output)
        write_json(args.output.with_suffix(".json"), summary)
        print(f"figure: {args.output}; numbers per seed: {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
