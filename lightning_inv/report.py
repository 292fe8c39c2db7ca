"""Rank the models of several evaluation runs on one measure: ``leaderboard.csv`` (one row per
model, rank first, with the 95% interval) and ``leaderboard.html`` (self-contained, sortable).

    python -m lightning_inv.report runs/evaluate-* --measure fig2_translate_inpaint/p_top1_change
    python -m lightning_inv.report "runs/eval-*" --measure table1_crop_s0.4/accuracy --output board

RUN: folders evaluate.py wrote (their results.json must say complete), or glob patterns.
Without --measure the first run's first protocol with P(top-1 change) is used. Every evaluation
folder also has its own page, report.html; a training run folder has one too.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from lightning_inv.reporting.leaderboard import (
    LeaderboardError,
    entries,
    lower_is_better,
    ranked,
    read_run,
    write_leaderboard,
)
from lightning_inv.reporting.run_folder import default_run_folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_inv.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", help="evaluation run folders or glob patterns")
    parser.add_argument("--measure", help="PROTOCOL/MEASURE to rank on (a results.json key)")
    parser.add_argument(
        "--order",
        choices=("auto", "ascending", "descending"),
        default="auto",
        help="auto: lowest first for change counts, MAC/MAD, jaggedness and Lie derivatives, "
        "else highest first",
    )
    parser.add_argument("--output", type=Path, help="default: runs/leaderboard-<time>")
    return parser.parse_args(argv)


def run_folders(patterns: list[str]) -> list[Path]:
    """Each pattern's matches (a plain folder name matches itself), in order, once each."""
    folders: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise LeaderboardError(f"{pattern!r} matches no folder")
        folders += [Path(m) for m in matches if Path(m) not in folders]
    return folders


def default_measure(folder: Path) -> str:
    for rows in read_run(folder)["models"].values():
        for key, row in rows.items():
            if "p_top1_change" in row:
                return f"{key}/p_top1_change"
    raise LeaderboardError(f"{folder} has no protocol with p_top1_change: pass --measure")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        folders = run_folders(args.runs)
        measure = args.measure or default_measure(folders[0])
        found = entries(folders, measure)
    except LeaderboardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ascending = lower_is_better(measure) if args.order == "auto" else args.order == "ascending"
    output = args.output or default_run_folder("leaderboard")
    csv_path, page = write_leaderboard(found, measure, ascending, output)
    for rank, entry in enumerate(ranked(found, ascending), 1):
        print(f"{rank:3d}  {entry.value:.4f}  {entry.model}  ({entry.run})")
    print(f"\nleaderboard: {csv_path}\nreport: {page} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
