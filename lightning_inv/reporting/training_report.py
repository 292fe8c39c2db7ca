"""``report.html`` of a training run folder, from its files alone (``invariance_history.json``,
``invariance_test.json``, ``figures/``, ``config.yaml``): the per-epoch invariance curves of
every set, the last epoch's table and the callback's latest figures, inlined."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightning_inv.files import read_json, write_atomically
from lightning_inv.reporting import html as h

BOOKKEEPING = ("stage", "epoch", "step")


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def curves(history: list[dict[str, Any]]) -> str:
    """One chart per measure: a line per protocol (set) over the epochs."""
    by_measure: dict[str, dict[str, tuple[list[float], list[float]]]] = defaultdict(dict)
    for record in history:
        for key, value in _numbers(record).items():
            protocol, _, measure = key.rpartition("/")
            xs, ys = by_measure[measure].setdefault(protocol or key, ([], []))
            xs.append(float(record["epoch"]))
            ys.append(value)
    charts = []
    for measure, series in sorted(by_measure.items()):
        values = [y for _, ys in series.values() for y in ys]
        bounded = all(0.0 <= y <= 1.0 for y in values) and not measure.startswith("lie")
        chart = h.line_chart(series, "epoch", (0.0, 1.0) if bounded else None, 420, 220)
        caption = measure if len(series) > 1 else f"{measure} ({next(iter(series))})"
        charts.append(f"<figure>{chart}<figcaption>{h.esc(caption)}</figcaption></figure>")
    return "".join(charts)


def last_table(record: dict[str, Any]) -> str:
    rows = []
    for key, value in _numbers(record).items():
        protocol, _, measure = key.rpartition("/")
        rows.append([h.text(protocol), h.text(measure), h.with_interval(value)])
    return h.table(["set / protocol", "measure", "value"], rows)


def latest_figures(folder: Path) -> str:
    """The newest file of each figure family (``<name>_epochNNN.png``)."""
    newest: dict[str, Path] = {}
    for path in sorted(folder.glob("*.png")):
        family = re.sub(r"_epoch\d+$", "", path.stem)
        newest[family] = path  # sorted: the highest epoch comes last
    return "".join(h.file_image(p, p.stem) for p in newest.values())


def training_report(run: Path) -> Path:
    """Write ``run / "report.html"`` (atomically) from the run folder's files; returns it."""
    history_file = run / "invariance_history.json"
    history = read_json(history_file)["history"] if history_file.is_file() else []
    test_file = run / "invariance_test.json"
    test = read_json(test_file) if test_file.is_file() else None
    config = run / "config.yaml"
    last = history[-1] if history else None
    intro = (
        f"<p>{len(history)} evaluated epoch(s); the invariance callback's held-out sets, "
        "measured with the same core as evaluate.py. Click a column heading to sort.</p>"
    )
    sections = [
        ("Invariance per epoch", curves(history)),
        (f"Epoch {last['epoch']}" if last else "Last epoch", last_table(last) if last else ""),
        ("Test (train.py test)", last_table(test) if test else ""),
        ("Figures", latest_figures(run / "figures") if (run / "figures").is_dir() else ""),
        ("Configuration", f"<pre>{h.esc(config.read_text())}</pre>" if config.is_file() else ""),
    ]
    document = h.page(f"lightning-inv training run: {run.name}", sections, intro)
    return write_atomically(run / "report.html", document)
