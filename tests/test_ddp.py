"""Metrics reduced over two CPU processes equal the single-process values."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from lightning_inv.data.datamodules import EvalDataModule
from lightning_inv.measuring.evaluator import InvarianceEvaluator
from lightning_inv.protocols import Circular, LieDerivative, RandomLocation, Translate


class RandomImages(Dataset):
    """11 seeded images with labels in [0, 10): uneven shards over 2 ranks and 3-image batches."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(11, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 10, (11,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "label": int(self.labels[index]),
            "index": index,
            "name": str(index),
        }


def _evaluate(devices: int, classifier) -> dict[str, float]:
    protocols = [
        Translate(canvas=32, scale=0.5, max_shift=6, fill="inpaint"),
        RandomLocation(canvas=32, scale=0.5, fill="mean"),
        Circular(canvas=32, max_shift=8),
        LieDerivative(canvas=32, generators=("translate_x", "scale")),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    results = trainer.test(
        InvarianceEvaluator(classifier, protocols),
        datamodule=EvalDataModule(RandomImages(), 3),
        verbose=False,
    )
    return results[0]


@pytest.mark.slow
def test_two_processes_give_the_single_process_values(make_tiny):
    single = _evaluate(1, make_tiny())
    double = _evaluate(2, make_tiny())
    assert set(single) == set(double)
    assert (
        "translate_inpaint/jagged_fraction" in single
        and single["translate_inpaint/num_images"] == 11
        and single["lie/lie_softmax_scale"] > 0
    )
    for key, value in single.items():
        assert double[key] == pytest.approx(value, abs=1e-6), key
