"""python -m lightning_inv.studies.bias: the photographer's bias of a data set's bounding boxes.

Reads ImageNet-style annotations (a folder of PASCAL-VOC XML files, searched recursively, or a
LOC_train_solution.csv / LOC_val_solution.csv file with --images for the image sizes), tests
per category whether box positions and sizes are uniform (Kolmogorov-Smirnov), prints a summary
and writes results.json, categories.csv, problems.txt and figures (paper Fig. 5) under --output.

Nulls: the box's left edge u = xmin / (W - w) is uniform on [0, 1] (every position where the box
fits is equally likely; same for y), and the normalised sides w / W, h / H are uniform on (0, 1].

Examples:
    python -m lightning_inv.studies.bias --write-example /tmp/bias-example
    python -m lightning_inv.studies.bias /tmp/bias-example/xml --output runs/bias-xml
    python -m lightning_inv.studies.bias /tmp/bias-example/LOC_val_solution.csv --images /tmp/bias-example/images
    python -m lightning_inv.studies.bias ~/imagenet/Annotations/CLS-LOC/train --category n01440764
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from lightning_inv.files import write_atomically, write_csv, write_json
from lightning_inv.reporting.loggers import LOGGER_CHOICES, close_logger, create_logger
from lightning_inv.reporting.plots import save
from lightning_inv.reporting.run_folder import default_run_folder, overwrite_refusal
from lightning_inv.reporting.study_plots import plot_fig5_category, plot_fig5_pvalues
from lightning_inv.studies.bias.analysis import (
    BoxGeometry,
    analyse_categories,
    group_by_synset,
    summarize,
)
from lightning_inv.studies.bias.annotations import read_boxes
from lightning_inv.studies.bias.synthetic import write_example


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_inv.studies.bias",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "annotations", type=Path, nargs="?", help="folder of VOC .xml files or a LOC_*_solution.csv"
    )
    parser.add_argument(
        "--images", type=Path, default=None, help="image folder (sizes for the CSV)"
    )
    parser.add_argument(
        "--alpha", type=float, default=1e-10, help="significance level of the summary"
    )
    parser.add_argument("--min-boxes", type=int, default=5, help="test categories with >= N boxes")
    parser.add_argument(
        "--category", default=None, help="synset drawn in Fig. 5 (default: most boxes)"
    )
    parser.add_argument("--output", type=Path, default=None, help="default: runs/bias-<time>")
    parser.add_argument("--overwrite", action="store_true", help="allow an existing --output")
    parser.add_argument("--logger", choices=LOGGER_CHOICES, default="none")
    parser.add_argument(
        "--write-example",
        type=Path,
        default=None,
        metavar="DIR",
        help="write synthetic annotations with a known answer to DIR and exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_example is not None:
        root = write_example(args.write_example)
        print(f"wrote {root}/xml (VOC), {root}/LOC_val_solution.csv and {root}/images")
        return 0
    if args.annotations is None:
        print("error: give an annotation folder or CSV (or --write-example DIR)", file=sys.stderr)
        return 2
    if not 0 < args.alpha < 1:
        print(f"error: --alpha must be in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    if args.output and (refusal := overwrite_refusal(args.output, args.overwrite)):
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        boxes, problems = read_boxes(args.annotations, args.images)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems[:10]:
        print(f"skipped {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"... and {len(problems) - 10} more (all in problems.txt)", file=sys.stderr)
    if not boxes:
        reason = "see the problems above" if problems else "the annotations hold no boxes"
        print(f"error: no usable boxes in {args.annotations} ({reason})", file=sys.stderr)
        return 2
    categories = analyse_categories(boxes, args.min_boxes)
    summary = summarize(categories, args.alpha)
    summary["skipped_annotations"] = len(problems)
    # The default folder is made only now: a run refused above leaves nothing behind.
    output = args.output or default_run_folder("bias")
    output.mkdir(parents=True, exist_ok=True)
    write_atomically(output / "problems.txt", "".join(f"{p}\n" for p in problems))
    results = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "categories": {c.synset: asdict(c) for c in categories},
    }
    write_json(output / "results.json", results)  # strict JSON: an untested p-value is null
    header = [
        "synset",
        "boxes",
        "p_x",
        "p_y",
        "p_width",
        "p_height",
        "mean_cx",
        "mean_cy",
        "mean_width",
        "mean_height",
    ]
    write_csv(
        output / "categories.csv",
        header,
        (
            [
                c.synset,
                c.num_boxes,
                c.pvalues["x_position"],
                c.pvalues["y_position"],
                c.pvalues["width"],
                c.pvalues["height"],
                c.mean_cx,
                c.mean_cy,
                c.mean_width,
                c.mean_height,
            ]
            for c in categories
        ),
    )
    groups = group_by_synset(boxes)
    chosen = args.category or max(groups, key=lambda s: len(groups[s]))
    figures = {}
    if chosen in groups:
        figures["fig5_category"] = save(
            plot_fig5_category(BoxGeometry.of(groups[chosen]), chosen), output / "fig5_category.png"
        )
    else:
        print(f"warning: no boxes of category {chosen!r}; Fig. 5 scatter skipped", file=sys.stderr)
    figures["fig5_pvalues"] = save(
        plot_fig5_pvalues(categories, args.alpha), output / "fig5_pvalues.png"
    )

    print(
        f"{'synset':12s} {'boxes':>6s} {'p(x)':>10s} {'p(y)':>10s} {'p(width)':>10s} {'p(height)':>10s}"
    )
    for c in sorted(categories, key=lambda c: -c.num_boxes)[:20]:
        p = c.pvalues
        print(
            f"{c.synset:12s} {c.num_boxes:6d} {p['x_position']:10.2e} {p['y_position']:10.2e} "
            f"{p['width']:10.2e} {p['height']:10.2e}"
        )
    if len(categories) > 20:
        print(f"... {len(categories) - 20} more categories in {output / 'categories.csv'}")
    print(
        f"\n{summary['boxes']} boxes, {summary['categories']} categories "
        f"({summary['tested_categories']} with >= {args.min_boxes} boxes), "
        f"{len(problems)} annotations skipped.\n"
        f"non-uniform at p < {args.alpha:g}: location {summary['nonuniform_location']} of "
        f"{summary['tested_location']}, size {summary['nonuniform_size']} of "
        f"{summary['tested_size']}, both {summary['nonuniform_location_and_size']} of "
        f"{summary['tested_both']} categories"
    )
    print(
        f"results: {output / 'results.json'}\nfigures: {', '.join(str(p) for p in figures.values())}"
    )
    if args.logger != "none":
        try:
            logger = create_logger(args.logger, output, output.name, results["config"], "study")
            if logger is not None:
                logger.log_metrics({f"bias/{k}": float(v) for k, v in summary.items()})
                if hasattr(logger, "log_image"):
                    for name, path in figures.items():
                        logger.log_image(f"figures/{name}", images=[str(path)])
                close_logger(logger)
        except Exception as err:  # the files are written; a logger must not fail the run
            print(f"warning: logging to {args.logger} failed: {err}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
