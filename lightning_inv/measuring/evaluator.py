"""``InvarianceEvaluator``: a LightningModule that measures a classifier under protocols.

Running it with ``Trainer.test`` gives DDP, devices, precision and progress bars from Lightning.
The measuring itself is ``lightning_inv.measuring.core`` (shared with the training callback): per
protocol the per-image value of every measure it declares, gathered over processes and sorted by
data set index, so 1 or N processes give the same numbers and intervals. Batches are dicts with
``image`` [B, 3, H, W] in [0, 1], ``label`` [B], ``index`` [B] (seeds the protocols), optionally
``original`` (the photos, for protocols that crop from them) and ``skipped`` / ``skip_reasons``
(unreadable images, counted and named).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_inv.files import RunFolderError, write_atomically
from lightning_inv.measuring.core import ProtocolMeasures, ProtocolResult, measure_batch
from lightning_inv.measuring.lie import Linearized
from lightning_inv.measuring.lie_layers import (
    UNATTRIBUTED,
    LayerAttribution,
    LayerPoint,
    attribution_points,
)
from lightning_inv.measuring.nonshiftability import FeatureSums, probe_points
from lightning_inv.measuring.statistics import RESAMPLES
from lightning_inv.protocols import Protocol


class Interrupted(BaseException):
    """A stop asked for by a signal, raised between two batches (never inside one, so the saved
    states hold whole batches of every protocol)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def gather_objects(value: Any, trainer: pl.Trainer) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` (every rank must call it under DDP)."""
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        parts: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, value)
        return parts
    return [value]


class InvarianceEvaluator(pl.LightningModule):
    """Measure ``classifier`` (images in [0, 1] -> logits) under each of ``protocols``.

    Args:
        classifier: e.g. an ``InvarianceClassifier``; evaluated in eval mode.
        protocols: the view generators; their ``key`` names the results.
        chunk_size: views per forward pass.
        probe: record nonshiftability (paper Fig. 10) on ordered protocols, and split the Lie
            derivative of differential protocols into layers (only those in ``probe_keys``).
        probe_kind: ``"activity"`` (default: the output of every nonlinearity, the paper's
            activities) or ``"conv"`` (raw convolution outputs); see ``probe_points``.
        probe_layers: module names inside ``classifier.model`` instead (first output per pass).
        probe_keys: which protocols to probe (default: every ordered one).
        keep_per_image: keep per-view true-class probability and top-1 (CSV, figures; 8 bytes
            per view and image).
        max_curve_images: keep the deepest probed layer's feature sums (Fig. 4) of at most this
            many images (T x channels floats each). The measures use every image.
        intervals: bootstrap 95% intervals over images (``resamples``, seeded by ``seed``).
        partial_path: where to save the measures of the images done so far every
            ``save_every`` batches (one file per process; ``load_partial`` resumes from it).
        stop_signal: called after every batch; a signal number there saves the states (with a
            ``partial_path``) and raises ``Interrupted``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        protocols: Sequence[Protocol],
        chunk_size: int = 256,
        probe: bool = False,
        probe_kind: str = "activity",
        probe_layers: Sequence[str] | None = None,
        probe_keys: Collection[str] | None = None,
        keep_per_image: bool = False,
        max_curve_images: int = 16,
        intervals: bool = True,
        resamples: int = RESAMPLES,
        seed: int = 0,
        partial_path: Path | None = None,
        save_every: int = 50,
        stop_signal: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__()
        self.partial_path, self.save_every = partial_path, save_every
        self.stop_signal = stop_signal
        keys = [p.key for p in protocols]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two protocols share a result key: {keys}")
        self.classifier = classifier
        self.protocols = list(protocols)
        self.protocol_by_key = {p.key: p for p in protocols}
        self.chunk_size = chunk_size
        self.max_curve_images = max_curve_images
        self.intervals, self.resamples, self.seed = intervals, resamples, seed
        backbone = getattr(classifier, "model", classifier)
        probed = {p.key for p in protocols if p.ordered} if probe_keys is None else set(probe_keys)
        any_probed = any(p.key in probed and p.ordered for p in protocols)
        self.probe = None
        layers: list[str] = []
        if probe and any_probed:
            canvas = max(p.canvas for p in protocols)
            points = (
                list(probe_layers)
                if probe_layers is not None
                else probe_points(backbone, canvas, probe_kind)
            )
            self.probe = FeatureSums(backbone, points) if points else None
            layers = self.probe.layers if self.probe is not None else []
        self.layers = {
            p.key: (layers if self.probe is not None and p.key in probed and p.ordered else [])
            for p in protocols
        }
        self.depths = dict(self.probe.depths) if self.probe is not None else {}
        # Differential protocols: per-layer Lie derivative contributions where probed.
        attributed = [p for p in protocols if p.differential and probe and p.key in probed]
        self.kinds: dict[str, str] = {}
        self._points: dict[str, list[LayerPoint]] = {}
        for protocol in attributed:
            copy = Linearized(classifier).backbone.to("cpu")
            points = attribution_points(copy, protocol.canvas)
            self._points[protocol.key] = points
            self.layers[protocol.key] = [p.name for p in points] + [UNATTRIBUTED]
            self.depths.update({p.name: p.depth for p in points})
            self.depths[UNATTRIBUTED] = max((p.depth for p in points), default=0) + 1
            self.kinds.update({p.name: p.kind for p in points} | {UNATTRIBUTED: "outside modules"})
        self.linearized: Linearized | None = None
        self.attributions: dict[str, LayerAttribution] = {}
        self.measures = nn.ModuleList(
            [ProtocolMeasures(p, keep_per_image, self.layers[p.key]) for p in protocols]
        )
        self.skipped: list[tuple[str, str]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.per_image: dict[str, ProtocolResult] = {}
        # After testing: {protocol key: feature sums [n, T, K] of the deepest probed layer}.
        self.curves: dict[str, Tensor] = {}
        self._curves: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """The batch on ``device``, but the data set indices stay on the host: they seed the
        protocols' host-side draws (offsets, crops), which would otherwise read them back from
        the device every batch; the measures get them by a queued copy."""
        if not isinstance(batch, dict) or "index" not in batch:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        rest = {key: value for key, value in batch.items() if key != "index"}
        moved = super().transfer_batch_to_device(rest, device, dataloader_idx)
        return {**moved, "index": batch["index"]}

    def on_test_start(self) -> None:
        self.classifier.eval()
        if any(p.differential for p in self.protocols):
            # Not a submodule: its weights are a copy, not the evaluator's state.
            object.__setattr__(self, "linearized", Linearized(self.classifier))
            self.attributions = {
                key: LayerAttribution(
                    self.linearized,
                    self.linearized.backbone,
                    points,
                    self.protocol_by_key[key].attribute,  # type: ignore[attr-defined]
                    self.protocol_by_key[key].boundary,  # type: ignore[attr-defined]
                )
                for key, points in self._points.items()
            }
        if self.probe is not None:
            self.probe.__enter__()
            self.probe.recording = False  # on only inside view_logits of a probed protocol

    def on_test_end(self) -> None:
        if self.probe is not None:
            self.probe.__exit__(None, None, None)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.skipped += list(
            zip(batch.get("skipped", []), batch.get("skip_reasons", []), strict=False)
        )
        images, labels = batch["image"], batch["label"]
        if len(images) == 0:
            return
        indices = batch.get("index", torch.arange(len(images)))
        responses = measure_batch(
            self,
            self.protocols,
            list(self.measures),
            images,
            labels,
            indices,
            batch.get("original"),
            self.chunk_size,
            self.probe,
            validate_args=batch_idx == 0,
            linearized=self.linearized,
            attributions=self.attributions,
        )
        for key, layers in responses.items():
            if not layers or self.protocol_by_key[key].differential:
                continue
            deepest = layers[self.layers[key][-1]][0]
            kept = self._curves.setdefault(key, [])
            room = self.max_curve_images - sum(len(i) for i, _ in kept)
            if room > 0:
                kept.append((indices[:room].cpu(), deepest[:room]))  # to the host at the end

    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Between batches: save the states every ``save_every`` batches, and stop on a signal."""
        signum = self.stop_signal() if self.stop_signal is not None else None
        if self.partial_path is not None and (signum or (batch_idx + 1) % self.save_every == 0):
            self.save_partial()
        if signum:
            raise Interrupted(signum)

    def _partial_file(self) -> Path:
        assert self.partial_path is not None
        rank = self.global_rank if self._trainer is not None else 0
        return self.partial_path.with_name(f"{self.partial_path.name}.rank{rank}.pt")

    def save_partial(self) -> None:
        """Write this process's per-image states so far (atomically: an interrupt or a full disk
        never leaves half a file)."""
        states = {
            p.key: {name: [t.cpu() for t in state] for name, state in m.metric_state.items()}
            for p, m in zip(self.protocols, self.measures, strict=True)
        }
        content = {"states": states, "skipped": self.skipped, "curves": self._host_curves()}
        buffer = io.BytesIO()
        torch.save(content, buffer)
        write_atomically(self._partial_file(), buffer.getvalue())

    def load_partial(self, path: Path, restore: bool = True) -> set[int]:
        """The data set indices already measured in the files ``save_partial`` wrote under
        ``path`` (every process's); with ``restore`` (one process only) their states are added
        to this evaluator's."""
        done: set[int] = set()
        for file in sorted(path.parent.glob(f"{path.name}.rank*.pt")):
            try:
                content = torch.load(file, map_location="cpu", weights_only=True)
                states = [content["states"][p.key] for p in self.protocols]
            except Exception as err:  # truncated, not a torch file, other protocols
                raise RunFolderError(
                    f"the saved states {file} cannot be read ({type(err).__name__}: {err}); "
                    "delete the file and --resume measures that model from its first image"
                ) from err
            for part in states[0]["index"]:
                done.update(int(i) for i in part)
            if not restore:
                continue
            for protocol, measure in zip(self.protocols, self.measures, strict=True):
                for name, parts in content["states"][protocol.key].items():
                    getattr(measure, name).extend(parts)
            self.skipped += [tuple(s) for s in content["skipped"]]
            for key, parts in content["curves"].items():
                self._curves.setdefault(key, []).extend(tuple(p) for p in parts)
        return done

    def _host_curves(self) -> dict[str, list[tuple[Tensor, Tensor]]]:
        return {k: [(i.cpu(), s.cpu()) for i, s in v] for k, v in self._curves.items()}

    def _gather_curves(self) -> None:
        """The kept feature sums of every rank, the first ``max_curve_images`` in data order."""
        self.curves = {}
        for key in self._curves.keys() | {k for k, v in self.layers.items() if v}:
            mine = self._host_curves().get(key, [])
            parts = [p for rank in gather_objects(mine, self.trainer) for p in rank]
            if parts:
                order = torch.cat([i for i, _ in parts]).argsort()[: self.max_curve_images]
                self.curves[key] = torch.cat([s for _, s in parts])[order]

    def on_test_epoch_end(self) -> None:
        self._gather_curves()
        gathered = [tuple(s) for rank in gather_objects(self.skipped, self.trainer) for s in rank]
        self.skipped = list(dict.fromkeys(gathered))  # a resumed run meets its skipped files again
        for protocol, measure in zip(self.protocols, self.measures, strict=True):
            result = ProtocolResult.from_states(
                protocol, measure.compute(), self.layers[protocol.key], self.depths, self.kinds
            )
            self.per_image[protocol.key] = result
            num_images = result.num_images  # every image goes through every protocol
            row = result.summary(self.intervals, self.resamples, self.seed)
            row.update(
                num_images=num_images,
                num_views=protocol.num_views,
                skipped_images=len(self.skipped),
            )
            self.results[protocol.key] = row
            for name, value in row.items():
                if isinstance(value, int | float):
                    # Already gathered over ranks: sync_dist averages equal values (exact).
                    self.log(f"{protocol.key}/{name}", float(value), sync_dist=True)
