"""The report pages: an evaluation's report.html opened in a real browser (headless Chromium),
the flip gallery's choice, the comparisons' highlighting, a training run's page and the
leaderboard across runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from wandb_records import records, run_file

from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.protocols import Translate
from lightning_inv.reporting.figures import ModelRun
from lightning_inv.reporting.leaderboard import LeaderboardError, entries, ranked
from lightning_inv.reporting.report import comparison_rows, flips
from lightning_inv.reporting.training_report import training_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets this: there the browser test must run, not skip (.ci/run installs Chromium).
REQUIRED = os.environ.get("LIGHTNING_INV_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("LIGHTNING_INV_TEST_ARTIFACTS", "test-artifacts"))


ROOT = Path(__file__).resolve().parents[1]
SWEEP = "fig2_translate_inpaint"  # the 33-view sweep the gallery and the sorting are checked on
MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite0:blurpool")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> Path:
    """One offline evaluation for the page, W&B and dashboard tests: two Lite0 models (plain,
    BlurPool) at 96 px on 2 photos through the default presets table1, fig2 and fig6, logged to
    W&B offline (no credentials: the environment is cleared of them)."""
    out = tmp_path_factory.mktemp("evaluation") / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_SERVICE")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    flags = ["--models", *MODELS, "--image-size", "96", "--num-images", "2"]
    flags += ["--experiment", "table1", "fig2", "fig6", "--no-nonshiftability"]
    flags += ["--resamples", "50", "--accelerator", "cpu", "--devices", "1"]
    flags += ["--logger", "wandb", "--figures", "--output", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in done.stdout
    return out


def _flipping(out: Path) -> set[tuple[str, str, str]]:
    """(model, protocol, image) whose top-1 differs between two neighbouring views, from
    per_image.csv (the views of each image in sweep order)."""
    views: dict[tuple[str, str, str], list[str]] = {}
    with (out / "per_image.csv").open() as handle:
        for row in csv.DictReader(handle):
            views.setdefault((row["model"], row["protocol"], row["image"]), []).append(row["top1"])
    return {k for k, t in views.items() if any(map(str.__ne__, t[:-1], t[1:]))}


@pytest.mark.slow
def test_report_page_shows_the_numbers_images_and_sorts_in_a_browser(evaluation, tmp_path):
    """Catches a page that needs the network or files beside it (an image that does not load
    from the page alone), a table cell that is not results.json's number, a gallery whose
    count is not the images whose top-1 flips between neighbouring views, and sorting that
    does not reorder the rows."""
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("LIGHTNING_INV_REQUIRE_BROWSER=1 but no chromium: apt-get install chromium")
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    results = json.loads((evaluation / "results.json").read_text())
    flipping = _flipping(evaluation)
    per_model = {m: sum(1 for f in flipping if f[:2] == (m, SWEEP)) for m in MODELS}
    assert sum(per_model.values()) > 0  # the gallery has something to show
    shown = sum(min(sum(1 for f in flipping if f[:2] == k), 6) for k in {f[:2] for f in flipping})
    # The page alone, in another folder: nothing it shows may come from beside it.
    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    shutil.copy(evaluation / "report.html", alone)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(alone.as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        figures = len(list((evaluation / "figures").glob("*.png")))
        assert page.evaluate("document.images.length") == figures + 2 * shown and broken == 0
        assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
        # The measures table: one row per protocol and measure, a column per model.
        table = page.locator("section", has=page.locator("h2", has_text="Measures")).locator(
            "table"
        )
        cells = table.evaluate(
            "t => Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        headers = table.evaluate("t => Array.from(t.tHead.rows[0].cells).map(c => c.textContent)")
        for model, protocols in results["models"].items():
            for key in (SWEEP, "table1_black_s1.6"):
                row = next(
                    r for r in cells if r[0].startswith(key + " ") and r[1] == "p_top1_change"
                )
                value = protocols[key]["p_top1_change"]
                low, high = protocols[key]["p_top1_change_ci95"]
                assert row[headers.index(model)] == f"{value:.3f} [{low:.3f}, {high:.3f}]"
        for model, count in per_model.items():
            if count:
                assert page.get_by_text(f"{SWEEP}, {model}: {count} of 2 images").count() == 1
        # Sorting: the sweep's per-image table, by the first model's count of top-1 changes.
        per_image = page.locator(f"h3:text-is('{SWEEP}') + table").last
        heading = per_image.locator("th", has_text="top-1 changes").first
        read = "t => Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[2].textContent))"
        heading.click()
        assert heading.get_attribute("aria-sort") == "descending"
        column = per_image.evaluate(read)
        assert column == sorted(column, reverse=True) and len(column) == 2
        heading.click()
        assert heading.get_attribute("aria-sort") == "ascending"
        assert per_image.evaluate(read) == sorted(column)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()


def _result(top1: list[list[int]], p_true: list[list[float]]) -> ProtocolResult:
    n = len(top1)
    return ProtocolResult(
        protocol=Translate(canvas=32, max_shift=2),
        indices=np.arange(n),
        labels=np.zeros(n, dtype=np.int64),
        values={},
        p_true=np.array(p_true, dtype=np.float32),
        top1=np.array(top1, dtype=np.int32),
    )


def test_flips_pick_the_neighbouring_pair_with_the_largest_drop():
    """Catches the first flip instead of the largest, a pair of views that are not neighbours
    (views 0 and 4 differ in image 2 but never flip between neighbours) and images whose top-1
    never changes."""
    result = _result(
        [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [3, 3, 4, 4, 4]],
        [
            [0.6, 0.5, 0.4, 0.1, 0.9],  # flips at 0-1 (drop 0.1) and 2-3 (0.3): view 2
            [0.9, 0.1, 0.9, 0.1, 0.9],  # no flip, however much P(true) moves
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.2, 0.2, 0.25, 0.2, 0.2],  # flips at 1-2, change 0.05
        ],
    )
    assert flips(result) == [(0, 2, pytest.approx(0.3)), (3, 1, pytest.approx(0.05))]


def test_the_comparison_table_keeps_the_most_jagged_images_when_it_must_cut(monkeypatch):
    """At scale the W&B table keeps ``TABLE_IMAGES`` images per protocol, those with the most
    top-1 changes (over models): catches the first images in data order, a cap that is not
    applied, and the count of one model taken for all."""
    from lightning_inv.reporting import comparison_table

    monkeypatch.setattr(comparison_table, "TABLE_IMAGES", 2)
    monkeypatch.setattr(comparison_table, "TABLE_FLIPS", 0)  # no views made again
    still = [0, 0, 0, 0, 0]
    first = _result([still, [0, 1, 0, 1, 1], still, [0, 1, 0, 0, 0]], [[0.5] * 5] * 4)
    second = _result([still, still, [0, 1, 0, 1, 0], [0, 1, 0, 1, 0]], [[0.5] * 5] * 4)
    protocol = first.protocol
    runs = [
        ModelRun(name, {}, {protocol.key: result}, [protocol], None)  # type: ignore[arg-type]
        for name, result in (("a", first), ("b", second))
    ]
    columns, rows = comparison_table.comparison_rows(runs, str, str)
    changes = [columns.index("a top1_changes"), columns.index("b top1_changes")]
    assert [(r[0], [r[c] for c in changes]) for r in rows] == [("2", [0, 4]), ("3", [2, 4])]


def test_a_comparison_is_highlighted_only_when_its_interval_excludes_zero():
    """Catches ``>=``/``<=`` (an interval ending at 0 does not exclude it) and a sign error."""
    rows = comparison_rows(
        {
            "a - b": {
                "translate": {
                    "p_top1_change": {"difference": 0.1, "ci95": [0.02, 0.2]},
                    "mac": {"difference": 0.05, "ci95": [0.0, 0.1]},
                    "mad": {"difference": -0.2, "ci95": [-0.3, -0.01]},
                    "lie": {"difference": None, "ci95": [None, None]},  # NaN in strict JSON
                }
            }
        }
    )
    marked = {r[2].content: "notable" in r[3].css for r in rows}
    assert marked == {"p_top1_change": True, "mac": False, "mad": True, "lie": False}


def _evaluation_folder(folder: Path, values: dict[str, float], complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    models = {
        name: {
            "translate": {
                "p_top1_change": v,
                "p_top1_change_ci95": [v - 0.01, v + 0.01],
                "accuracy": 1 - v,
                "num_images": 20,
            }
        }
        for name, v in values.items()
    }
    results = {"complete": complete, "config": {"data": "imagenet_val"}, "models": models}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_leaderboard_ranks_across_runs_in_the_measure_s_direction(tmp_path, repo_root):
    """Catches ranking change counts highest first (less is more invariant), accuracy lowest
    first, a run's models dropped, and an interrupted run ranked as if complete."""
    one = _evaluation_folder(tmp_path / "one", {"a": 0.05, "b": 0.02})
    two = _evaluation_folder(tmp_path / "two", {"c": 0.03})
    found = entries([one, two], "translate/p_top1_change")
    assert [e.model for e in ranked(found, ascending=True)] == ["b", "c", "a"]
    found = entries([one, two], "translate/accuracy")
    assert [e.model for e in ranked(found, ascending=False)] == ["b", "c", "a"]
    stopped = _evaluation_folder(tmp_path / "stopped", {"d": 0.0}, complete=False)
    with pytest.raises(LeaderboardError, match="--resume"):
        entries([stopped], "translate/p_top1_change")
    with pytest.raises(LeaderboardError, match="translate/p_top1_change"):
        entries([one], "translate/nope")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_inv.report",
            str(tmp_path / "[ot]*"),
            "--output",
            str(tmp_path / "board"),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with (tmp_path / "board" / "leaderboard.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [(r["rank"], r["model"]) for r in table] == [("1", "b"), ("2", "c"), ("3", "a")]
    assert float(table[0]["ci95_low"]) == pytest.approx(0.01)
    assert "translate/p_top1_change" in (tmp_path / "board" / "leaderboard.html").read_text()


def test_training_page_has_a_curve_per_measure_and_the_newest_figures(tmp_path):
    """Catches a page drawn from the first epoch's figure instead of the newest and a measure
    without its curve."""
    history = [
        {
            "stage": "fit",
            "epoch": e,
            "step": 10 * e,
            "a_set/accuracy": 0.5 + 0.1 * e,
            "a_set/mac": 0.2,
        }
        for e in range(3)
    ]
    (tmp_path / "invariance_history.json").write_text(json.dumps({"history": history}))
    figures = tmp_path / "figures"
    figures.mkdir()
    for epoch, size in ((0, 2), (2, 3)):
        from PIL import Image

        Image.new("RGB", (size, size)).save(figures / f"heatmap_epoch{epoch:03d}.png")
    page = training_report(tmp_path).read_text()
    assert "accuracy (a_set)" in page and "mac (a_set)" in page and "Epoch 2" in page
    assert page.count("<img") == 1 and "heatmap_epoch002" in page


def _wandb_runs(out: Path) -> dict[str, tuple[object, Path]]:
    runs = {}
    for folder in (out / "wandb").glob("offline-run-*"):
        (run,) = [r.run for r in records(run_file(folder)) if r.HasField("run")]
        runs[run.display_name] = (run, folder)
    return runs


@pytest.mark.slow
def test_wandb_gets_one_comparison_table_across_models_with_the_flips(evaluation):
    """Catches a table per model instead of one across models (W&B's table tools then cannot
    join them on the image), rows missing an image or a protocol, flip images on images whose
    top-1 never flips, and evaluation runs without their job type."""
    runs = _wandb_runs(evaluation)
    assert set(runs) == {*MODELS, "comparison"}
    assert {run.job_type for run, _ in runs.values()} == {"evaluate"}
    assert len({run.run_group for run, _ in runs.values()}) == 1
    (table_file,) = runs["comparison"][1].glob("files/media/table/comparison_*.table.json")
    table = json.loads(table_file.read_text())
    columns, rows = table["columns"], table["data"]
    assert columns[:3] == ["image", "label", "protocol"] and "flip" in columns
    with (evaluation / "per_image.csv").open() as handle:
        pairs = {(r["image"], r["protocol"]) for r in csv.DictReader(handle)}
    assert sorted((r[0], r[2]) for r in rows) == sorted(pairs) and len(rows) == len(pairs)
    flip = columns.index("flip")
    flipping = {(f[2], f[1]) for f in _flipping(evaluation)}
    assert {(r[0], r[2]) for r in rows if r[flip]} == flipping and flipping
    changes = columns.index("tf_efficientnet_lite0 top1_changes")
    assert all(isinstance(r[changes], int) for r in rows)


def _summary_keys(folder: Path) -> set[str]:
    return {
        item.key or "/".join(item.nested_key)
        for r in records(run_file(folder))
        if r.HasField("summary")
        for item in r.summary.update
    }


@pytest.mark.slow
def test_every_dashboard_panel_reads_keys_that_evaluations_log(evaluation, tmp_path):
    """Catches a panel whose key the runs never log (a renamed protocol, a Table 1 size written
    0.7000000000000001, a measure that moved): each bar panel's keys are in the summary of the
    offline evaluation of the default presets; offline, the command writes the definition."""
    from lightning_inv.reporting.dashboard import build_report, definition

    (_, folder) = _wandb_runs(evaluation)[MODELS[0]]
    logged = _summary_keys(folder)
    spec = definition("lightning-inv")
    bars = [p for s in spec["sections"] for p in s["panels"] if p["kind"] == "bar"]
    missing = [sorted(set(p["keys"]) - logged) for p in bars]
    assert bars and not any(missing), missing
    report = build_report(spec)  # the objects only: saving needs W&B's API
    assert len(report.blocks) == 3 * len(spec["sections"])
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_inv.dashboard",
            *("--project", "p"),
            "--output",
            str(tmp_path / "d.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "WANDB_MODE": "offline"},
    )
    written = json.loads((tmp_path / "d.json").read_text())
    assert done.returncode == 0 and written == json.loads(json.dumps(definition("p")))


def test_published_values_are_shown_beside_ours_with_the_verdict():
    """The ``<preset>_published`` rows as ``beside_published`` writes them (strings beside the
    groups): catches a verdict inverted, and a crash on the row's text entries."""
    from lightning_inv.reporting.report import published_section

    row = {
        "weights": "resnet50.tv_in1k",
        "paper_name": "ResNet50",
        "source": "Table 1",
        "combination": "mean over sizes",
        "crop": {
            "p_top1_change": {"published": 0.11, "ours": 0.08, "ci95": [0.05, 0.12], "inside": True}
        },
        "black": {
            "p_top1_change": {
                "published": 0.25,
                "ours": 0.14,
                "ci95": [0.10, 0.18],
                "inside": False,
            }
        },
    }
    page = published_section({"table1_published": {"resnet50": row}, "models": {}})
    assert page.count("<tr>") == 3  # header + crop + black
    assert "inside" in page and "OUTSIDE" in page and 'class="num outside"' in page
    assert "0.250" in page and "0.140" in page
