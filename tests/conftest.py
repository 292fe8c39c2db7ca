"""Shared fixtures. The repository root is importable (``callbacks/``, ``evaluate.py``, ``train.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lightning_inv.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)
keep_freed_memory()  # as evaluate.py and train.py do: the suite runs their code paths in-process


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def make_tiny():
    """``make_tiny(image_size=None)``: a fresh 10-class resnet10t with random weights seeded 0
    (as ``evaluate.py`` seeds every model it builds): fast, no download."""
    from lightning_inv.models.classifier import InvarianceClassifier

    def make(image_size: int | None = None) -> InvarianceClassifier:
        torch.manual_seed(0)
        return InvarianceClassifier(
            "resnet10t", pretrained=False, num_classes=10, image_size=image_size
        ).eval()

    return make


@pytest.fixture
def tiny_classifier(make_tiny):
    """A 10-class resnet10t with seeded random weights."""
    return make_tiny()


@pytest.fixture(scope="session")
def digits32():
    """9 held-out digits, cropped tight to 32 px (the protocols place them)."""
    from lightning_inv.data.datamodules import build_eval_dataset

    return build_eval_dataset("digits", 32, num_images=9)


@pytest.fixture(scope="session")
def sample_photos():
    """4 of the offline photos at 72 px as one batch [4, 3, 72, 72]."""
    from lightning_inv.data.datamodules import build_eval_dataset

    data = build_eval_dataset("sample", 72, num_images=4)
    return torch.stack([data[i]["image"] for i in range(len(data))])


SYNSETS = ("n01440764", "n01443537")


@pytest.fixture
def write_photos():
    """``write_photos(folder, count=2, size=(40, 30))``: small distinct PNGs ``0.png``, ...;
    returns the folder."""
    from PIL import Image

    def write(folder: Path, count: int = 2, size: tuple[int, int] = (40, 30)) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, (40 * i, 120, 200)).save(folder / f"{i}.png")
        return folder

    return write


@pytest.fixture
def photo_folder(write_photos):
    """``photo_folder(root, per_class=3)``: ``root/<synset>/<i>.png`` for two ImageNet synsets
    (an ImageNet-style folder a 1000-class model can be scored on); returns the root."""

    def make(root: Path, per_class: int = 3) -> Path:
        for synset in SYNSETS:
            write_photos(root / synset, per_class, (48, 40))
        return root

    return make


@pytest.fixture
def last_error(capsys):
    """``last_error()``: the last line a command wrote to stderr (its one-line error)."""

    def read() -> str:
        lines = capsys.readouterr().err.strip().splitlines()
        return lines[-1] if lines else ""

    return read


@pytest.fixture
def stop_when():
    """``stop_when(process, path)``: SIGTERM a running command as soon as ``path`` exists (a
    user's interrupt at a known point); returns its exit code."""
    import signal
    import time

    def stop(process, path: Path, timeout: float = 240.0) -> int:
        start = time.monotonic()
        while not path.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() - start < timeout, f"{path} never appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=120)

    return stop
