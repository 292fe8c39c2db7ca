"""``InvarianceEvaluator``: a LightningModule that measures a classifier under protocols.

Running it with ``Trainer.test`` gives DDP, devices, precision and progress bars from Lightning;
the metrics are sum-state torchmetrics, so results are identical on 1 or N processes. Batches
are dicts with ``image`` [B, 3, H, W] in [0, 1], ``label`` [B], ``index`` [B] (seeds the
protocols) and optionally ``skipped`` (names of unreadable images, counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_inv import metrics as M
from lightning_inv.engine import view_logits
from lightning_inv.metrics.nonshiftability import FeatureSums
from lightning_inv.protocols.views import Protocol


def metrics_for(protocol: Protocol) -> dict[str, Metric]:
    """The measures that a protocol defines, by result key (issue #4's ``results.json`` names)."""
    out: dict[str, Metric] = {
        "accuracy": M.ViewAccuracy(top_k=1),
        "top5_accuracy": M.ViewAccuracy(top_k=5),
    }
    if protocol.kind in ("sequence", "pair"):
        out["p_top1_change"] = M.TopOneChange()
        out["consistency"] = M.Consistency()
    if protocol.kind == "sequence":
        out["mac"] = M.MeanAbsoluteChange()
        out["mad"] = M.MeanAbsoluteDifference()
        out["jaggedness"] = M.Jaggedness()
    if protocol.name == "sequence":
        out["flip_rate"] = M.FlipRate()
        out["top5_distance"] = M.TopFiveDistance()
    if protocol.kind == "grid":
        out["worst_of_k_accuracy"] = M.WorstOfKAccuracy()
    return out


def flatten_measure(name: str, value: Tensor | dict[str, Tensor]) -> dict[str, float]:
    """A metric's ``compute()`` -> flat result keys (``jaggedness`` -> ``jaggedness_mean``, ...)."""
    if isinstance(value, dict):
        # Jaggedness -> jaggedness_mean, jagged_fraction (results.json names).
        renamed = (
            {"mean": f"{name}_mean", "fraction": "jagged_fraction"} if name == "jaggedness" else {}
        )
        return {renamed.get(k, f"{name}_{k}"): float(v) for k, v in value.items()}
    return {name: float(value)}


def gather_per_image(
    per_image: dict[str, list[dict[str, Any]]], trainer: pl.Trainer
) -> dict[str, list[dict[str, Any]]]:
    """Per-image rows ``{protocol key: [{"index", ...}]}`` of every rank, sorted by data set index.

    Every rank must call it (an ``all_gather_object`` under DDP); single-process runs just sort.
    """
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        parts: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, per_image)
        per_image = {key: [row for part in parts for row in part[key]] for key in per_image}
    return {key: sorted(rows, key=lambda r: r["index"]) for key, rows in per_image.items()}


class InvarianceEvaluator(pl.LightningModule):
    """Measure ``classifier`` (images in [0, 1] -> logits) under each of ``protocols``.

    Args:
        classifier: e.g. an ``InvarianceClassifier``; evaluated in eval mode.
        protocols: the view generators; their ``key`` names the results.
        chunk_size: views per forward pass.
        probe: record per-layer feature sums for nonshiftability (``sequence``-kind protocols).
        probe_layers: layer names inside ``classifier.model`` (default: ``probe_layers``).
        keep_per_image: keep per-image, per-view true-class probability and top-1 (for CSVs/plots),
            as float32 / int32 arrays (about 8 bytes per view).
        max_curve_images: keep the per-layer feature sums (``curves``, for Fig. 4-style plots) of
            at most this many images: they cost T x (sum of channels) floats per image, which
            would not fit in memory for a 50,000-image run. The measures use every image.
    """

    def __init__(
        self,
        classifier: nn.Module,
        protocols: Sequence[Protocol],
        chunk_size: int = 256,
        probe: bool = False,
        probe_layers: Sequence[str] | None = None,
        keep_per_image: bool = False,
        max_curve_images: int = 16,
    ) -> None:
        super().__init__()
        keys = [p.key for p in protocols]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two protocols share a result key: {keys}")
        self.classifier = classifier
        self.protocols = list(protocols)
        self.chunk_size = chunk_size
        self.keep_per_image = keep_per_image
        self.max_curve_images = max_curve_images
        # Indexed like self.protocols (result keys may hold dots, which module names cannot).
        self.measures = nn.ModuleList([nn.ModuleDict(metrics_for(p)) for p in protocols])
        self.skipped = M.Count()
        self.images = M.Count()
        backbone = getattr(classifier, "model", classifier)
        self.probe = FeatureSums(backbone, probe_layers) if probe else None
        self.layer_keys = {
            name: name.replace(".", "/") for name in (self.probe.layers if self.probe else [])
        }
        self.shiftability = nn.ModuleList(
            [
                nn.ModuleDict(
                    {self._module_key(n): M.Nonshiftability() for n in self.layer_keys}
                    if self.probe is not None and p.kind == "sequence"
                    else {}
                )
                for p in protocols
            ]
        )
        self.results: dict[str, dict[str, Any]] = {}
        self.per_image: dict[str, list[dict[str, Any]]] = {p.key: [] for p in protocols}
        # After testing: {protocol key: {layer: feature sums [N, T, K]}} in data set order.
        self.curves: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _module_key(layer: str) -> str:
        return layer.replace(".", "__")

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images)

    def on_test_start(self) -> None:
        self.classifier.eval()
        if self.probe is not None:
            self.probe.__enter__()

    def on_test_end(self) -> None:
        if self.probe is not None:
            self.probe.__exit__(None, None, None)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.skipped.update(len(batch.get("skipped", [])))
        images, labels = batch["image"], batch["label"]
        if len(images) == 0:
            return
        self.images.update(len(images))
        indices = batch.get("index", torch.arange(len(images)))
        for position, protocol in enumerate(self.protocols):
            shiftability = self.shiftability[position]
            use_probe = self.probe if len(shiftability) else None
            logits, sums = view_logits(self, protocol, images, indices, self.chunk_size, use_probe)
            for metric in self.measures[position].values():
                metric.update(logits, labels)
            for layer, layer_sums in sums.items():
                shiftability[self._module_key(layer)].update(layer_sums)
                kept = self.curves.setdefault(protocol.key, {}).setdefault(layer, [])
                room = self.max_curve_images - sum(len(i) for i, _ in kept)
                if room > 0:
                    kept.append((indices[:room].cpu(), layer_sums[:room].cpu()))
            if self.keep_per_image:
                self._keep(protocol, logits, labels, batch)

    def _keep(
        self, protocol: Protocol, logits: Tensor, labels: Tensor, batch: dict[str, Any]
    ) -> None:
        probs = logits.softmax(-1)
        p_true = probs.gather(-1, labels[:, None, None].expand(-1, probs.shape[1], 1))[..., 0]
        p_true = p_true.float().cpu().numpy()
        top1 = probs.argmax(-1).int().cpu().numpy()
        indices = batch.get("index", torch.arange(len(labels)))
        names = batch.get("name", [str(int(i)) for i in indices])
        for row, name in enumerate(names):
            self.per_image[protocol.key].append(
                {
                    "index": int(indices[row]),
                    "image": name,
                    "label": int(labels[row]),
                    "p_true": p_true[row],
                    "top1": top1[row],
                }
            )

    def _gather_kept(self) -> None:
        """Per-image rows and curves from every rank, in data set order (DDP shards the data)."""
        self.per_image = gather_per_image(self.per_image, self.trainer)
        curves = self.curves
        if self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, curves)
            curves = {}
            for rank_curves in gathered:
                for key, layers in rank_curves.items():
                    for layer, parts in layers.items():
                        curves.setdefault(key, {}).setdefault(layer, []).extend(parts)
        self.curves = {}
        for key, layers in curves.items():
            for layer, parts in layers.items():
                order = torch.cat([i for i, _ in parts]).argsort()
                order = order[: self.max_curve_images]  # the first images of the data set
                self.curves.setdefault(key, {})[layer] = torch.cat([s for _, s in parts])[order]

    def on_test_epoch_end(self) -> None:
        self._gather_kept()
        num_images = int(self.images.compute())
        skipped = int(self.skipped.compute())
        for position, protocol in enumerate(self.protocols):
            row: dict[str, Any] = {}
            if num_images:
                for name, metric in self.measures[position].items():
                    row.update(flatten_measure(name, metric.compute()))
            row.update(num_images=num_images, num_views=protocol.num_views, skipped_images=skipped)
            if len(self.shiftability[position]) and num_images:
                measured = {
                    layer: self.shiftability[position][self._module_key(layer)].compute()
                    for layer in self.layer_keys
                }
                row["nonshiftability"] = {k: float(v["count"]) for k, v in measured.items()}
                row["nonshiftability_rate"] = {k: float(v["rate"]) for k, v in measured.items()}
            self.results[protocol.key] = row
            for name, value in row.items():
                if isinstance(value, int | float):
                    # Already reduced over ranks; sync_dist averages equal values (exact).
                    self.log(f"{protocol.key}/{name}", float(value), sync_dist=True)
