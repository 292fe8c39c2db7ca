"""The accelerator path on the CPU: its views equal the CPU path's, and measuring waits for the
device only where it means to (``lightning_inv.device_path``, ``lightning_inv.measuring.host_reads``)."""

from __future__ import annotations

import pytest
import torch

from lightning_inv.device_path import accelerated, accelerator_path
from lightning_inv.measuring.evaluator import InvarianceEvaluator
from lightning_inv.measuring.host_reads import HostReads, waits_per_batch
from lightning_inv.protocols import FILL_MODES
from lightning_inv.protocols.factory import PROTOCOLS, create_protocol
from lightning_inv.protocols.presets import PresetContext, build_experiments
from lightning_inv.protocols.transfer import to_device

MEAN = (0.485, 0.456, 0.406)


def _batch(position: int, size: int, canvas: int) -> dict:
    generator = torch.Generator().manual_seed(position)
    return {
        "image": torch.rand(size, 3, canvas, canvas, generator=generator),
        "label": torch.randint(0, 10, (size,), generator=generator),
        "index": torch.arange(size) + position * size,
        "original": [torch.rand(3, 90, 120, generator=generator) for _ in range(size)],
    }


def test_host_reads_tells_device_reads_from_host_work():
    """Each kind of wait is found where it reads a device value, and host work is not: catches an
    audit that flags every ``tolist`` (host plans are read all the time, legitimately), one that
    loses track of values computed from the batch (``labels + 1`` is still on the device, and so
    is a host tensor once device values are written into it), and one that takes a pinned,
    queued copy (``to_device``) for a synchronous upload."""
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
    with HostReads(images, labels) as reads:
        torch.arange(3).tolist()  # host plans
        torch.rand(2, generator=torch.Generator().manual_seed(0)).numpy()
        to_device(torch.tensor([4, 5]), images.device)  # queued
        (labels + 1).tolist()  # read of a value computed on the device
        _ = images[images > 0.5]  # size depends on device values
        torch.tensor([0.0, 1.0]).to(images.device)  # synchronous upload
        written = torch.zeros(2)
        written.copy_(labels)
        float(written.sum())
    kinds = sorted(kind for _, kind in reads.places)
    assert kinds == ["read __float__", "read tolist", "size __getitem__[mask]", "upload"]


def test_the_batch_index_stays_on_the_host():
    """Lightning moves the batch; the data set indices stay where the protocols read them
    (the meta device stands in for a GPU): catches the default transfer, which moves them too
    and makes every random protocol read them back every batch."""
    evaluator = InvarianceEvaluator(torch.nn.Linear(2, 2), [])
    batch = {
        "image": torch.rand(2, 3, 4, 4),
        "label": torch.tensor([0, 1]),
        "index": torch.arange(2),
    }
    moved = evaluator.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved["image"].device.type == "meta" and moved["label"].device.type == "meta"
    assert moved["index"].device.type == "cpu" and moved["index"].tolist() == [0, 1]


@pytest.mark.parametrize("experiment", ["default", "paper"])
def test_measuring_waits_for_the_device_only_to_check_the_first_batch(make_tiny, experiment):
    """Every preset's protocols with the Fig. 10 probe, per-view records and the Lie split, as
    ``evaluate.py`` measures them: the first batch reads the images' range (on purpose), later
    batches make the host wait nowhere. Catches a per-batch wait in the measuring loop: indices
    read back from the device by the random protocols, host-planned boxes or colours uploaded
    without pinning, the kept Fig. 4 curves copied to the host, a label range check that reads
    the labels."""
    canvas = 48
    names = ["table1", "fig2", "fig6", "fig10"] if experiment == "default" else ["paper"]
    protocols, probed = build_experiments(names, PresetContext(canvas, MEAN))
    evaluator = InvarianceEvaluator(
        make_tiny(canvas), protocols, 64, probe=True, probe_keys=probed, keep_per_image=True
    )
    first, second = waits_per_batch(evaluator, [_batch(0, 2, canvas), _batch(1, 2, canvas)])
    assert {place.split(":")[0] for place, _ in first} == {"lightning_inv/protocols/base.py"}
    assert second == {}, second


def _every_protocol(canvas: int) -> list:
    """Every preset's protocols, and every protocol of the factory with every fill it takes."""
    protocols, _ = build_experiments(["paper"], PresetContext(canvas, MEAN))
    for name, kind in PROTOCOLS.items():
        fills = FILL_MODES if "fill" in kind.__dataclass_fields__ else (None,)
        for fill in fills:
            protocols.append(
                create_protocol(name, canvas=canvas, **({"fill": fill} if fill else {}))
            )
    return [p for p in protocols if not p.differential]


def test_accelerator_path_makes_the_views_of_the_cpu_path():
    """Every protocol (every preset's, every name with every fill) makes the same views on both
    paths (float32 rounding of the blur: conv2d against shifted adds): catches a GPU-only branch
    that places an object one pixel off, fills with another colour or inpaints otherwise, which
    no CPU machine would otherwise run."""
    canvas = 48
    protocols = _every_protocol(canvas)
    batch = _batch(0, 2, canvas)
    for protocol in protocols:
        originals = batch["original"] if protocol.uses_original else None
        cpu = protocol(batch["image"], batch["index"], originals)
        with accelerator_path():
            assert accelerated(batch["image"])
            accelerated_views = protocol(batch["image"], batch["index"], originals)
        assert not accelerated(batch["image"])
        assert accelerated_views.shape == cpu.shape, protocol.key
        torch.testing.assert_close(accelerated_views, cpu, atol=2e-5, rtol=0, msg=protocol.key)
