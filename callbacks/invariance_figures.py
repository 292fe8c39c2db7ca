"""Figures of the per-epoch invariance evaluation, sent to W&B (or saved as PNG otherwise).

Reads what ``InvarianceEvaluation`` measured this epoch: the heat map of the true-class
probability over the translation sweep (paper Fig. 2A) and accuracy against object scale at
random locations (paper Fig. 6). With a W&B logger the figures go to the run under
``figures/...``; with any other logger (or none) they are written under
``<log_dir>/figures/`` and nothing else happens.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from callbacks.invariance import InvarianceEvaluation
from lightning_inv.protocols import RandomLocation
from lightning_inv.reporting import plots


class InvarianceFigures(Callback):
    """Draw the latest ``InvarianceEvaluation`` results at the end of each validation.

    Args:
        save_files: also write PNGs under ``<log_dir>/figures`` when logging to W&B.
    """

    def __init__(self, save_files: bool = False) -> None:
        self.save_files = save_files
        self._drawn_step = -1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "figures"  # every rank asks
        if not trainer.is_global_zero:
            return
        evaluation = next(
            (c for c in trainer.callbacks if isinstance(c, InvarianceEvaluation)), None
        )
        if evaluation is None or not evaluation.history:
            return
        latest = evaluation.history[-1]
        if latest["step"] == self._drawn_step:
            return  # the evaluation did not run this epoch
        self._drawn_step = latest["step"]
        figures = {}
        translate = next((p for p in evaluation.latest_protocols if p.ordered), None)
        result = evaluation.latest_per_image.get(translate.key) if translate else None
        if translate is not None and result is not None and result.p_true is not None:
            figures["heatmap_translate"] = plots.plot_probability_heatmaps(
                {f"epoch {latest['epoch']}": result.p_true},
                translate.positions,
                translate.axis_label,
            )
        curves: dict[str, dict[float, float]] = {}  # one curve per named set (or the one set)
        for p in evaluation.latest_protocols:
            if isinstance(p, RandomLocation) and f"{p.key}/accuracy" in latest:
                group = p.key[: -len(p.default_key)].rstrip("_")
                label = f"{group + ', ' if group else ''}epoch {latest['epoch']}"
                curves.setdefault(label, {})[p.scale] = latest[f"{p.key}/accuracy"]
        if curves:
            figures["accuracy_vs_scale"] = plots.plot_accuracy_vs_scale(
                curves, fill=evaluation.fill
            )
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        for name, figure in figures.items():
            path = folder / f"{name}_epoch{latest['epoch']:03d}.png"
            plots.save(figure, path)
            if wandb is not None:
                wandb.log_image(f"figures/{name}", images=[str(path)], step=trainer.global_step)
                if not self.save_files:
                    path.unlink()
