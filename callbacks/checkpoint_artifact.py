"""Log a training run's checkpoints to W&B as a ``model`` artifact at the end of fitting, so an
evaluation that uses the artifact (``evaluate.py --models wandb:ENTITY/PROJECT/NAME:VERSION``)
is linked to the run that made it (W&B's lineage). Lightning's own ``log_model`` refuses
offline runs; an offline artifact here is uploaded with the run by ``wandb sync``."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger


class CheckpointArtifact(Callback):
    """At the end of fitting (rank 0, W&B loggers only): ``last.ckpt`` and the best checkpoint
    as artifact ``model-<run id>`` (aliases ``latest`` and ``epoch<N>``), with the epoch, the
    step and the last invariance record as metadata."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        checkpoint = trainer.checkpoint_callback
        if not loggers or not trainer.is_global_zero or checkpoint is None:
            return
        files = {
            Path(p)
            for p in (getattr(checkpoint, "last_model_path", ""), checkpoint.best_model_path)
            if p and Path(p).is_file()
        }
        if not files:
            return
        import wandb

        run = loggers[0].experiment
        history = [cb for cb in trainer.callbacks if hasattr(cb, "history")]
        last = history[0].history[-1] if history and history[0].history else {}
        epoch = max(trainer.current_epoch - 1, 0)  # the last finished epoch (fit has ended)
        artifact = wandb.Artifact(
            f"model-{run.id}",
            type="model",
            metadata={**last, "epoch": epoch, "step": trainer.global_step},
        )
        for path in sorted(files):
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact, aliases=["latest", f"epoch{epoch}"])
        print(f"checkpoint artifact: model-{run.id} ({', '.join(p.name for p in sorted(files))})")
