"""Synthetic annotation files with a known answer, for tests and the example in docs/results.md.

``write_example(root)`` writes, under ``root``:

* ``xml/<synset>/<image>.xml``: VOC-style files for two categories: ``n00000001`` with boxes drawn
  uniformly (as the nulls state) and ``n00000002`` with small-spread boxes at the image centre
  (a photographer's bias); plus three broken files (malformed XML, a box outside its image, no size).
* ``LOC_val_solution.csv`` and ``images/``: the same boxes in the CSV layout with small blank
  images that carry the sizes, plus a row whose image is missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

UNIFORM, CENTRED = "n00000001", "n00000002"


def draw_boxes(
    rng: np.random.Generator, n: int, centred: bool
) -> list[tuple[int, int, int, int, int, int]]:
    """``n`` boxes ``(xmin, ymin, xmax, ymax, W, H)`` in pixels, uniform under the nulls or centred."""
    boxes = []
    for _ in range(n):
        W, H = (int(s) for s in rng.integers(60, 120, size=2))
        if centred:
            w, h = round(W * rng.uniform(0.45, 0.55)), round(H * rng.uniform(0.45, 0.55))
            x = round((W - w) / 2 + rng.normal(0, 1))
            y = round((H - h) / 2 + rng.normal(0, 1))
        else:
            w, h = max(1, round(W * rng.uniform(0, 1))), max(1, round(H * rng.uniform(0, 1)))
            x, y = round(rng.uniform(0, W - w)), round(rng.uniform(0, H - h))
        boxes.append((x, y, x + w, y + h, W, H))
    return boxes


def voc_xml(image: str, synset: str, box: tuple[int, ...], with_size: bool = True) -> str:
    xmin, ymin, xmax, ymax, W, H = box
    size = (
        f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>" if with_size else ""
    )
    return (
        f"<annotation><folder>{synset}</folder><filename>{image}</filename>{size}"
        f"<object><name>{synset}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>\n"
    )


def write_example(root: Path, boxes_per_category: int = 200, seed: int = 0) -> Path:
    """Write the example annotations under ``root`` (see the module docstring); returns ``root``."""
    rng = np.random.default_rng(seed)
    rows = []
    for synset, centred in ((UNIFORM, False), (CENTRED, True)):
        folder = root / "xml" / synset
        folder.mkdir(parents=True, exist_ok=True)
        for i, box in enumerate(draw_boxes(rng, boxes_per_category, centred)):
            image = f"{synset}_{i}"
            (folder / f"{image}.xml").write_text(voc_xml(image, synset, box))
            rows.append((image, synset, box))
    broken = root / "xml" / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "malformed.xml").write_text("<annotation><object><name>n00000001</name>")
    (broken / "outside.xml").write_text(voc_xml("outside", UNIFORM, (10, 10, 90, 50, 64, 64)))
    (broken / "nosize.xml").write_text(
        voc_xml("nosize", UNIFORM, (1, 1, 5, 5, 0, 0), with_size=False)
    )
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    with (root / "LOC_val_solution.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for image, synset, (xmin, ymin, xmax, ymax, W, H) in rows:
            Image.new("L", (W, H)).save(images / f"{image}.JPEG")
            writer.writerow([image, f"{synset} {xmin} {ymin} {xmax} {ymax} "])
        writer.writerow(["missing_image", f"{UNIFORM} 1 1 5 5"])
    return root
