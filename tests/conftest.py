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
def tiny_classifier():
    """A 10-class resnet10t with seeded random weights (fast; no download)."""
    from lightning_inv.models.classifier import InvarianceClassifier

    torch.manual_seed(0)
    return InvarianceClassifier("resnet10t", pretrained=False, num_classes=10).eval()


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
