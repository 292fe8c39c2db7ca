"""Keep the random number generators in checkpoints, so a resumed run continues the same run.

Lightning saves model, optimizer, loop and callback states but not the global RNGs (dropout,
stochastic depth and anything else drawing from ``torch``, ``numpy`` or ``random``). With this
callback a run resumed from an epoch-end checkpoint draws the same numbers as one that never
stopped (the data order and augmentation are seeded per epoch by the data modules already).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class RandomStateCheckpoint(Callback):
    """Save the RNG states of this process in the checkpoint and restore them on resume."""

    def state_dict(self) -> dict[str, Any]:
        # Tensors and plain numbers only, so the checkpoint stays loadable with weights_only=True.
        kind, keys, position, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restore as late as possible: after the sanity check and everything set-up draws.
        state = getattr(self, "_pending", None)
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._pending = None
