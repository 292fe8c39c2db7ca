"""evaluate.py at scale: wall time, images/s and peak memory over a folder of 1,000 and 10,000 JPEGs.

    python benchmarks/scale_run.py [--sizes 1000 10000] [--model test_efficientnet]
        [--image-size 64] [--experiment fig6] [--folder /tmp/lightning_inv_scale]
        [-- EXTRA evaluate.py FLAGS]

Makes (once, then reuses) a synthetic ImageNet-like folder: ``--classes`` class folders of JPEGs
whose sides are drawn from 300-500 px (smooth random colour fields, about 20 KB each), then runs
``evaluate.py --data imagefolder --labels folders`` on the first N of them for each N, each in a
fresh process, and reports per N: wall seconds, images/s, peak resident memory of the largest
process (MiB), the size of the per-image result arrays (``results.npz``, bytes per image), and
``timing``: evaluate.py's own record of the run (results.json: seconds until the first batch,
the first batch, images/s and views/s after it, peak host and device memory; docs/speed.md).
Memory that grows with N by more than those bytes would be a leak; the JSON gives
``rss_growth_bytes_per_image`` between the smallest and the largest N to check it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHILD = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def make_image(folder: Path, classes: int, i: int, seed: int = 0) -> None:
    """JPEG number ``i`` (``class_<i % classes>/img_<i>.jpg``), drawn from its own seed; an
    existing file is kept."""
    path = folder / f"class_{i % classes:03d}" / f"img_{i:05d}.jpg"
    if path.exists():
        return
    rng = np.random.default_rng([seed, i])
    height, width = (int(v) for v in rng.integers(300, 501, size=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.save(path, quality=90)


def make_folder(folder: Path, count: int, classes: int, seed: int = 0) -> None:
    """``count`` JPEGs in ``classes`` folders, made by every CPU core."""
    with multiprocessing.Pool() as pool:
        pool.starmap(make_image, [(folder, classes, i, seed) for i in range(count)], chunksize=64)


def subset(folder: Path, count: int, classes: int, target: Path) -> Path:
    """A folder of symbolic links to the first ``count`` images (every class keeps its folder)."""
    for i in range(count):
        name = Path(f"class_{i % classes:03d}") / f"img_{i:05d}.jpg"
        link = target / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(folder / name)
    return target


def run(args: argparse.Namespace, count: int, work: Path) -> dict[str, float]:
    data = subset(args.folder, count, args.classes, work / f"data_{count}")
    output = work / f"run_{count}"
    command = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        "--data",
        "imagefolder",
        "--data-root",
        str(data),
        "--labels",
        "folders",
        "--models",
        args.model,
        "--no-pretrained",
        "--num-classes",
        str(args.classes),
        "--image-size",
        str(args.image_size),
        "--experiment",
        *args.experiment,
        "--no-figures",
        "--output",
        str(output),
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        str(args.num_workers),
        *args.extra,
    ]
    start = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *command], capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"evaluate.py failed on {count} images:\n{child.stderr[-3000:]}")
    peak = next(
        int(line.split()[1])
        for line in child.stdout.splitlines()[::-1]
        if line.startswith("PEAK_RSS_KIB")
    )
    npz = sum(f.stat().st_size for f in output.rglob("*.npz"))
    results = json.loads((output / "results.json").read_text())
    return {
        "images": count,
        "wall_s": round(seconds, 1),
        "images_per_s": round(count / seconds, 2),
        "peak_rss_mib": round(peak / 1024, 1),
        "result_arrays_bytes_per_image": round(npz / count, 1),
        "timing": results["timing"][args.model],  # evaluate.py's own: start-up, rate, memory
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--model", default="test_efficientnet", help="a tiny timm model")
    parser.add_argument("--image-size", type=int, default=64, help="the model's canvas (px)")
    parser.add_argument("--experiment", nargs="+", default=["fig6"])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "li_scale")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("extra", nargs="*", help="more evaluate.py flags, after --")
    args = parser.parse_args()
    start = time.perf_counter()
    make_folder(args.folder, max(args.sizes), args.classes)
    made = time.perf_counter() - start
    results: dict[str, object] = {
        "model": args.model,
        "image_size": args.image_size,
        "experiment": args.experiment,
        "folder_seconds": round(made, 1),
    }
    with tempfile.TemporaryDirectory() as work:
        runs = [run(args, n, Path(work)) for n in sorted(args.sizes)]
    results["runs"] = runs
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        growth = (last["peak_rss_mib"] - first["peak_rss_mib"]) * 2**20
        results["rss_growth_bytes_per_image"] = round(growth / (last["images"] - first["images"]))
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
