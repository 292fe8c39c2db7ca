"""Running an evaluation: one function measures one model, ``evaluate`` runs them all into a run
folder, continuing an interrupted run (docs/design.md, "Run folders")."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import Dataset, Subset

from lightning_inv.cli.evaluate_config import EvaluateConfig
from lightning_inv.data.datamodules import EvalDataModule, build_eval_dataset, unwrap
from lightning_inv.files import read_json, write_atomically, write_json
from lightning_inv.measuring.contrasts import compare_models, preset_summaries
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.measuring.evaluator import Interrupted, InvarianceEvaluator
from lightning_inv.models.backbones import BackboneError
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.models.specs import ModelSpec
from lightning_inv.models.subsampling import Subsampling, measure_subsampling
from lightning_inv.protocols import Protocol, create_protocol
from lightning_inv.protocols.presets import PresetContext, build_experiments, presets_of
from lightning_inv.protocols.sweeps import DEFAULT_OBJECT_SCALE
from lightning_inv.reporting.figures import ModelRun
from lightning_inv.reporting.outputs import write_outputs
from lightning_inv.reporting.progress import ImagesPerSecondBar
from lightning_inv.reporting.run_folder import (
    MANIFEST,
    data_manifest,
    load_model_results,
    manifest_changes,
    remove_stale_temporaries,
    save_model_results,
)
from lightning_inv.reporting.tables import image_namer, label_namer
from lightning_inv.reporting.timing import RunTiming, describe_timing, device_name

MOVING = ("translate", "crop", "embed", "sequence")  # protocols that take --direction


class DataChanged(ValueError):
    """The data of a run changed before it was resumed."""


def custom_protocols(
    config: EvaluateConfig, canvas: int, mean: tuple[float, ...], object_scale: float
) -> list[Protocol]:
    """The ``--protocols`` with the flags' parameters (``translate_mean`` -> fill ``mean``)."""
    protocols: list[Protocol] = []
    common: dict[str, Any] = {"canvas": canvas, "seed": config.seed}
    for key in config.protocols:
        filled = key.startswith(("translate_", "scale_"))
        name, _, fill = key.rpartition("_") if filled else (key, "", "")
        kwargs = dict(common)
        if config.direction is not None and name in MOVING:
            kwargs["direction"] = config.direction
        if fill:
            kwargs.update(fill=fill, mean=mean)
        if name == "translate":
            kwargs.update(scale=object_scale, max_shift=config.max_shift)
        if name in ("embed", "worst_of_k"):
            kwargs["mean"] = mean
        if name == "random_location":
            protocols += [
                create_protocol(name, scale=s, fill=config.fill_of_locations, mean=mean, **common)
                for s in config.scales
            ]
        else:
            protocols.append(create_protocol(name, **kwargs))
    return protocols


def plan_protocols(
    config: EvaluateConfig, canvas: int, mean: tuple[float, ...], object_scale: float
) -> tuple[list[Protocol], set[str] | None]:
    """Presets + custom protocols for one model's canvas, and the keys to probe (None: every
    ordered protocol)."""
    context = PresetContext(
        canvas, tuple(mean), config.seed, config.fill_of_locations, object_scale
    )
    protocols, probed = build_experiments(config.experiments, context)
    protocols += custom_protocols(config, canvas, mean, object_scale)
    keys = [p.key for p in protocols]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two protocols share a result key: {sorted(keys)}")
    return protocols, (probed if config.experiments else None)


def eval_dataset(
    config: EvaluateConfig,
    classifier: InvarianceClassifier | None = None,
    keep_original: bool = False,
) -> Dataset:
    """The images as the model's eval preprocessing prepares them (or, without a model, at 32 px
    for their names and manifest)."""
    data_config = classifier.data_config if classifier is not None else {}
    return build_eval_dataset(
        config.data,
        classifier.image_size if classifier is not None else 32,
        config.data_root,
        data_config.get("crop_pct", 0.875),
        data_config.get("interpolation", "bicubic"),
        config.num_images,
        config.seed,
        keep_original=keep_original,
        crop_mode=data_config.get("crop_mode"),
        labels=config.labels,
        max_pixels=config.max_image_pixels,
        exif_orientation=config.exif_orientation,
    )


class StopRequests:
    """SIGINT / SIGTERM handlers that ask the evaluator to stop at the next batch boundary (a
    second signal stops at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum
        print(f"\nsignal {signum}: stopping after this batch (again to stop now)", file=sys.stderr)

    def __enter__(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __call__(self) -> int | None:
        return self.signum


@dataclass
class Measured:
    """One model's measurement."""

    evaluator: InvarianceEvaluator
    dataset: Dataset
    trainer: pl.Trainer
    config: dict[str, Any]
    subsampling: Subsampling
    weights: str | None
    timing: dict[str, Any]


def remaining_subset(dataset: Dataset, done: set[int]) -> Dataset:
    """``dataset`` without the items whose data set index is in ``done`` (indices kept)."""
    if not done:
        return dataset
    _, indices = unwrap(dataset)
    return Subset(dataset, [pos for pos, index in enumerate(indices) if index not in done])


def build_model(
    model: ModelSpec, config: EvaluateConfig
) -> tuple[InvarianceClassifier, list[Protocol], set[str] | None, Dataset, float]:
    """The classifier, its protocols (and keys to probe), its data set and object scale. Seeded
    per model: random weights (``--no-pretrained``) do not depend on the models before it, so a
    resumed run rebuilds the same model."""
    pl.seed_everything(config.seed, verbose=False)
    classifier = model.build(
        config.pretrained, config.image_size, config.channels_last, config.compile
    )
    trained_scale = model.placement[1] if model.placement else None
    object_scale = config.object_scale or trained_scale or DEFAULT_OBJECT_SCALE
    mean = tuple(classifier.data_config["mean"])
    protocols, probed = plan_protocols(config, classifier.image_size, mean, object_scale)
    dataset = eval_dataset(config, classifier, any(p.uses_original for p in protocols))
    return classifier, protocols, probed, dataset, object_scale


def measure_model(
    model: ModelSpec, config: EvaluateConfig, is_main: bool, partial: Path, stop: StopRequests
) -> Measured | str:
    """Build one model, its data and protocols, and measure it (continuing from ``partial`` when
    an interrupted run saved states there); an error message on bad input. Raises
    ``Interrupted`` when a signal stops it."""
    try:
        classifier, protocols, probed, dataset, object_scale = build_model(model, config)
    except (BackboneError, ValueError, FileNotFoundError) as err:
        return f"{model.spec}: {err}"
    canvas = classifier.image_size
    batch_size, chunk_size, num_workers = config.loop_sizes(canvas)
    subsampling = measure_subsampling(classifier.model, canvas)
    evaluator = InvarianceEvaluator(
        classifier,
        protocols,
        chunk_size=chunk_size,
        probe=config.nonshiftability,
        probe_kind=config.probe,
        probe_keys=probed,
        keep_per_image=True,
        resamples=config.resamples,
        seed=config.seed,
        partial_path=partial,
        save_every=config.save_every,
        stop_signal=stop,
    )
    done = evaluator.load_partial(partial, restore=is_main)
    remaining = remaining_subset(dataset, done)
    if is_main:
        print(f"[{model.spec}] {subsampling.describe()}")
        resumed = f", {len(done)} already measured (resumed)" if done else ""
        print(
            f"[{model.spec}] {len(dataset)} images{resumed}, canvas {canvas} px, object scale "
            f"{object_scale:g}"
        )
        for protocol in protocols:
            print(f"    {protocol.describe()}")
    timing = RunTiming(sum(p.num_views for p in protocols))
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        precision=config.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[ImagesPerSecondBar(timing.views_per_image), timing],
    )
    data = EvalDataModule(remaining, batch_size, num_workers)
    try:
        trainer.test(evaluator, datamodule=data, verbose=False)
    except SIGTERMException as stopped:  # Lightning's own stop, after a whole batch
        evaluator.save_partial()
        raise Interrupted(signal.SIGTERM) from stopped
    described = {
        **model.describe(),
        "pretrained": config.pretrained,
        "data": config.data,
        "data_root": str(config.data_root) if config.data_root else None,
        "num_images": config.num_images,
        "canvas": canvas,
        "object_scale": object_scale,
        "experiments": config.experiment,
        "seed": config.seed,
        "resamples": config.resamples,
        "protocols": {p.key: p.describe() for p in protocols},
    }
    weights = model.weights_name(config.pretrained, classifier)
    costs = {
        **timing.summary(evaluator.device),
        "device": device_name(evaluator.device),
        "processes": trainer.world_size,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "num_workers": num_workers,
    }
    if is_main:
        print(f"[{model.spec}] measured {describe_timing(costs)}")
    return Measured(evaluator, dataset, trainer, described, subsampling, weights, costs)


def model_file(output: Path, position: int) -> Path:
    return output / "per_image" / f"model{position}.npz"


def finished_model(
    model: ModelSpec, position: int, config: EvaluateConfig, output: Path, previous: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, ProtocolResult], ModelRun | None] | None:
    """A model that an interrupted run had finished: its rows, per-image results and figure data."""
    path = model_file(output, position)
    if model.spec not in previous.get("models", {}) or not path.is_file():
        return None
    _, protocols, _, dataset, _ = build_model(model, config)
    per_image, curves = load_model_results(path, protocols)
    rows = previous["models"][model.spec]
    run = (
        ModelRun(model.spec, rows, per_image, protocols, dataset, curves)
        if config.figures
        else None
    )
    return rows, per_image, run


def record_model(
    spec: str, position: int, measured: Measured, output: Path, results: dict[str, Any]
) -> str | None:
    """Put a measured model into ``results`` and on disk (its per-image results for
    ``--resume``, ``results.json`` rewritten, its in-progress states removed); a problem with its
    data as a message."""
    evaluator = measured.evaluator
    if evaluator.skipped and not evaluator.per_image[evaluator.protocols[0].key].num_images:
        name, reason = evaluator.skipped[0]
        return (
            f"{spec}: all {len(evaluator.skipped)} images were unreadable (first: {name}: {reason})"
        )
    subsampling = measured.subsampling
    results["subsampling"][spec] = {
        "factor": subsampling.factor,
        "invariant_fraction": subsampling.invariant_fraction,
        "layers": [list(layer) for layer in subsampling.layers],
    }
    results["models"][spec] = evaluator.results
    results["weights"][spec] = measured.weights
    results["timing"][spec] = measured.timing
    results["skipped"][spec] = [{"image": n, "reason": r} for n, r in evaluator.skipped]
    save_model_results(model_file(output, position), evaluator.per_image, evaluator.curves)
    write_json(output / "results.json", results)  # after every model
    for stale in (output / "partial").glob(f"model{position}.rank*.pt"):
        stale.unlink()
    return None


def start_files(config: EvaluateConfig, output: Path, dump: Callable[[], str]) -> dict[str, Any]:
    """Before the first model: what the run is (config.yaml, manifest.json) and results.json
    saying nothing is complete, so a run killed at any moment can be resumed; or, resuming,
    the check that the data are what the run measured. Returns the earlier results."""
    remove_stale_temporaries(output)  # a writer killed mid-write (SIGKILL) left its temporary
    manifest = data_manifest(eval_dataset(config))
    previous = read_json(output / "results.json") if (output / "results.json").is_file() else {}
    if config.resume is not None and (output / MANIFEST).is_file():
        if change := manifest_changes(read_json(output / MANIFEST), manifest):
            raise DataChanged(
                f"--resume {output}: {change}; restore the data, or start a new run on it"
            )
        return previous
    if config.resume is None:
        write_atomically(output / "config.yaml", dump())
    write_json(output / MANIFEST, manifest)
    if not previous:
        write_json(
            output / "results.json",
            {
                "complete": False,
                "config": config.settings(),
                "models": {},
                "missing": list(config.models),
            },
        )
    return previous


def evaluate(
    config: EvaluateConfig,
    models: list[ModelSpec],
    output: Path,
    is_main: bool,
    dump: Callable[[], str],
) -> int:
    """Measure every model into ``output`` (continuing an interrupted run), then write the
    outputs; results.json says ``complete: true`` only once every file is written. Returns the
    exit code."""
    pl.seed_everything(config.seed, verbose=False)
    previous: dict[str, Any] = {}
    if is_main:
        try:
            previous = start_files(config, output, dump)
        except DataChanged as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    results: dict[str, Any] = {
        "complete": False,
        "config": config.settings(),
        "models": {},
        "subsampling": dict(previous.get("subsampling", {})),
        "weights": dict(previous.get("weights", {})),
        "timing": dict(previous.get("timing", {})),
        "skipped": dict(previous.get("skipped", {})),
    }
    runs: list[ModelRun] = []
    per_image: dict[str, dict[str, ProtocolResult]] = {}
    configs: dict[str, dict[str, Any]] = {}
    namer = None
    with StopRequests() as stop:
        for position, model in enumerate(models):
            spec = model.spec
            kept = (
                finished_model(model, position, config, output, previous) if config.resume else None
            )
            if kept is not None:
                results["models"][spec], per_image[spec], run = kept
                runs += [run] if run is not None else []
                print(f"[{spec}] finished before the interruption: kept")
                continue
            try:
                measured = measure_model(
                    model, config, is_main, output / "partial" / f"model{position}", stop
                )
            except Interrupted as stopped:
                if is_main:
                    results["missing"] = config.models[position:]
                    write_json(output / "results.json", results)
                    print(
                        f"\ninterrupted during {spec}: results.json says complete: false; "
                        f"continue with: python evaluate.py --resume {output}",
                        file=sys.stderr,
                    )
                return 128 + stopped.signum
            if isinstance(measured, str):
                print(f"error: {measured}", file=sys.stderr)
                return 2
            if measured.trainer.global_rank != 0:
                continue
            results["missing"] = config.models[position + 1 :]
            if problem := record_model(spec, position, measured, output, results):
                print(f"error: {problem}", file=sys.stderr)
                return 1
            configs[spec], namer = measured.config, image_namer(measured.dataset)
            per_image[spec] = measured.evaluator.per_image
            if config.figures:
                runs.append(ModelRun.from_evaluator(spec, measured.evaluator, measured.dataset))
            del measured
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if not is_main:
        return 0
    results.pop("missing", None)
    pairs = [tuple(config.compare)] if config.compare else list(combinations(config.models, 2))
    results["comparisons"] = compare_models(per_image, pairs, config.resamples, config.seed)  # type: ignore[arg-type]
    presets = presets_of(config.experiments)
    results.update(
        preset_summaries(presets, per_image, results["weights"], config.resamples, config.seed)
    )
    write_json(output / "results.json", results)  # every number, still complete: false
    namer = namer or image_namer(eval_dataset(config))
    namers = (namer, label_namer(config.data, config.data_root))
    if problem := write_outputs(
        output, results, per_image, runs, namers, presets, config.logger, configs
    ):
        print(
            f"error: {problem}; results.json says complete: false, and python evaluate.py "
            f"--resume {output} writes the missing outputs",
            file=sys.stderr,
        )
        return 1
    results["complete"] = True
    write_json(output / "results.json", results)  # last: every other file is written
    return 0
