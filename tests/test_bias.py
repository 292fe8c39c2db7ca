"""Photographer's bias: readers report bad annotations; KS tests tell uniform from centred boxes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lightning_inv.studies.bias import BoxGeometry, analyse_categories, read_boxes, summarize
from lightning_inv.studies.bias.annotations import Box
from lightning_inv.studies.bias.synthetic import CENTRED, UNIFORM, write_example


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("bias"), boxes_per_category=150)


def test_geometry_follows_the_stated_nulls():
    # 100x50 image, box 20 wide at x 40..60: free room 80, left edge 40 -> u = 0.5.
    g = BoxGeometry.of([Box("a", "s", 40, 0, 60, 50, 100, 50)])
    assert g.u[0] == 0.5 and np.isnan(g.v[0])  # full height: no free room in y
    assert g.width[0] == 0.2 and g.height[0] == 1.0
    assert g.cx[0] == 0.5 and g.cy[0] == 0.5
    assert set(g.samples()["y_position"]) == set()


def test_uniform_boxes_pass_and_centred_boxes_fail(example):
    boxes, _ = read_boxes(example / "xml")
    by_synset = {c.synset: c for c in analyse_categories(boxes)}
    uniform, centred = by_synset[UNIFORM], by_synset[CENTRED]
    assert min(uniform.pvalues.values()) > 1e-3
    assert max(centred.pvalues.values()) < 1e-10
    assert centred.mean_cx == pytest.approx(0.5, abs=0.02)
    summary = summarize(list(by_synset.values()), alpha=1e-10)
    assert summary["tested_categories"] == 2
    assert summary["nonuniform_location"] == summary["nonuniform_size"] == 1
    assert summary["nonuniform_location_and_size"] == 1


def test_broken_xml_files_are_reported_and_skipped(example):
    boxes, problems = read_boxes(example / "xml")
    assert len(boxes) == 300
    reasons = {p.file.rsplit("/", 1)[-1]: p.reason for p in problems}
    assert set(reasons) == {"malformed.xml", "outside.xml", "nosize.xml"}
    assert "malformed XML" in reasons["malformed.xml"]
    assert "outside its 64x64 image" in reasons["outside.xml"]
    assert "no image size" in reasons["nosize.xml"]


def test_csv_layout_gives_the_same_boxes_with_sizes_from_the_images(example):
    xml_boxes, _ = read_boxes(example / "xml")
    csv_boxes, problems = read_boxes(example / "LOC_val_solution.csv", example / "images")
    assert sorted(csv_boxes, key=lambda b: b.image) == sorted(xml_boxes, key=lambda b: b.image)
    assert len(problems) == 1 and "missing_image" in problems[0].file
    _, problems = read_boxes(example / "LOC_val_solution.csv")  # no --images: every row reported
    assert len(problems) == 301 and "--images" in problems[0].reason


def test_malformed_prediction_strings_are_reported(tmp_path):
    path = tmp_path / "LOC.csv"
    path.write_text("ImageId,PredictionString\na,n01 1 2 3\nb,n01 1 2 x 4\n")
    boxes, problems = read_boxes(path, tmp_path)
    assert boxes == [] and len(problems) == 2
    assert "groups of 5" in problems[0].reason and "non-numeric" in problems[1].reason
    (tmp_path / "bad.csv").write_text("id,boxes\n")
    with pytest.raises(ValueError, match="ImageId,PredictionString"):
        read_boxes(tmp_path / "bad.csv", tmp_path)


def test_command_writes_results_and_figures(example, tmp_path, repo_root):
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_inv.studies.bias",
            str(example / "xml"),
            "--output",
            str(out),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "location 1 of 2, size 1 of 2, both 1 of 2 categories" in done.stdout
    assert "skipped" in done.stderr and "malformed.xml" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["skipped_annotations"] == 3
    assert results["categories"][CENTRED]["pvalues"]["x_position"] < 1e-10
    assert (out / "fig5_category.png").stat().st_size > 5000
    assert (out / "fig5_pvalues.png").stat().st_size > 5000
    missing = subprocess.run(
        [sys.executable, "-m", "lightning_inv.studies.bias", str(tmp_path / "nowhere")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "annotations not found" in missing.stderr
    assert not (tmp_path / "runs").exists()  # a refused run leaves no empty run folder


def test_a_size_missing_from_the_xml_is_read_from_the_image_file(example, tmp_path):
    from PIL import Image

    from lightning_inv.studies.bias.annotations import read_voc_file

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (20, 12)).save(images / "nosize.JPEG")
    from lightning_inv.studies.bias.annotations import index_images

    boxes, problems = read_voc_file(example / "xml/broken/nosize.xml", index_images(images))
    assert problems == [] and (boxes[0].width, boxes[0].height) == (20, 12)


def test_header_only_csv_and_a_bad_alpha_are_clear_errors(tmp_path, capsys):
    from lightning_inv.studies.bias.__main__ import main

    empty = tmp_path / "LOC_val_solution.csv"
    empty.write_text("ImageId,PredictionString\n")
    assert main([str(empty), "--images", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err
    assert "no usable boxes" in message and "hold no boxes" in message  # not "see above"
    assert main([str(empty), "--alpha", "2", "--output", str(tmp_path / "p")]) == 2
    assert "--alpha must be in (0, 1)" in capsys.readouterr().err


def test_whole_image_boxes_count_for_size_and_results_are_strict_json(tmp_path):
    """A category whose boxes all span their images has no location test (NaN p-values), but
    its size test still rejects. Before: the category was left out of every count, and
    results.json held bare NaN (not JSON). A VOC file whose name is not UTF-8 is reported
    in problems.txt (before: the command crashed writing it)."""
    import os

    from lightning_inv.studies.bias.__main__ import main
    from lightning_inv.studies.bias.synthetic import voc_xml

    folder = tmp_path / "xml"
    folder.mkdir()
    for i in range(12):
        (folder / f"full{i}.xml").write_text(
            voc_xml(f"full{i}", "n00000009", (0, 0, 64, 48, 64, 48))
        )
    with open(os.path.join(os.fsencode(folder), b"bad\xff.xml"), "w") as handle:
        handle.write("<annotation><object>")
    out = tmp_path / "run"
    assert main([str(folder), "--output", str(out), "--min-boxes", "5"]) == 0
    text = (out / "results.json").read_text(encoding="utf-8")
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    summary = results["summary"]
    assert summary["tested_location"] == 0 and summary["tested_size"] == 1
    assert summary["nonuniform_size"] == 1
    assert results["categories"]["n00000009"]["pvalues"]["x_position"] is None
    assert "bad\\xff.xml" in (out / "problems.txt").read_text(encoding="utf-8")
