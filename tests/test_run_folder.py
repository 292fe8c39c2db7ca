"""Run folders (lightning_inv/reporting/run_folder.py): fresh names, the data manifest, the lock."""

from __future__ import annotations

import os

import pytest
from torch.utils.data import Subset

from lightning_inv.data.images import LabelledImage, LabelledImageDataset
from lightning_inv.files import RunFolderError
from lightning_inv.reporting.run_folder import (
    RunLock,
    data_manifest,
    default_run_folder,
    manifest_changes,
)


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    first, second = (
        default_run_folder("evaluate", tmp_path),
        default_run_folder("evaluate", tmp_path),
    )
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name)


def _dataset(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name in names:
        path = folder / name
        if not path.exists():
            path.write_bytes(b"x" * (len(name) + 1))
        items.append(LabelledImage(path, 0, name))
    return LabelledImageDataset(items, 32)


def test_the_manifest_names_what_changed(tmp_path):
    """Catches a manifest that compares only the count (an image replaced by another of the same
    count), ignores the order a subset takes, or misses a file rewritten in place."""
    before = data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"]))
    assert (
        manifest_changes(before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"])))
        is None
    )
    added = manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png", "d.png"]))
    )
    assert "1 added: d.png" in added
    swapped = manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "e.png"]))
    )
    assert "1 added: e.png" in swapped and "1 removed: c.png" in swapped
    (tmp_path / "b.png").write_bytes(b"longer content now")
    assert "1 changed: b.png" in manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"]))
    )
    full = _dataset(tmp_path, ["a.png", "c.png"])
    order = manifest_changes(
        data_manifest(Subset(full, [0, 1])), data_manifest(Subset(full, [1, 0]))
    )
    assert "another order" in order


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    first = RunLock(tmp_path).__enter__()
    with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"), RunLock(tmp_path):
        pass
    first.__exit__(None, None, None)
    with RunLock(tmp_path):  # released: the next run may take it
        pass


def test_saved_model_results_come_back_whole(tmp_path):
    """A finished model's per-image results survive the npz round trip of ``--resume``: the
    measures, a sweep's nonshiftability with depths, and a differential protocol's per-layer
    contributions with their depths and kinds. Catches: per-layer Lie values saved as
    nonshiftability (a resumed run would draw them as Fig. 10), kinds lost (figure colours)."""
    import numpy as np

    from lightning_inv.measuring.core import ProtocolResult
    from lightning_inv.protocols import Crop, LieDerivative
    from lightning_inv.reporting.run_folder import load_model_results, save_model_results

    lie, sweep = LieDerivative(canvas=32), Crop(canvas=32, margin=2, steps=3)
    indices, labels = np.array([0, 1]), np.array([3, 4])
    results = {
        lie.key: ProtocolResult(
            lie,
            indices,
            labels,
            {"lie_softmax_scale": np.array([0.5, 0.25])},
            lie_layers={"stem": np.array([1.0, 2.0]), "unattributed": np.array([0.0, 0.0])},
            depths={"stem": 0, "unattributed": 1},
            kinds={"stem": "strided convolution", "unattributed": "outside modules"},
        ),
        sweep.key: ProtocolResult(
            sweep,
            indices,
            labels,
            {"p_top1_change": np.array([0.0, 0.5])},
            nonshiftability={"act": np.array([1.0, 0.0])},
            depths={"act": 3},
        ),
    }
    save_model_results(tmp_path / "model.npz", results, {})
    loaded, _ = load_model_results(tmp_path / "model.npz", [lie, sweep])
    back = loaded[lie.key]
    assert back.nonshiftability == {}
    assert back.kinds == {"stem": "strided convolution", "unattributed": "outside modules"}
    assert back.depths == {"stem": 0, "unattributed": 1}
    assert np.array_equal(back.lie_layers["stem"], [1.0, 2.0])
    assert np.array_equal(back.values["lie_softmax_scale"], [0.5, 0.25])
    assert loaded[sweep.key].lie_layers == {} and loaded[sweep.key].depths == {"act": 3}
    assert np.array_equal(loaded[sweep.key].nonshiftability["act"], [1.0, 0.0])
