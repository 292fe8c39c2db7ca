"""A test progress bar that reports images per second (a batch holds many images, each many views)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class ImagesPerSecondBar(TQDMProgressBar):
    """Lightning's tqdm bar; during ``Trainer.test`` its postfix shows images/s and views/s.

    ``views_per_image`` (the sum of the protocols' view counts) turns images into views.
    """

    def __init__(self, views_per_image: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views_per_image = views_per_image
        self._images = 0
        self._start = 0.0

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_test_start(trainer, pl_module)
        self._images, self._start = 0, time.perf_counter()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._images += len(batch["image"]) * trainer.world_size
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = self._images / elapsed
        if self._test_progress_bar is not None:
            self.test_progress_bar.set_postfix_str(
                f"{rate:.2f} img/s, {rate * self.views_per_image:.0f} views/s", refresh=False
            )
