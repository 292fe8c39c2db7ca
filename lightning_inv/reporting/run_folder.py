"""Run folders of the command-line tools: a fresh default name, and never overwriting results."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

from lightning_inv.files import RunFolderError, write_atomically, write_json


def default_run_folder(prefix: str, root: str | Path = "runs") -> Path:
    """Create and return ``runs/<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when a run
    started in the same second already took it). ``mkdir`` without ``exist_ok`` is atomic, so
    two runs never share a folder."""
    base = Path(root) / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a fresh run folder next to {base}")


def overwrite_refusal(folder: Path, overwrite: bool) -> str | None:
    """The error message when ``folder`` holds files and ``overwrite`` is off, else None."""
    if not overwrite and folder.exists() and any(folder.iterdir()):
        return f"{folder} exists and is not empty; pass --overwrite or another --output"
    return None


def write_json_atomically(path: Path, content: Any) -> None:
    """``content`` as strict JSON, written atomically (``run_folder.write_json``)."""
    write_json(path, content)


def save_model_results(path: Path, results: dict[str, Any], curves: dict[str, Any]) -> None:
    """One finished model's per-image results (``{protocol key: ProtocolResult}``) and Fig. 4
    curves as a compressed ``.npz`` (temporary file + rename), for ``evaluate.py --resume``."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for key, result in results.items():
        arrays[f"{key}|indices"], arrays[f"{key}|labels"] = result.indices, result.labels
        for name, values in result.values.items():
            arrays[f"{key}|value|{name}"] = values
        for layer, values in result.nonshiftability.items():
            arrays[f"{key}|shift|{layer}"] = values
            arrays[f"{key}|depth|{layer}"] = np.array(result.depths.get(layer, -1))
        if result.p_true is not None:
            arrays[f"{key}|p_true"], arrays[f"{key}|top1"] = result.p_true, result.top1
    for key, sums in curves.items():
        arrays[f"{key}|curves"] = sums.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(path, buffer.getvalue())


def load_model_results(path: Path, protocols: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(per-image results, curves)`` that ``save_model_results`` wrote, for ``protocols``."""
    import numpy as np
    import torch

    from lightning_inv.measuring.core import ProtocolResult

    try:
        with np.load(path) as stored:
            arrays = dict(stored)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise RunFolderError(
            f"{path} is damaged ({type(err).__name__}: {err}); delete it and --resume measures "
            "that model again"
        ) from err
    results, curves = {}, {}
    for protocol in protocols:
        key = protocol.key
        if f"{key}|indices" not in arrays:
            raise RunFolderError(
                f"{path} holds no results for protocol {key}: the run's protocols changed; "
                "start a new run"
            )
        prefix_value, prefix_shift = f"{key}|value|", f"{key}|shift|"
        prefix_depth = f"{key}|depth|"
        results[key] = ProtocolResult(
            protocol=protocol,
            indices=arrays[f"{key}|indices"],
            labels=arrays[f"{key}|labels"],
            values={
                k[len(prefix_value) :]: v for k, v in arrays.items() if k.startswith(prefix_value)
            },
            p_true=arrays.get(f"{key}|p_true"),
            top1=arrays.get(f"{key}|top1"),
            nonshiftability={
                k[len(prefix_shift) :]: v for k, v in arrays.items() if k.startswith(prefix_shift)
            },
            depths={
                k[len(prefix_depth) :]: int(v)
                for k, v in arrays.items()
                if k.startswith(prefix_depth)
            },
        )
        if f"{key}|curves" in arrays:
            curves[key] = torch.from_numpy(arrays[f"{key}|curves"])
    return results, curves
