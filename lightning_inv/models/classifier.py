"""``InvarianceClassifier``: a timm backbone as a LightningModule for fine-tuning and evaluation.

Batches are dicts ``{"image": [B, 3, H, W] float in [0, 1], "label": [B] long, ...}``: the module
normalises with the backbone's own mean and std, so the transformation engine and every fill mode
work on plain RGB in [0, 1].
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torchmetrics.classification import MulticlassAccuracy

from lightning_inv.models.backbones import (
    BackboneError,
    Checkpoint,
    create_backbone,
    load_checked_state_dict,
    load_checkpoint,
)
from lightning_inv.models.surgery import parse_surgery
from lightning_inv.protocols.tangents import tangent


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class DataMismatchError(ValueError):
    """The data and the classifier disagree (e.g. the number of classes)."""


class ConfigError(ValueError):
    """A setting out of its range; the message names the ``train.py`` flag."""


def check_settings(prefix: str, **limits: tuple[float, float | None, float]) -> None:
    """Raise ``ConfigError`` for the first ``name=(value, low, high)`` outside ``[low, high]``
    (``high`` None: no upper bound), naming ``--{prefix}.{name}``."""
    for name, (value, low, high) in limits.items():
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"--{prefix}.{name} must be {bound}, got {value}")


class InvarianceClassifier(pl.LightningModule):
    """Cross-entropy classifier around ``create_backbone(model_name, ...)``.

    Args:
        model_name: timm model name.
        pretrained: start from ImageNet weights (offline for ``tf_efficientnet_lite0/1/2``).
        modify: ``None`` or surgeries of ``lightning_inv.models.surgery`` joined by ``+``:
            ``"avgpool"``, ``"blurpool"`` (filter 4; ``"blurpool3"`` etc.), ``"blurpool_all"``,
            ``"aps"``, ``"aps_circular"``, ``"rics"`` (crop selection, any model; ``"rics8"``:
            margin 8 px), e.g. ``"blurpool+aps"``.
        num_classes: classifier size (the pretrained head is replaced when it differs).
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        lr: learning rate of the head; the backbone gets ``lr * backbone_lr_scale``.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        backbone_lr_scale: factor on the backbone's learning rate (e.g. 0.1 for fine-tuning).
        freeze_backbone: train the classifier only.
        warmup_epochs: linear warm-up before the cosine decay (fractions allowed).
        schedule_epochs: length of the cosine decay in epochs (default: ``trainer.max_epochs``);
            fix it to keep the schedule when a run is stopped early or resumed with more epochs.
        image_size: input resolution; ``None`` uses the model's default (timm data config).
        channels_last: keep weights and inputs in ``torch.channels_last`` memory format (faster
            convolutions on GPUs with tensor cores; same numbers up to float rounding).
        compile: ``torch.compile`` the backbone in place (state dict keys unchanged); the first
            batches are slow while it compiles.
        lie_penalty: weight of a Lie derivative penalty added to the training loss: per image,
            ||d softmax / dt||^2 along a random direction of sub-pixel translation (t in px; a
            uniform angle, so its mean is half the sum of ``lie_softmax_translate_x`` and
            ``_y`` of ``lightning_inv.protocols.lie``), of the function being trained with the
            batch's normalisation statistics held constant (``translation_lie``: one more
            forward pass, with dual tensors; ~2.5x the forward cost). 0: off.
    """

    def __init__(
        self,
        model_name: str = "tf_efficientnet_lite0",
        pretrained: bool = True,
        modify: str | None = None,
        num_classes: int = 1000,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        backbone_lr_scale: float = 1.0,
        freeze_backbone: bool = False,
        warmup_epochs: float = 0.0,
        image_size: int | None = None,
        schedule_epochs: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
        lie_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_settings(
            "model",
            lr=(lr, 1e-12, None),
            weight_decay=(weight_decay, 0, None),
            backbone_lr_scale=(backbone_lr_scale, 0, None),
            warmup_epochs=(warmup_epochs, 0, None),
            num_classes=(num_classes, 2, None),
            image_size=(image_size, 8, 4096),
            lie_penalty=(lie_penalty, 0, None),
        )
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        for part in modify.split("+") if modify else ():
            try:
                parse_surgery(part)
            except ValueError as err:
                raise ConfigError(f"--model.modify: {err}") from err
        self.model, self.data_config = create_backbone(
            model_name, pretrained=pretrained, modify=modify, num_classes=num_classes
        )
        self.model.train()  # create_backbone returns eval mode; Lightning keeps modules' modes
        if image_size is not None:
            self.data_config["input_size"] = (3, image_size, image_size)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()
        mean = torch.tensor(self.data_config["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(self.data_config["std"]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        if freeze_backbone:
            head = set(map(id, self.model.get_classifier().parameters()))
            for param in self.model.parameters():
                param.requires_grad_(id(param) in head)
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    @property
    def image_size(self) -> int:
        """Side of the square input the model expects (px)."""
        return int(self.data_config["input_size"][-1])

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | Checkpoint, **overrides: Any
    ) -> InvarianceClassifier:
        """Re-create a model from one of this project's checkpoints (a path, read with
        ``weights_only``, or a ``Checkpoint`` already read).

        The saved hyperparameters rebuild the architecture (without downloading pretrained
        weights), then the checkpoint's weights are loaded and checked key by key.
        """
        checkpoint = path if isinstance(path, Checkpoint) else load_checkpoint(path)
        if not checkpoint.hparams:
            raise BackboneError(
                f"{checkpoint.path} has no saved hyperparameters: it is not a checkpoint of "
                "train.py. Load plain state dicts with create_backbone(name, checkpoint=PATH)."
            )
        # LightningCLI adds bookkeeping entries (``_instantiator``, ``_class_path``): keep arguments.
        accepted = inspect.signature(cls.__init__).parameters
        hparams = {k: v for k, v in checkpoint.hparams.items() if k in accepted and k != "self"}
        hparams.update(pretrained=False, **overrides)
        module = cls(**hparams)
        load_checked_state_dict(module.model, checkpoint.state, f"checkpoint {checkpoint.path}")
        return module.eval()

    def normalize(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised with the backbone's mean and std."""
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> logits [B, num_classes]."""
        return self.model(self.normalize(images).contiguous(memory_format=self.memory_format))

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"label {int(labels.max())} is outside the model's {self.num_classes} classes: "
                "set num_classes to the data set's class count"
            )

    def setup(self, stage: str) -> None:
        """Stop before any step when the data's class count differs from the classifier's."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        expected = getattr(datamodule, "num_classes", None)
        if expected is not None and int(expected) != self.num_classes:
            raise DataMismatchError(
                f"the data has {expected} classes but the model was built with num_classes="
                f"{self.num_classes}: set model.num_classes: {expected} (--model.num_classes={expected})"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if len(batch["label"]) == 0:
            return None  # every image of the batch was unreadable (counted, warned)
        self._check_labels(batch["label"])
        size = len(batch["label"])
        weight = float(self.hparams.get("lie_penalty") or 0.0)
        if weight > 0:
            with recorded_batch_statistics(self.model) as statistics:
                logits = self(batch["image"])
            _, lie = self.translation_lie(batch["image"], statistics)
        else:
            logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        if weight > 0:
            loss = loss + weight * lie
            self.log("train/lie_softmax_translate", lie, batch_size=size)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}: lower the learning rate (lr={self.hparams.lr}) or check the data"
            )
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/acc", acc, prog_bar=True, batch_size=size)
        return loss

    def translation_lie(
        self, images: Tensor, statistics: BatchStatistics | None = None
    ) -> tuple[Tensor, Tensor]:
        """(logits [B, C], mean over images of ||d softmax / dt||^2) along a random direction of
        translation per image (``lie_penalty``), from one forward pass with dual tensors,
        differentiable in the weights.

        Batch norms normalise with ``statistics`` (``recorded_batch_statistics`` of the training
        pass over the same images: the function being trained, its primal output equal to the
        training logits, its gradient reaching the weights through the statistics too) or,
        without them, their running statistics (the test-time function); the tangent treats
        them as constants, and no statistics are updated. Along the tangent the batch's
        statistics would move too (every image of the batch moves): on digits that term made
        the derivative ~100x (fine-tuned) to ~4,000x (pretrained) the test-time value, a
        penalty on the coupling of the batch, not on the invariance of one image. A penalty
        on the test-time function beside a loss on the training-mode one drove test-time
        accuracy to chance (the first can be flattened while the second fits), and so did one
        whose statistics were detached from the weights (shrinking the weights before a batch
        norm lowers it; the normalisation undoes the shrinking, so it goes on until the test-time
        function, normalised by running statistics, no longer classifies)."""
        angle = torch.rand(len(images), 1, 1, 1, device=images.device) * (2 * math.pi)
        move = torch.cos(angle) * tangent(images, "translate_x") + torch.sin(angle) * tangent(
            images, "translate_y"
        )
        overrides = statistics_overrides(self, statistics) if statistics else {}
        # Dual tensors, not torch.func.jvp: function transforms refuse modules with buffers.
        with normalising_constantly(self.model), fwAD.dual_level():
            dual = functional_call(self, overrides, (fwAD.make_dual(images, move),))
            logits, derivative = fwAD.unpack_dual(dual)
        p = logits.float().softmax(-1)
        d = derivative.float()
        moved = p * (d - (p * d).sum(-1, keepdim=True))
        return logits, moved.pow(2).sum(-1).mean()

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        if len(batch["label"]) == 0:
            return
        self._check_labels(batch["label"])
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        top1, top5 = getattr(self, f"{stage}_top1"), getattr(self, f"{stage}_top5")
        top1.update(logits, batch["label"])
        top5.update(logits, batch["label"])
        size = len(batch["label"])
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size)
        self.log(f"{stage}/acc", top1, prog_bar=True, batch_size=size)
        self.log(f"{stage}/top5_acc", top5, batch_size=size)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Returns ``{"probs": [B, C], "top1": [B]}`` (plus ``label`` when the batch has one)."""
        probs = self(batch["image"]).softmax(-1)
        out = {"probs": probs, "top1": probs.argmax(-1)}
        if "label" in batch:
            out["label"] = batch["label"]
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        head_ids = set(map(id, self.model.get_classifier().parameters()))
        head = [p for p in self.model.parameters() if id(p) in head_ids and p.requires_grad]
        body = [p for p in self.model.parameters() if id(p) not in head_ids and p.requires_grad]
        groups = [{"params": head, "lr": hp.lr}]
        if body:
            groups.append({"params": body, "lr": hp.lr * hp.backbone_lr_scale})
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                groups, lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay
            )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        if hp.get("schedule_epochs"):
            total = max(1, round(hp.schedule_epochs * total / epochs))
            epochs = hp.schedule_epochs
        warmup = round(hp.warmup_epochs * total / epochs)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


BatchStatistics = dict[nn.Module, tuple[Tensor, Tensor]]


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextmanager
def recorded_batch_statistics(model: nn.Module) -> Iterator[BatchStatistics]:
    """Record, for every batch norm in training mode, the (mean, biased variance) per channel
    of its input in the passes run inside the block: what it normalises with. They stay in the
    autograd graph, so a loss computed with them reaches the weights through them too."""
    statistics: BatchStatistics = {}

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if module.training:
            x = args[0]
            dims = [0, *range(2, x.dim())]
            statistics[module] = (x.mean(dims), x.var(dims, unbiased=False))

    handles = [m.register_forward_pre_hook(record) for m in _batch_norms(model)]
    try:
        yield statistics
    finally:
        for handle in handles:
            handle.remove()


def statistics_overrides(module: nn.Module, statistics: BatchStatistics) -> dict[str, Tensor]:
    """Parameters and buffers, by name in ``module``, for ``torch.func.functional_call``: an
    eval-mode batch norm with these computes ``weight (x - mean) / sqrt(var + eps) + bias`` with
    its entry of ``statistics`` as one affine map per channel (running mean 0, running variance
    ``1 - eps``). Its input's tangent does not reach the statistics (constants along the
    transformation); its weights' gradient does (the training function's own dependence on
    them; with detached statistics a penalty could be lowered by shrinking the weights before a
    batch norm, which the normalisation then undoes)."""
    overrides: dict[str, Tensor] = {}
    for name, bn in module.named_modules():
        if bn not in statistics:
            continue
        mean, var = statistics[bn]
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        prefix = f"{name}." if name else ""
        overrides[f"{prefix}weight"] = scale
        overrides[f"{prefix}bias"] = shift
        overrides[f"{prefix}running_mean"] = torch.zeros_like(mean)
        overrides[f"{prefix}running_var"] = torch.full_like(var, 1.0 - bn.eps)
    return overrides


@contextmanager
def normalising_constantly(model: nn.Module) -> Iterator[None]:
    """Inside the block every batch norm is in eval mode (normalises with constants, updates
    no statistics); modes are restored after."""
    saved = [(bn, bn.training) for bn in _batch_norms(model)]
    for bn, _ in saved:
        bn.eval()
    try:
        yield
    finally:
        for bn, training in saved:
            bn.train(training)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
