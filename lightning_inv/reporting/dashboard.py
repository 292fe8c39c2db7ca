"""A W&B report with the panels of the paper's figures, as code: the definition is plain data
(``definition``), checked offline against what the runs log; ``build_report`` turns it into a
report with the ``wandb-workspaces`` package when W&B can be reached."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_inv.protocols.presets import TABLE1_BLACK, TABLE1_CROP, fig6_scales


@dataclass(frozen=True)
class Panel:
    """One chart: ``bar`` over runs of summary ``keys``, or ``line`` of the metrics matching
    ``regex`` against ``x`` (the training curves)."""

    kind: str
    title: str
    keys: tuple[str, ...] = ()
    regex: str = ""
    x: str = "epoch"


@dataclass(frozen=True)
class Section:
    heading: str
    text: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def sections() -> list[Section]:
    """Evaluation runs (the default presets' keys) and training runs (the callback's curves)."""
    fig6 = tuple(f"fig6_random_location_s{s:g}/accuracy" for s in fig6_scales())
    return [
        Section(
            "Evaluations (evaluate.py, one run per model)",
            "Each bar is a model of an evaluation group; the numbers are the means over images "
            "(their 95% intervals are the _ci95_low / _ci95_high keys beside them).",
            (
                Panel(
                    "bar",
                    "Fig. 2B: P(top-1 change) between one-pixel steps",
                    ("fig2_translate_inpaint/p_top1_change",),
                ),
                Panel(
                    "bar",
                    "Fig. 2B: fraction of jagged images",
                    ("fig2_translate_inpaint/jagged_fraction",),
                ),
                Panel(
                    "bar",
                    "Table 1: P(top-1 change), crop",
                    tuple(f"{k}/p_top1_change" for k in TABLE1_CROP),
                ),
                Panel(
                    "bar",
                    "Table 1: P(top-1 change), embedded in black",
                    tuple(f"{k}/p_top1_change" for k in TABLE1_BLACK),
                ),
                Panel("bar", "Fig. 6: accuracy at random locations against object scale", fig6),
            ),
        ),
        Section(
            "Training (train.py, the invariance callback every epoch)",
            "Held-out sets measured with the same core as evaluate.py, against the epoch.",
            (
                Panel(
                    "line",
                    "Accuracy at random locations and scales",
                    regex=r"invariance/random_location_.*/accuracy",
                ),
                Panel(
                    "line",
                    "P(top-1 change) over the translation sweep",
                    regex=r"invariance/translate_.*/p_top1_change",
                ),
                Panel(
                    "line",
                    "Jagged fraction over the translation sweep",
                    regex=r"invariance/translate_.*/jagged_fraction",
                ),
                Panel(
                    "line",
                    "Consistency over the translation sweep",
                    regex=r"invariance/translate_.*/consistency",
                ),
                Panel(
                    "line",
                    "Lie derivative of the softmax",
                    regex=r"invariance/lie_.*/lie_softmax_.*",
                ),
            ),
        ),
    ]


def definition(project: str, entity: str | None = None) -> dict[str, Any]:
    """The report as plain data (what ``--offline`` writes)."""
    return {
        "title": "lightning-inv: invariance to small image transformations",
        "project": project,
        "entity": entity,
        "sections": [asdict(s) for s in sections()],
    }


def build_report(spec: dict[str, Any]) -> Any:
    """A ``wandb_workspaces`` report of ``spec`` (needs W&B's API: network and a login)."""
    import wandb_workspaces.reports.v2 as wr

    entity, project = spec["entity"] or "", spec["project"]
    blocks: list[Any] = []
    for section in spec["sections"]:
        panels = []
        for p in section["panels"]:
            if p["kind"] == "bar":
                panels.append(wr.BarPlot(title=p["title"], metrics=list(p["keys"])))
            else:
                panels.append(wr.LinePlot(title=p["title"], x=p["x"], metric_regex=p["regex"]))
        runset = wr.Runset(entity=entity, project=project)
        blocks += [
            wr.H2(section["heading"]),
            wr.P(section["text"]),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ]
    return wr.Report(project=project, entity=entity, title=spec["title"], blocks=blocks)
