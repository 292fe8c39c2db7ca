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

Everything a run writes (config.yaml, checkpoints/, invariance_history.json, figures/, the W&B
run) goes under one run folder, --trainer.default_root_dir. An existing run folder is refused
unless the run resumes from it (--ckpt_path) or --overwrite replaces it. SIGTERM or Ctrl+C saves
checkpoints/last.ckpt and exits non-zero. By default runs log to W&B (offline unless the machine
is logged in; ``wandb sync`` uploads later) and the full config goes to the W&B run too.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks import CheckpointArtifact, RandomStateCheckpoint, ReportPage
from lightning_inv.allocator import keep_freed_memory
from lightning_inv.cli.checks import check_output
from lightning_inv.cli.help import HelpFormatter
from lightning_inv.data.images import LabelMappingError
from lightning_inv.data.training import ClassificationDataModule
from lightning_inv.models.classifier import (
    ConfigError,
    DataMismatchError,
    InvarianceClassifier,
    NonFiniteLossError,
)
from lightning_inv.reporting.loggers import finish_wandb

RUN_ARTIFACTS = (
    "checkpoints",
    "config.yaml",
    "invariance_history.json",
    "invariance_test.json",
    "figures",
    "report.html",
    "wandb",
)


class RunFolderError(ValueError):
    """The run folder holds an earlier run and nothing says to resume or replace it."""


class CheckpointOnStop(Callback):
    """On SIGTERM or Ctrl+C during fit, save ``last.ckpt`` where the ``ModelCheckpoint`` keeps
    it (the README's resume command then continues this run)."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if (
            not isinstance(exception, SIGTERMException | KeyboardInterrupt)
            or trainer.state.fn != "fit"
        ):
            return
        checkpoint = trainer.checkpoint_callback
        folder = (
            Path(checkpoint.dirpath)
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath
            else Path(trainer.default_root_dir) / "checkpoints"
        )
        trainer.save_checkpoint(folder / "last.ckpt")
        if trainer.is_global_zero:
            print(
                f"\nstopped: saved {folder / 'last.ckpt'}; resume with --ckpt_path", file=sys.stderr
            )


TRAINER_DEFAULTS = {
    "default_root_dir": "runs/train",
    "logger": {"class_path": "lightning_inv.reporting.loggers.AutoWandbLogger"},
    # Always on (not replaced by a config's callback list): exact resumption needs the RNGs.
    "callbacks": [RandomStateCheckpoint(), CheckpointOnStop(), CheckpointArtifact(), ReportPage()],
}
DEFAULT_CALLBACKS = [  # used when a config names no callbacks
    {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
    {"class_path": "callbacks.InvarianceEvaluation"},
    {"class_path": "callbacks.InvarianceFigures"},
]


class InvarianceCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.callbacks": DEFAULT_CALLBACKS})
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="replace an earlier run in --trainer.default_root_dir (its checkpoints, history, "
            "figures, W&B files) instead of refusing it",
        )

    def before_instantiate_classes(self) -> None:
        """Derive every path from the run folder, and refuse to mix two runs in one folder."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Environment variables expand (a W&B sweep agent's $WANDB_RUN_ID: a folder per run).
        folder = os.path.expandvars(str(config.trainer.default_root_dir))
        if "$" in folder:
            raise ConfigError(
                f"--trainer.default_root_dir {folder}: an environment variable in it is not set "
                "(a W&B sweep agent sets WANDB_RUN_ID; by hand, name the folder)"
            )
        config.trainer.default_root_dir = folder
        root = Path(folder)
        logger = config.trainer.logger
        for entry in logger if isinstance(logger, list) else [logger]:
            init = getattr(entry, "init_args", None)
            if init is not None and "save_dir" in init and not init.save_dir:
                init.save_dir = str(root)
        for entry in config.trainer.callbacks or []:
            init = getattr(entry, "init_args", None)
            if (
                str(getattr(entry, "class_path", "")).endswith("ModelCheckpoint")
                and init is not None
                and not init.dirpath
            ):
                init.dirpath = str(root / "checkpoints")
        for folder in [root, *logger_folders(logger)]:
            if problem := check_output(folder):
                raise RunFolderError(problem.replace("--output", "run folder"))
        if self.subcommand != "fit" or config.get("ckpt_path"):
            return
        earlier = [name for name in RUN_ARTIFACTS if (root / name).exists()]
        results = [n for n in earlier if n != "config.yaml"]  # a run that failed before training
        if results and not config.overwrite:  # left only its config: nothing to mix with
            raise RunFolderError(
                f"{root} holds an earlier run ({', '.join(results)}): resume it with --ckpt_path "
                f"{root / 'checkpoints' / 'last.ckpt'}, replace it with --overwrite true, or choose "
                "another --trainer.default_root_dir"
            )
        for name in earlier:  # --overwrite: the earlier run goes, nothing of it is mixed in
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def logger_folders(logger: object) -> list[Path]:
    """The ``save_dir`` of each configured logger (W&B, CSV, ...) that names one."""
    folders = []
    for entry in logger if isinstance(logger, list) else [logger]:
        init = getattr(entry, "init_args", None)
        save_dir = getattr(init, "save_dir", None) if init is not None else None
        if save_dir:
            folders.append(Path(save_dir))
    return folders


class ConfigToLoggers(SaveConfigCallback):
    """Writes ``config.yaml`` to the run folder (Lightning's default) and sends it to W&B."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


def root_cause(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in ``error``'s chain of causes, or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main(args: list[str] | None = None) -> int:
    keep_freed_memory()  # CPU training: no page faults per activation map (lightning_inv/allocator.py)
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
            parser_kwargs={"description": __doc__, "formatter_class": HelpFormatter},
            auto_configure_optimizers=False,
        )
    except (NonFiniteLossError, DataMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (RunFolderError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # jsonargparse wraps errors raised while instantiating classes
        cause = root_cause(err, ConfigError) or root_cause(err, LabelMappingError)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    except SIGTERMException:  # Lightning stops after the step; CheckpointOnStop saved last.ckpt
        return 128 + signal.SIGTERM
    finally:
        finish_wandb()  # complete the W&B run files before the process exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
