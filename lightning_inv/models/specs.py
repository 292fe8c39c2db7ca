"""A model named on a command line, parsed once: a timm name with modifiers, or a checkpoint.

``parse_model("resnet50.tv_in1k:blurpool")`` or ``parse_model("runs/x/last.ckpt")`` checks the
name (a typo names close timm names), the modifiers and a checkpoint (read once, with
``weights_only``, and kept), and says the class count; ``ModelSpec.build`` then makes the
classifier without reading anything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm

from lightning_inv.models.backbones import (
    BackboneError,
    Checkpoint,
    _unknown_model_error,
    load_checkpoint,
)
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.models.surgery import parse_surgery

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
ARTIFACT_PREFIX = "wandb:"
ARTIFACT_CACHE = Path.home() / ".cache" / "lightning_inv" / "artifacts"


def is_checkpoint(spec: str) -> bool:
    """``spec`` names a checkpoint file (by its suffix, or because the file exists)."""
    return spec.endswith(CHECKPOINT_SUFFIXES) or Path(spec).is_file()


@dataclass(frozen=True)
class ModelSpec:
    """One model of ``--models``: ``name`` (timm), ``modify`` (surgeries joined by ``+``), the
    classifier's size, and for a ``train.py`` checkpoint its content (read once)."""

    spec: str
    name: str
    modify: str | None
    num_classes: int
    checkpoint: Checkpoint | None = None
    artifact: str | None = None  # the W&B artifact the checkpoint came from (lineage)

    @property
    def placement(self) -> tuple[int, float] | None:
        """(canvas px, object scale) of a ``train.py`` checkpoint's training data, or None."""
        return self.checkpoint.placement if self.checkpoint is not None else None

    def build(
        self,
        pretrained: bool = True,
        image_size: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> InvarianceClassifier:
        """The classifier (a checkpoint at its own canvas unless ``image_size`` is given)."""
        options: dict[str, Any] = {"channels_last": channels_last, "compile": compile}
        if self.checkpoint is not None:
            size = image_size or (self.placement[0] if self.placement else None)
            if size is not None:
                options["image_size"] = size
            return InvarianceClassifier.from_checkpoint(self.checkpoint, **options)
        if image_size is not None:
            options["image_size"] = image_size
        return InvarianceClassifier(
            self.name,
            pretrained=pretrained,
            modify=self.modify,
            num_classes=self.num_classes,
            **options,
        )

    def weights_name(self, pretrained: bool, classifier: InvarianceClassifier) -> str | None:
        """timm's name of the pretrained weights (``architecture.tag``, e.g. ``resnet50.tv_in1k``)
        of an unmodified pretrained model; None for checkpoints, modified or random models (no
        published number applies to them)."""
        if not pretrained or self.checkpoint is not None or self.modify:
            return None
        cfg = getattr(classifier.model, "pretrained_cfg", None) or {}
        if not cfg.get("architecture"):
            return None
        return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]

    def describe(self) -> dict[str, Any]:
        """What a logger records about the model (name, modifier, checkpoint)."""
        return {
            "model": self.spec,
            "architecture": self.name,
            "modifier": self.modify,
            "checkpoint": str(self.checkpoint.path) if self.checkpoint is not None else None,
            "artifact": self.artifact,
        }


def download_artifact(name: str, cache: Path | None = None) -> Path:
    """The checkpoint file of W&B model artifact ``name`` (``ENTITY/PROJECT/NAME:VERSION``, as
    ``train.py`` logs them): downloaded once into ``cache/ENTITY/PROJECT/NAME/VERSION`` (default
    ``ARTIFACT_CACHE``; ``last.ckpt`` when the artifact holds several). ``BackboneError`` names
    what is missing (network, login, the artifact)."""
    if name.count("/") != 2 or ":" not in name.rpartition("/")[2]:
        raise BackboneError(
            f"wandb:{name}: name the artifact as wandb:ENTITY/PROJECT/NAME:VERSION "
            "(e.g. wandb:me/lightning-inv/model-1a2b3c4d:v0)"
        )
    entity, project, rest = name.split("/")
    target = (cache or ARTIFACT_CACHE) / entity / project / Path(*rest.rsplit(":", 1))
    try:
        import wandb

        folder = Path(wandb.Api().artifact(name, type="model").download(root=str(target)))
    except Exception as err:  # network, login, a missing artifact: all one message
        raise BackboneError(
            f"wandb:{name} could not be downloaded ({type(err).__name__}: {err}); log in with "
            "`wandb login` on a machine with network, or pass the checkpoint file instead"
        ) from err
    files = sorted(folder.glob("*.ckpt"))
    chosen = [f for f in files if f.name == "last.ckpt"] or files
    if not chosen:
        raise BackboneError(
            f"wandb:{name} holds no .ckpt file (it has {sorted(p.name for p in folder.iterdir())})"
        )
    return chosen[0]


def cached_artifact(path: Path, cache: Path | None = None) -> str | None:
    """The artifact name (``ENTITY/PROJECT/NAME:VERSION``) of a checkpoint that
    ``download_artifact`` put in ``cache``, else None: such a file given as a path keeps its
    lineage."""
    try:
        parts = path.resolve().relative_to((cache or ARTIFACT_CACHE).resolve()).parts
    except ValueError:
        return None
    if len(parts) != 5:  # entity / project / name / version / file
        return None
    entity, project, name, version, _ = parts
    return f"{entity}/{project}/{name}:{version}"


def parse_model(spec: str, num_classes: int | None = None) -> ModelSpec:
    """Check one model spec without building it; ``BackboneError`` says what is wrong.
    ``wandb:ENTITY/PROJECT/NAME:VERSION`` is a checkpoint artifact of ``train.py``."""
    artifact = spec.removeprefix(ARTIFACT_PREFIX) if spec.startswith(ARTIFACT_PREFIX) else None
    if artifact is not None or is_checkpoint(spec):
        checkpoint = load_checkpoint(download_artifact(artifact) if artifact else spec)
        artifact = artifact or cached_artifact(Path(spec))
        hparams = checkpoint.hparams
        if not hparams:
            raise BackboneError(
                f"{spec} has no saved hyperparameters: it is not a checkpoint of train.py"
            )
        return ModelSpec(
            spec,
            str(hparams.get("model_name", "?")),
            hparams.get("modify"),
            int(hparams.get("num_classes", 1000)),
            checkpoint,
            artifact,
        )
    name, _, modify = spec.partition(":")
    if not timm.is_model(name):
        raise _unknown_model_error(name)
    for part in filter(None, modify.split("+")):
        try:
            parse_surgery(part)
        except ValueError as err:
            raise BackboneError(f"{spec!r}: {err}") from err
    return ModelSpec(spec, name, modify or None, num_classes or 1000)
