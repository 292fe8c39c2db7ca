"""Labelled image files as tensors in [0, 1], with unreadable files skipped and counted.

Images are prepared as timm's eval transform does (resize the shorter side to
``size / crop_pct``, centre crop ``size``) but *not* normalised: the transformation engine works on
[0, 1] RGB and the model normalises (``InvarianceClassifier``). With ``keep_original`` a sample
also holds the original photo (``original``, [3, h, w] in [0, 1], its longer side capped at
``MAX_ORIGINAL_SIDE``) for the protocols that crop from it (docs/design.md, "Data").
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import ImageNetInfo
from timm.data.transforms_factory import transforms_imagenet_eval
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")
MAX_ORIGINAL_SIDE = 1024  # px; ImageNet photos (~500 px) are kept as they are
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (about 0.25 GB as RGB)
EXIF_ORIENTATION = ("ignore", "apply")


def display_name(name: str) -> str:
    """A file name as text every output can hold: names are bytes on disk, and a name that is not
    valid UTF-8 reaches Python with surrogate escapes, which no UTF-8 file or terminal accepts;
    each such byte is written as ``\\xNN`` (``ab\\xff.jpg``). Valid names are unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode Pillow reads -> 8-bit RGB. 16- and 32-bit greyscale (``I;16``, ``I``) are scaled
    from their bit depth (a plain ``convert`` clips them to white); palette, LA, RGBA and CMYK
    go through Pillow's own conversion (alpha dropped)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def original_tensor(image: Image.Image, max_side: int = MAX_ORIGINAL_SIDE) -> torch.Tensor:
    """An RGB photo -> float [3, h, w] in [0, 1], the longer side at most ``max_side`` px."""
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BICUBIC,
            reducing_gap=None,
        )
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


@dataclass(frozen=True)
class LabelledImage:
    """A file and its class index; ``name`` identifies it in results (relative path or sample name)."""

    path: Path
    label: int
    name: str


def eval_transform(
    size: int,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    crop_mode: str | None = None,
) -> v2.Compose:
    """PIL image -> float tensor [3, size, size] in [0, 1]: timm's own eval resize and crop
    (``transforms_imagenet_eval``: shorter side to ``floor(size / crop_pct)``, ``crop_mode``),
    without its normalisation (the model normalises)."""
    timm_eval = transforms_imagenet_eval(
        size, crop_pct=crop_pct, crop_mode=crop_mode, interpolation=interpolation, normalize=False
    )
    return v2.Compose([timm_eval, v2.ToDtype(torch.float32, scale=True)])


EXIF_ORIENTATION_TAG = 0x0112
_rotated_warned = False


def _warn_rotated(path: Path) -> None:
    """Once per process: a photo carries an EXIF rotation that is being ignored."""
    global _rotated_warned
    _rotated_warned = True
    warnings.warn(
        f"{path.name} (and perhaps others) has an EXIF orientation tag: it is measured as stored, "
        "as torchvision and timm load it; pass --exif-orientation apply to measure photos as "
        "a person sees them",
        stacklevel=3,
    )


class ImageTooLarge(ValueError):
    """An image with more pixels than the limit (a decompression bomb, or a scan far larger
    than a photo): skipped and named like an unreadable one."""


class LabelledImageDataset(Dataset):
    """Yields ``{"image": [3, S, S] in [0, 1], "label", "index", "name"}``; ``None`` if unreadable.

    ``max_pixels``: images with more pixels are skipped unread (their header says the size), so
    one decompression bomb (a 30000 x 30000 PNG of 855 KB) cannot exhaust the memory of a run.
    ``exif_orientation``: ``ignore`` measures a photo as stored, as torchvision's and timm's
    loaders (and every reference script) do; ``apply`` rotates it as its EXIF orientation tag
    says, as a person sees it (phone photos)."""

    def __init__(
        self,
        items: Sequence[LabelledImage],
        size: int,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        keep_original: bool = False,
        crop_mode: str | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
        exif_orientation: str = "ignore",
    ) -> None:
        if exif_orientation not in EXIF_ORIENTATION:
            raise ValueError(
                f"exif_orientation must be one of {', '.join(EXIF_ORIENTATION)}, got {exif_orientation!r}"
            )
        self.items = list(items)
        self.transform = eval_transform(size, crop_pct, interpolation, crop_mode)
        self.keep_original = keep_original
        self.max_pixels = max_pixels
        self.exif_orientation = exif_orientation

    def __len__(self) -> int:
        return len(self.items)

    def _open(self, path: Path) -> Image.Image:
        """The decoded RGB image; ``ImageTooLarge`` before decoding one above ``max_pixels``."""
        Image.MAX_IMAGE_PIXELS = max(self.max_pixels, MAX_IMAGE_PIXELS)  # our check decides
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                pixels = img.width * img.height
                if pixels > self.max_pixels:
                    raise ImageTooLarge(
                        f"{img.width} x {img.height} = {pixels:,} pixels, more than the limit of "
                        f"{self.max_pixels:,} (a decompression bomb?); raise it with "
                        "--max-image-pixels if the image is real"
                    )
                if self.exif_orientation == "apply":
                    return to_rgb(ImageOps.exif_transpose(img))
                if not _rotated_warned and img.getexif().get(EXIF_ORIENTATION_TAG, 1) != 1:
                    _warn_rotated(path)
                return to_rgb(img)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        sample: dict[str, Any] = {"label": item.label, "index": index, "name": item.name}
        try:
            rgb = self._open(item.path)
            sample["image"] = self.transform(rgb)
            if self.keep_original:
                sample["original"] = original_tensor(rgb)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            warnings.warn(f"skipping unreadable image {item.name}: {err}", stacklevel=2)
            return {**sample, "image": None, "reason": f"{type(err).__name__}: {err}"}
        return sample


def collate_skipping(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable samples; the names of unreadable ones go to ``batch["skipped"]`` (with
    their reasons in ``batch["skip_reasons"]``); original photos stay a list (any sizes)."""
    good = [s for s in samples if s["image"] is not None]
    skipped = [s["name"] for s in samples if s["image"] is None]
    reasons = [s.get("reason", "unreadable") for s in samples if s["image"] is None]
    if not good:
        return {
            "image": torch.empty(0, 3, 1, 1),
            "label": torch.empty(0, dtype=torch.long),
            "index": torch.empty(0, dtype=torch.long),
            "name": [],
            "skipped": skipped,
            "skip_reasons": reasons,
        }
    batch = {
        "image": torch.stack([s["image"] for s in good]),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "name": [s["name"] for s in good],
        "skipped": skipped,
        "skip_reasons": reasons,
    }
    if all("original" in s for s in good):
        batch["original"] = [s["original"] for s in good]
    return batch


LABEL_MODES = ("auto", "imagenet", "folders")


class LabelMappingError(ValueError):
    """The class folders and the requested label mapping do not fit (never guessed)."""


def class_folders(root: Path) -> list[Path]:
    """The sorted class folders of ``root``; errors name the expected layout."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root not found: {root} (expected <root>/<class>/<image files>)"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(
            f"no class folders in {root} (expected <root>/<class>/<image files>)"
        )
    return folders


def resolve_labels(
    names: Sequence[str], labels: str = "auto", classes: Sequence[str] | None = None
) -> tuple[str, dict[str, int]]:
    """The mapping used (``imagenet`` or ``folders``) and the class index of each folder name.

    ``imagenet``: every folder must be an ImageNet-1k synset (``n01440764``), mapped to its
    index in the 1000-class order. ``folders``: sorted folder order, or the position in
    ``classes`` when given (so train and val share one index). ``auto``: ``imagenet`` when every
    folder is a synset, ``folders`` when none is; a mix is refused with the offending names,
    since either guess would score some images against the wrong class.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    synset_index = {s: i for i, s in enumerate(ImageNetInfo().label_names())}
    others = [n for n in names if n not in synset_index]
    if labels == "auto":
        if others and len(others) < len(names):
            raise LabelMappingError(
                f"{len(names) - len(others)} class folders are ImageNet synsets but these are "
                f"not: {', '.join(others[:10])}{' ...' if len(others) > 10 else ''}. Remove them "
                "(or point the data root at the folder that holds the class folders, e.g. val/), "
                "or choose the mapping: --labels imagenet or --labels folders"
            )
        labels = "folders" if others else "imagenet"
    if labels == "imagenet":
        if others:
            raise LabelMappingError(
                f"--labels imagenet needs synset folders (n01440764, ...); these are not: "
                f"{', '.join(others[:10])}{' ...' if len(others) > 10 else ''}"
            )
        return "imagenet", {n: synset_index[n] for n in names}
    order = list(classes) if classes is not None else sorted(names)
    unknown = [n for n in names if n not in order]
    if unknown:
        raise LabelMappingError(
            f"class folders {', '.join(unknown)} are not among the {len(order)} training "
            f"classes ({', '.join(order[:10])}{' ...' if len(order) > 10 else ''})"
        )
    return "folders", {n: order.index(n) for n in names}


def imagefolder_items(
    root: str | Path, labels: str = "auto", classes: Sequence[str] | None = None
) -> tuple[list[LabelledImage], list[str]]:
    """Scan ``root/<class>/<image>``; returns (items, class names by index).

    The label mapping is decided by ``resolve_labels`` (ImageNet synsets onto the 1000-class
    order, or folder order); the class names are the 1000 synsets or the folder names.
    """
    root = Path(root)
    folders = class_folders(root)
    mode, mapping = resolve_labels([f.name for f in folders], labels, classes)
    if mode == "imagenet":
        names = list(ImageNetInfo().label_names())
    else:
        names = list(classes) if classes is not None else sorted(mapping, key=mapping.__getitem__)
    items = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and (path.is_file() or path.is_symlink()):
                name = display_name(str(path.relative_to(root)))
                items.append(LabelledImage(path, mapping[folder.name], name))
    if not items:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return items, names
