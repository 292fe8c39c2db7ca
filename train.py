"""Fine-tune a timm backbone with or without augmentation and watch its invariance every epoch.

LightningCLI over ``InvarianceClassifier`` and the data modules of ``lightning_inv.data.training``
(digits, imagefolder, cifar10). Subcommands ``fit``, ``validate``, ``test``; ``--config`` YAML files
live in ``configs/``; ``--print_config`` shows the full resolved config.

Examples:
    python train.py fit --config configs/digits_baseline.yaml
    python train.py fit --config configs/digits_translate_aug.yaml --trainer.max_epochs 3
    python train.py fit --config configs/digits_baseline.yaml --ckpt_path runs/train/digits_baseline/checkpoints/last.ckpt
    python train.py test --config configs/digits_baseline.yaml --ckpt_path .../last.ckpt
    python train.py fit --config configs/imagenet_resnet50_blurpool.yaml --print_config

By default runs log to W&B (offline unless the machine is logged in; ``wandb sync`` uploads later)
and the full config is saved in the run folder and in the W&B run.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
from jsonargparse import DefaultHelpFormatter
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from callbacks import RandomStateCheckpoint
from lightning_inv.data.training import ClassificationDataModule
from lightning_inv.loggers import finish_wandb
from lightning_inv.module import DataMismatchError, InvarianceClassifier, NonFiniteLossError

TRAINER_DEFAULTS = {
    "default_root_dir": "runs/train",
    "logger": {
        "class_path": "lightning_inv.loggers.AutoWandbLogger",
        "init_args": {"save_dir": "runs/train"},
    },
    # Always on (not replaced by a config's callback list): exact resumption needs the RNGs.
    "callbacks": [RandomStateCheckpoint()],
}
DEFAULT_CALLBACKS = [  # used when a config names no callbacks
    {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
    {"class_path": "callbacks.InvarianceEvaluation"},
    {"class_path": "callbacks.InvarianceFigures"},
]


class InvarianceCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.callbacks": DEFAULT_CALLBACKS})


class KeepDescriptionLayout(DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines and examples kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class ConfigToLoggers(SaveConfigCallback):
    """Writes ``config.yaml`` to the run folder (Lightning's default) and sends it to W&B."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


def main(args: list[str] | None = None) -> int:
    try:
        InvarianceCLI(
            InvarianceClassifier,
            ClassificationDataModule,
            subclass_mode_data=True,
            save_config_callback=ConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            args=args,
            parser_kwargs={"description": __doc__, "formatter_class": KeepDescriptionLayout},
            auto_configure_optimizers=False,
        )
    except (NonFiniteLossError, DataMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        finish_wandb()  # complete the W&B run files before the process exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
