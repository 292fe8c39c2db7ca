"""Bounding boxes from ImageNet's annotation layouts, with every problem reported, never raised.

Two layouts: PASCAL-VOC style XML files (``<size>``, ``<object><name>synset</name><bndbox>``),
searched recursively, and the ``LOC_train_solution.csv`` / ``LOC_val_solution.csv`` layout
(``ImageId,PredictionString`` with ``"synset xmin ymin xmax ymax ..."``) whose image sizes come
from the image files. Coordinates are pixels.
"""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lightning_inv.data.images import IMAGE_SUFFIXES, display_name


@dataclass(frozen=True)
class Box:
    """One object box in an image of ``width`` x ``height`` pixels (``x`` right, ``y`` down)."""

    image: str
    synset: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    width: int
    height: int


@dataclass(frozen=True)
class Problem:
    """An annotation that was skipped: the file (and image) and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return display_name(f"{self.file}: {self.reason}")


def _checked(box: Box, source: str) -> Box | Problem:
    if box.width <= 0 or box.height <= 0:
        return Problem(source, f"image size {box.width}x{box.height} is not positive")
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        return Problem(
            source, f"empty box {box.xmin},{box.ymin},{box.xmax},{box.ymax} ({box.synset})"
        )
    if box.xmin < 0 or box.ymin < 0 or box.xmax > box.width or box.ymax > box.height:
        return Problem(
            source,
            f"box {box.xmin:g},{box.ymin:g},{box.xmax:g},{box.ymax:g} ({box.synset}) lies outside "
            f"its {box.width}x{box.height} image",
        )
    return box


def index_images(root: Path | None) -> dict[str, Path]:
    """``{file stem: path}`` of the images under ``root`` (recursive); empty without a root."""
    if root is None:
        return {}
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(stem, Path(folder) / name)
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (the pixels are not decoded)."""
    with Image.open(path) as image:
        return image.size


def _size_from_images(stem: str, images: dict[str, Path]) -> tuple[int, int] | str:
    path = images.get(stem)
    if path is None:
        return (
            "no image size: the annotation has none and no image file matches (pass --images DIR)"
        )
    try:
        return image_size(path)
    except (OSError, UnidentifiedImageError) as err:
        return f"unreadable image {path}: {err}"


def read_voc_file(path: Path, images: dict[str, Path]) -> tuple[list[Box], list[Problem]]:
    """Boxes of one VOC XML file; the synset is each object's ``<name>``."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        return [], [Problem(str(path), f"malformed XML: {err}")]
    stem = Path(root.findtext("filename") or path.stem).stem
    try:
        width, height = int(root.findtext("size/width", "")), int(root.findtext("size/height", ""))
    except ValueError:
        size = _size_from_images(stem if stem in images else path.stem, images)
        if isinstance(size, str):
            return [], [Problem(str(path), size.replace("the annotation", "the XML"))]
        width, height = size
    boxes: list[Box] = []
    problems: list[Problem] = []
    for number, obj in enumerate(root.iter("object")):
        try:
            synset = (obj.findtext("name") or "").strip()
            coords = [
                float(obj.findtext(f"bndbox/{k}", "")) for k in ("xmin", "ymin", "xmax", "ymax")
            ]
        except ValueError:
            problems.append(Problem(str(path), f"object {number}: missing or non-numeric bndbox"))
            continue
        if not synset:
            problems.append(Problem(str(path), f"object {number}: no <name>"))
            continue
        checked = _checked(Box(stem, synset, *coords, width, height), str(path))
        (boxes if isinstance(checked, Box) else problems).append(checked)  # type: ignore[arg-type]
    return boxes, problems


def read_voc_folder(root: Path, image_root: Path | None = None) -> tuple[list[Box], list[Problem]]:
    """Every ``*.xml`` under ``root`` (recursive, sorted); sizes missing from an XML come from
    the image of the same name under ``image_root``."""
    if not root.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {root}")
    files = sorted(root.rglob("*.xml"))
    if not files:
        raise FileNotFoundError(f"no .xml annotation files under {root}")
    images = index_images(image_root)
    boxes: list[Box] = []
    problems: list[Problem] = []
    for path in files:
        file_boxes, file_problems = read_voc_file(path, images)
        boxes += file_boxes
        problems += file_problems
    return boxes, problems


def _parse_prediction_string(text: str) -> Iterable[tuple[str, list[float]]] | str:
    fields = text.split()
    if not fields or len(fields) % 5:
        return f"PredictionString has {len(fields)} fields, not groups of 5 (synset xmin ymin xmax ymax)"
    out = []
    for start in range(0, len(fields), 5):
        synset, *numbers = fields[start : start + 5]
        try:
            out.append((synset, [float(n) for n in numbers]))
        except ValueError:
            return f"non-numeric coordinates in {' '.join(fields[start : start + 5])!r}"
    return out


def read_loc_csv(path: Path, image_root: Path | None = None) -> tuple[list[Box], list[Problem]]:
    """Boxes of a ``LOC_*_solution.csv`` file; image sizes come from ``image_root``'s files
    (``<ImageId>.JPEG`` anywhere below it)."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    images = index_images(image_root)
    boxes: list[Box] = []
    problems: list[Problem] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: expected the columns ImageId,PredictionString, got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            source = f"{path}:{line} ({row['ImageId']})"
            parsed = _parse_prediction_string(row["PredictionString"] or "")
            if isinstance(parsed, str):
                problems.append(Problem(source, parsed))
                continue
            size = _size_from_images(row["ImageId"], images)
            if isinstance(size, str):
                problems.append(Problem(source, size))
                continue
            for synset, coords in parsed:
                checked = _checked(Box(row["ImageId"], synset, *coords, *size), source)
                (boxes if isinstance(checked, Box) else problems).append(checked)  # type: ignore[arg-type]
    return boxes, problems


def read_boxes(source: Path, image_root: Path | None = None) -> tuple[list[Box], list[Problem]]:
    """A folder of VOC XML files or a LOC CSV file, chosen by what ``source`` is."""
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_loc_csv(source, image_root)
    if source.is_dir():
        return read_voc_folder(source, image_root)
    raise FileNotFoundError(
        f"annotations not found: {source} (give a folder of VOC .xml files or a LOC_*_solution.csv)"
    )
