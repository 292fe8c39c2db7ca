"""Keep ``report.html`` of a training run folder current: rewritten after every validation (the
invariance evaluation and its figures run before it), at the end of fitting and after testing."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_inv.reporting.training_report import training_report


class ReportPage(Callback):
    """Write ``<log_dir>/report.html`` (rank 0) from the run folder's files."""

    def _write(self, trainer: pl.Trainer) -> Path | None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero or not log_dir:
            return None
        if not (Path(log_dir) / "invariance_history.json").is_file():
            return None
        return training_report(Path(log_dir))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (path := self._write(trainer)) is not None:
            print(f"report: {path} (open it in a browser)")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (path := self._write(trainer)) is not None:
            print(f"report: {path} (open it in a browser)")
