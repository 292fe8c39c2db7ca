"""Per-epoch invariance evaluation during training (embedded random location + translation sweep).

Every ``every_n_epochs`` validation epochs (and once in ``trainer.test``) the callback pushes a
fixed, seeded set of held-out images through the current model:

* ``random_location`` at each object scale: the image is shrunk to ``scale x canvas`` and placed at
  a seeded random position (docs/design.md, "Protocols"), accuracy only;
* ``translate``: the image at the training object scale, shifted -N..N px: accuracy, accuracy at
  shift 0 (``centred_accuracy``), P(top-1 change), jaggedness, consistency, MAC/MAD;
* with ``lie`` (transformations such as ``translate_x``): the Lie derivatives of the model at the
  image placed at the training object scale (``lie_<fill>_s<scale>/lie_softmax_translate_x``, ...;
  ``lightning_inv.protocols.lie``), the continuous measure beside the discrete ones.

With ``sets`` (``InvarianceSet``), it measures several named sets instead, each restricted to a
canvas region and object scales, optionally with thinned or thickened objects; their keys start
with the set's name (``unseen_random_location_black_s0.4/accuracy``, ``unseen_translate_black/
p_top1_change``). The typicality study (docs/results.md) compares a ``seen`` and an ``unseen`` region.

It measures with the same core as ``evaluate.py`` (``lightning_inv.measuring.core``), so a protocol has
the same result key and measures in both (e.g. ``random_location_black_s0.3/accuracy``). Same
views every epoch and on every rank: views are seeded by (seed, image index), and each rank takes
a disjoint share of the images; per-image values are gathered over ranks. Numbers are logged as
``invariance/<protocol key>/<measure>`` and kept in ``history`` (saved in checkpoints, so a
resumed run keeps it, and written to ``<log_dir>/invariance_history.json``; ``trainer.test``
writes ``<log_dir>/invariance_test.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torch.utils.data import Dataset

from lightning_inv.data.images import collate_skipping
from lightning_inv.files import write_json
from lightning_inv.measuring.core import ProtocolMeasures, ProtocolResult, measure_batch
from lightning_inv.measuring.lie import Linearized
from lightning_inv.protocols import LieDerivative, Protocol, RandomLocation, Region, Translate
from lightning_inv.protocols.base import Direction
from lightning_inv.protocols.tangents import check_generator


@dataclass
class InvarianceSet:
    """One named test set: random-location views at each of ``scales`` with the object inside
    ``region``, and a translation sweep along ``direction`` around the region's centre at
    ``translate_scale`` (default: the middle of ``scales``). ``stroke`` > 0 thickens the test
    objects by a grey-scale dilation of that many px, < 0 thins them by an erosion (digits drawn
    with thicker or thinner pens than the training digits)."""

    name: str
    scales: tuple[float, ...] = (0.3, 0.5, 0.7)
    region: Region = field(default_factory=Region)
    translate_scale: float | None = None
    direction: Direction = "vertical"
    stroke: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"a set needs a name without '/', got {self.name!r}")
        if not self.scales:
            raise ValueError(f"set {self.name!r} needs at least one object scale")


def change_stroke(images: Tensor, stroke: int) -> Tensor:
    """Grey-scale dilation (``stroke`` > 0) or erosion (< 0) of [B, C, H, W] with a square of
    ``2 * abs(stroke) + 1`` px: bright strokes on a dark ground get thicker or thinner."""
    if stroke == 0:
        return images
    size = 2 * abs(stroke) + 1
    if stroke > 0:
        return F.max_pool2d(images, size, stride=1, padding=abs(stroke))
    return -F.max_pool2d(-images, size, stride=1, padding=abs(stroke))


class InvarianceEvaluation(Callback):
    """Measure accuracy and invariance on embedded-random-location test views each epoch.

    Args:
        every_n_epochs: run after every N-th validation epoch (and after ``trainer.test``).
        num_images: how many held-out images (the datamodule's ``invariance_dataset()``, first N).
        scales: object scales (object side / canvas) of the random-location sets.
        max_shift: translation sweep range, -N..N px.
        translate_scale: object scale of the sweep (default: the datamodule's ``object_scale``).
        fill: background of the embedded images: ``black``, ``mean``, ``edge`` or ``inpaint``.
        seed: seeds the random locations (fixed across epochs).
        batch_size: images per step; chunk_size: views per forward pass.
        prefix: log key prefix.
        sets: named, region-restricted sets instead of the one set above (``scales``,
            ``translate_scale`` are then per set; ``max_shift``, ``fill``, ``seed`` shared).
        lie: transformations (``translate_x``, ``translate_y``, ``rotate``, ``scale``) whose
            Lie derivatives are measured too, at the object at the sweep's scale (per set);
            one forward-mode pass each (~2-3 forward passes).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 100,
        scales: tuple[float, ...] = (0.3, 0.5, 0.7),
        max_shift: int = 8,
        translate_scale: float | None = None,
        fill: str = "black",
        seed: int = 0,
        batch_size: int = 32,
        chunk_size: int = 256,
        prefix: str = "invariance",
        sets: list[InvarianceSet] | None = None,
        lie: tuple[str, ...] = (),
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError("every_n_epochs and num_images must be at least 1")
        for name in lie:
            check_generator(name)
        self.lie = tuple(lie)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.scales = tuple(scales)
        self.max_shift = max_shift
        self.translate_scale = translate_scale
        self.fill = fill
        self.seed = seed
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.prefix = prefix
        self.sets = list(sets) if sets else None
        names = [s.name for s in self.sets or []]
        if len(set(names)) < len(names):
            raise ValueError(f"set names must differ: {names}")
        self._strokes: dict[str, int] = {}
        self.history: list[dict[str, Any]] = []
        self.latest_per_image: dict[str, ProtocolResult] = {}
        self.latest_protocols: list[Protocol] = []

    # -- what is measured ---------------------------------------------------------------------

    def protocols(self, datamodule: Any, pl_module: pl.LightningModule) -> list[Protocol]:
        canvas = int(getattr(datamodule, "image_size", None) or pl_module.image_size)
        mean = tuple(getattr(pl_module, "data_config", {}).get("mean", (0.5, 0.5, 0.5)))
        common = {"canvas": canvas, "fill": self.fill, "mean": mean, "seed": self.seed}
        if self.sets:
            protocols, self._strokes = [], {}
            for spec in self.sets:
                for protocol in self._set_protocols(spec, common):
                    if protocol.key in self._strokes:
                        raise ValueError(f"two sets give the protocol key {protocol.key!r}")
                    protocols.append(protocol)
                    self._strokes[protocol.key] = spec.stroke
            return protocols
        scale = self.translate_scale or float(getattr(datamodule, "object_scale", 0.75))
        return [
            *[RandomLocation(scale=s, **common) for s in self.scales],
            Translate(scale=scale, max_shift=self.max_shift, **common),
            *self._lie_protocols(scale, None, common),
        ]

    def _lie_protocols(
        self, scale: float, region: Region | None, common: dict[str, Any]
    ) -> list[Protocol]:
        if not self.lie:
            return []
        return [
            LieDerivative(
                generators=self.lie, attribute=self.lie[0], scale=scale, region=region, **common
            )
        ]

    def _set_protocols(self, spec: InvarianceSet, common: dict[str, Any]) -> list[Protocol]:
        ordered = sorted(spec.scales)
        scale = spec.translate_scale or ordered[len(ordered) // 2]
        located = [RandomLocation(scale=s, region=spec.region, **common) for s in spec.scales]
        sweep = Translate(
            scale=scale,
            max_shift=self.max_shift,
            region=spec.region,
            direction=spec.direction,
            **common,
        )
        lie = self._lie_protocols(scale, spec.region, common)
        for protocol in [*located, sweep, *lie]:
            protocol.label = f"{spec.name}_{protocol.default_key}"
        return [*located, sweep, *lie]

    def strokes(self, protocols: list[Protocol]) -> list[int]:
        """The stroke change of each protocol's set (0 without sets), as ``protocols`` made it."""
        return [self._strokes.get(p.key, 0) for p in protocols]

    def _images(self, datamodule: Any) -> Dataset:
        if not hasattr(datamodule, "invariance_dataset"):
            raise TypeError(
                f"{type(datamodule).__name__} has no invariance_dataset(): use one of the data "
                "modules in lightning_inv.data.training or add the method"
            )
        dataset = datamodule.invariance_dataset()
        return torch.utils.data.Subset(dataset, range(min(self.num_images, len(dataset))))

    @torch.no_grad()
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Run every protocol on this rank's share of the images; returns gathered numbers
        ``{"<protocol key>/<measure>": value}``."""
        protocols = self.protocols(trainer.datamodule, pl_module)
        dataset = self._images(trainer.datamodule)
        share = range(trainer.global_rank, len(dataset), trainer.world_size)
        measures = [ProtocolMeasures(p, keep_views=True).to(pl_module.device) for p in protocols]
        strokes = self.strokes(protocols)
        was_training = pl_module.training
        pl_module.eval()
        # This epoch's weights, frozen for forward-mode derivatives (differential protocols).
        linearized = Linearized(pl_module) if any(p.differential for p in protocols) else None
        try:
            for start in range(0, len(share), self.batch_size):
                batch = collate_skipping(
                    [dataset[i] for i in share[start : start + self.batch_size]]
                )
                if len(batch["image"]) == 0:
                    continue
                images = batch["image"].to(pl_module.device)
                labels = batch["label"].to(pl_module.device)
                for stroke in sorted(set(strokes)):
                    chosen = [i for i, s in enumerate(strokes) if s == stroke]
                    measure_batch(
                        pl_module,
                        [protocols[i] for i in chosen],
                        [measures[i] for i in chosen],
                        change_stroke(images, stroke),
                        labels,
                        batch["index"],
                        chunk_size=self.chunk_size,
                        validate_args=start == 0,
                        linearized=linearized,
                    )
        finally:
            pl_module.train(was_training)
        numbers: dict[str, float] = {}
        self.latest_per_image = {}
        for protocol, measure in zip(protocols, measures, strict=True):
            result = ProtocolResult.from_states(protocol, measure.compute())  # gathers ranks
            self.latest_per_image[protocol.key] = result
            for name, value in result.summary().items():
                numbers[f"{protocol.key}/{name}"] = value
        self.latest_protocols = protocols
        return numbers

    # -- when ---------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Build the protocols once before any step, so that a set that does not fit the canvas
        stops the run now with its message, not after the first epoch."""
        if getattr(trainer, "datamodule", None) is not None:
            self.protocols(trainer.datamodule, pl_module)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        numbers = self.measure(trainer, pl_module)
        prefix = self.prefix if stage == "fit" else f"{self.prefix}_{stage}"
        logged = {f"{prefix}/{k}": v for k, v in numbers.items()}
        # Already reduced over ranks: sync_dist averages equal values, which is exact.
        pl_module.log_dict(logged, sync_dist=True)
        record = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            **numbers,
        }
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if stage == "fit":
            self.history.append(record)
            name, content = "invariance_history.json", {"history": self.history}
        else:  # a separate file: a later `train.py test` must not overwrite the training history
            name, content = f"invariance_{stage}.json", record
        if trainer.is_global_zero and log_dir:
            write_json(Path(log_dir) / name, content)  # atomic: a kill never halves the history

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._run(trainer, pl_module, "fit")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")

    # -- resuming -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
