"""Lightning DataModules for evaluation (any labelled image set) and the offline data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_inv.data.digits import CentredDigits
from lightning_inv.data.images import (
    MAX_IMAGE_PIXELS,
    LabelledImage,
    LabelledImageDataset,
    collate_skipping,
    imagefolder_items,
)
from lightning_inv.data.samples import SAMPLE_PHOTOS, imagenet_index, imagenet_val_photos

EVAL_DATASETS = ("sample", "imagenet_val", "imagefolder", "digits")


def imagenet_val_items() -> list[LabelledImage]:
    """The 20 ImageNet validation photos of the foolbox wheel, with ImageNet's own labels."""
    return [LabelledImage(path, label, name) for name, path, label in imagenet_val_photos()]


def sample_items() -> list[LabelledImage]:
    """The offline default: the 7 shipped photos (``samples.SAMPLE_PHOTOS``, labels given by a
    person) followed by the 20 ImageNet validation photos: 27 real photos."""
    people = [LabelledImage(p.path, imagenet_index(p.synset), p.name) for p in SAMPLE_PHOTOS]
    return people + imagenet_val_items()


def choose_subset(dataset: Dataset, num_images: int | None, seed: int = 0) -> Dataset:
    """A seeded choice of ``num_images`` items (all of them when None or larger than the set)."""
    total = len(dataset)
    if num_images is None or num_images >= total:
        return dataset
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=num_images, replace=False))
    return Subset(dataset, chosen.tolist())


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The data set under any ``Subset`` layers and, for each position of ``dataset``, the
    index in it (the ``"index"`` a sample reports), without reading any item."""
    if isinstance(dataset, Subset):
        base, inner = unwrap(dataset.dataset)
        return base, [inner[i] for i in dataset.indices]
    return dataset, list(range(len(dataset)))  # type: ignore[arg-type]


def build_eval_dataset(
    name: str,
    size: int,
    root: str | Path | None = None,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    num_images: int | None = None,
    seed: int = 0,
    keep_original: bool = False,
    crop_mode: str | None = None,
    labels: str = "auto",
    max_pixels: int = MAX_IMAGE_PIXELS,
    exif_orientation: str = "ignore",
) -> Dataset:
    """Evaluation images as [3, size, size] in [0, 1] with labels and indices (and the original
    photos with ``keep_original``).

    ``sample``: the 27 offline photos (ImageNet labels); ``imagenet_val``: their 20 ImageNet
    validation photos; ``imagefolder``: ``root/<class>/*`` with ``labels`` deciding the class
    indices (``lightning_inv.data.images.resolve_labels``);
    ``digits``: scikit-learn's test digits, cropped tight to ``size`` px (10 classes); the
    protocols place them (``Translate(scale=0.5)`` puts one where ``DigitsDataModule`` trains it).
    ``max_pixels`` and ``exif_orientation``: see ``LabelledImageDataset``.
    """
    photos = {
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "keep_original": keep_original,
        "crop_mode": crop_mode,
        "max_pixels": max_pixels,
        "exif_orientation": exif_orientation,
    }
    if name == "sample":
        dataset: Dataset = LabelledImageDataset(sample_items(), size, **photos)
    elif name == "imagenet_val":
        dataset = LabelledImageDataset(imagenet_val_items(), size, **photos)
    elif name == "imagefolder":
        if root is None:
            raise ValueError("data 'imagefolder' needs a root folder (--data-root DIR)")
        items, _ = imagefolder_items(root, labels)
        dataset = LabelledImageDataset(items, size, **photos)
    elif name == "digits":
        # Cropped tight, like DigitsDataModule.invariance_dataset(): the protocols place the digit,
        # so "object scale" means digit side / canvas everywhere (training digits: 0.5).
        dataset = CentredDigits("test", canvas=size, digit_size=size)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(EVAL_DATASETS)}")
    return choose_subset(dataset, num_images, seed)


class EvalDataModule(pl.LightningDataModule):
    """Serves a data set to ``Trainer.test`` in order; under DDP each rank gets a disjoint share
    and no image is repeated (so sums over ranks are exact)."""

    def __init__(self, dataset: Dataset, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def test_dataloader(self) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                self.dataset,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=False,
            )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
