"""DataModules for ``train.py``: digits (offline), ImageNet-style folders, CIFAR-10.

Each yields batches ``{"image": [B, 3, S, S] in [0, 1], "label": [B], "index": [B], "name"}``,
augments only its training split (``Augmentation``, seeded per sample and epoch), knows its
``num_classes`` (the classifier must match) and offers ``invariance_dataset()``: the held-out
images that the invariance callbacks embed at random locations, with ``object_scale`` saying
how large the object is in a training image.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2

from lightning_inv.data.augment import (
    Augmentation,
    AugmentedDataset,
    EpochSeededSampler,
    build_transform,
)
from lightning_inv.data.datamodules import choose_subset
from lightning_inv.data.digits import NUM_DIGIT_CLASSES, CentredDigits, PlacedDigits, Placement
from lightning_inv.data.images import (
    LabelledImage,
    LabelledImageDataset,
    LabelMappingError,
    class_folders,
    collate_skipping,
    imagefolder_items,
    resolve_labels,
)
from lightning_inv.models.classifier import ConfigError, check_settings


class ClassificationDataModule(pl.LightningDataModule):
    """Shared loaders; subclasses build ``train_set``, ``val_set``, ``test_set``.

    Args:
        batch_size: images per batch (per process under DDP).
        num_workers: DataLoader workers.
        augmentation: training augmentation; ``None`` or all-off is the baseline.
        seed: seeds the shuffling and the augmentation (with the epoch and the sample index).
        max_train_images: a seeded subset of the training split (quick runs, tests).
    """

    num_classes: int
    image_size: int
    object_scale: float = 0.75

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        max_train_images: int | None = None,
    ) -> None:
        super().__init__()
        check_settings(
            "data",
            batch_size=(batch_size, 1, None),
            num_workers=(num_workers, 0, None),
            max_train_images=(max_train_images, 1, None),
        )
        if augmentation is not None and (problem := augmentation.problem("--data.augmentation")):
            raise ConfigError(problem)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augmentation = augmentation
        self.seed = seed
        self.max_train_images = max_train_images

    def train_set(self) -> Dataset:
        raise NotImplementedError

    def val_set(self) -> Dataset:
        raise NotImplementedError

    def test_set(self) -> Dataset:
        return self.val_set()

    def invariance_dataset(self) -> Dataset:
        """Held-out images whose object fills the frame (``RandomLocation`` re-embeds them)."""
        return self.test_set()

    def _loader(self, dataset: Dataset, train: bool = False) -> DataLoader:
        sampler = None
        if train:
            trainer = self.trainer
            sampler = EpochSeededSampler(
                dataset,
                num_replicas=trainer.world_size if trainer else 1,
                rank=trainer.global_rank if trainer else 0,
                shuffle=True,
                seed=self.seed,
            )
        # Each new iterator draws its workers' base seed from ``generator``, not from torch's
        # global one: Lightning creates the first trained epoch's iterator before a resumed run
        # restores the global state (RandomStateCheckpoint) and later ones after each epoch
        # starts, so a draw from the global state would shift dropout and lie_penalty's
        # directions after a resume.
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_skipping,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        base = choose_subset(self.train_set(), self.max_train_images, self.seed)
        transform = build_transform(self.augmentation, self.image_size)
        return self._loader(AugmentedDataset(base, transform, self.seed), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set())

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set())


class DigitsDataModule(ClassificationDataModule):
    """scikit-learn's digits, ``digit_size`` px, centred on a ``canvas`` px frame (offline).

    Train/val/test are 70/15/15 % of the 1,797 scans. ``invariance_dataset`` gives the test
    digits cropped tight (``digit_size`` px), which the callbacks place on the canvas.

    ``placement``: instead of centring them, put the training digits at a seeded random size and
    place (``Placement``: object scales and a canvas region), after ``augmentation`` has acted
    on the tight digit; the typicality study restricts it to part of the canvas. Validation and
    test digits stay centred at ``digit_size``.
    """

    num_classes = NUM_DIGIT_CLASSES

    def __init__(
        self,
        canvas: int = 64,
        digit_size: int = 32,
        placement: Placement | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.canvas = canvas
        self.digit_size = digit_size
        self.placement = placement
        self.image_size = canvas
        self.object_scale = digit_size / canvas if placement is None else sum(placement.scales) / 2
        # Saved in checkpoints, so evaluate.py places test digits where training put them.
        self.save_hyperparameters(
            {"placement_canvas": canvas, "placement_object_scale": self.object_scale}
        )
        CentredDigits("val", canvas, digit_size)  # validates the sizes now, not at fit time

    def train_set(self) -> Dataset:
        return CentredDigits("train", self.canvas, self.digit_size)

    def train_dataloader(self) -> DataLoader:
        if self.placement is None:
            return super().train_dataloader()
        tight = CentredDigits("train", self.digit_size, self.digit_size)
        base = choose_subset(tight, self.max_train_images, self.seed)
        augmented = AugmentedDataset(
            base, build_transform(self.augmentation, self.digit_size), self.seed
        )
        placed = PlacedDigits(augmented, self.canvas, self.placement, self.seed)
        return self._loader(placed, train=True)

    def val_set(self) -> Dataset:
        return CentredDigits("val", self.canvas, self.digit_size)

    def test_set(self) -> Dataset:
        return CentredDigits("test", self.canvas, self.digit_size)

    def invariance_dataset(self) -> Dataset:
        return CentredDigits("test", self.digit_size, self.digit_size)


class ImageFolderDataModule(ClassificationDataModule):
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet, Imagenette layout).

    ``labels``: ``imagenet`` maps synset folders to ImageNet-1k indices (``num_classes`` 1000),
    ``folders`` numbers the *training* folders in sorted order and gives every validation folder
    the index of the training folder of the same name (a validation class that training lacks is
    an error); ``auto`` picks ``imagenet`` when all training folders are synsets, ``folders``
    when none is, and refuses a mix. With ``random_resized_crop`` on, training images are loaded
    at ``image_size / 0.875`` and cropped; otherwise at ``image_size`` (timm's eval transform).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        train_dir: str = "train",
        val_dir: str = "val",
        labels: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        train_root = self.root / train_dir
        mode, _ = resolve_labels([f.name for f in class_folders(train_root)], labels)
        self.train_items, self.classes = imagefolder_items(train_root, mode)
        try:
            self.val_items, _ = imagefolder_items(
                self.root / val_dir, mode, self.classes if mode == "folders" else None
            )
        except LabelMappingError as err:
            raise LabelMappingError(f"{self.root / val_dir}: {err}") from err
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            raise ConfigError(
                f"{train_root} has {self.num_classes} class folder ({', '.join(self.classes)}): a "
                "classifier needs at least 2 classes; add the other classes' folders"
            )

    def train_set(self) -> Dataset:
        crop = self.augmentation is not None and self.augmentation.random_resized_crop is not None
        size = round(self.image_size / 0.875) if crop else self.image_size
        return LabelledImageDataset(self.train_items, size)

    def val_set(self) -> Dataset:
        return LabelledImageDataset(self.val_items, self.image_size)


class CIFAR10DataModule(ClassificationDataModule):
    """torchvision's CIFAR-10 (downloaded to ``root`` when missing: needs network), upsampled to
    ``image_size``. The test split serves validation and test."""

    num_classes = 10

    def __init__(
        self, root: str | Path = "data", image_size: int = 64, download: bool = True, **kwargs
    ):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.download = download

    def prepare_data(self) -> None:
        for train in (True, False):
            try:
                CIFAR10(str(self.root), train=train, download=self.download)
            except (RuntimeError, OSError) as err:  # not found / corrupt, or no network
                raise RuntimeError(
                    f"CIFAR-10 is not under {self.root} and could not be downloaded ({err}); "
                    "download it on a machine with network or set data.root"
                ) from err

    def _split(self, train: bool) -> Dataset:
        data = CIFAR10(str(self.root), train=train, download=False)
        return _TensorImages(data, self.image_size)

    def train_set(self) -> Dataset:
        return self._split(True)

    def val_set(self) -> Dataset:
        return self._split(False)


class _TensorImages(Dataset):
    """(PIL image, label) pairs -> ``{"image": [3, S, S] in [0, 1], "label", "index", "name"}``."""

    def __init__(self, data: Dataset, size: int) -> None:
        self.data = data
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(size, antialias=True),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.data[index]
        return {
            "image": self.transform(image),
            "label": int(label),
            "index": index,
            "name": str(index),
        }


__all__ = [
    "Augmentation",
    "CIFAR10DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "LabelledImage",
    "Subset",
]
