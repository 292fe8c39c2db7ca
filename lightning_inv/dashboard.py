"""Build the project's W&B report (the panels of the paper's figures) from code.

    python -m lightning_inv.dashboard --project lightning-inv [--entity ME]
    python -m lightning_inv.dashboard --project lightning-inv --offline   # the definition only

Logged in with network: creates the report in the project and prints its address. Offline (no
W&B login, WANDB_MODE=offline, or --offline): writes the report's definition (JSON: sections,
panels and the keys each panel reads) to --output instead, to build later or to read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightning_inv.files import write_atomically
from lightning_inv.reporting.dashboard import build_report, definition
from lightning_inv.reporting.loggers import wandb_offline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_inv.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", required=True, help="W&B project whose runs it shows")
    parser.add_argument("--entity", help="W&B entity (default: your default entity)")
    parser.add_argument("--offline", action="store_true", help="write the definition only")
    parser.add_argument(
        "--output",
        type=Path,
        help="where the definition goes (default: runs/dashboard-PROJECT.json)",
    )
    args = parser.parse_args(argv)
    spec = definition(args.project, args.entity)
    if args.offline or wandb_offline():
        output = args.output or Path("runs") / f"dashboard-{args.project}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output, json.dumps(spec, indent=2))
        print(f"W&B is offline: wrote the report's definition to {output}")
        print("log in (wandb login) and run this again to create the report")
        return 0
    try:
        report = build_report(spec).save()
    except Exception as err:  # network, login, the wandb-workspaces package
        print(
            f"error: the report could not be created ({type(err).__name__}: {err})", file=sys.stderr
        )
        return 1
    print(f"report: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
