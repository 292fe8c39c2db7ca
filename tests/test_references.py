"""Every preset as its reference computes it.

Each test rewrites, in our words, what a published script computes (the script and function are
named in the docstring), runs it on the same inputs as our protocol or surgery, and compares.
torchvision's own transforms stand in for the ones the scripts call (on tensors: the scripts work
on PIL images, which differ only by uint8 rounding). Each docstring names the deviation the test
catches, among them the behaviour this project had before it matched the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from lightning_inv.measuring.core import MEASURES
from lightning_inv.protocols import resize
from lightning_inv.protocols.presets import PresetContext, build_experiments

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random photo [3, height, width] in [0, 1] (smooth, so resampling is tame)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8 + 2, width // 8 + 2, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0]


def _preset(name: str, canvas: int = 224) -> dict:
    protocols, _ = build_experiments([name], PresetContext(canvas, MEAN))
    return {p.key: p for p in protocols}


def _per_image(measure: str, logits: torch.Tensor, labels: torch.Tensor, protocol) -> np.ndarray:
    return MEASURES[measure].per_image(logits, labels, protocol).numpy()


# -- Azulay & Weiss, CheckTranslationInvariance.py (Table 1) ---------------------------------------


def _script_black_inputs(photo: torch.Tensor, size: float) -> list[torch.Tensor]:
    """The script's Black protocol for one photo: the photo (its whole frame) resized to
    int(224 / s), normalised, pasted into torch.zeros at (c, c) and (c + 1, c + 1) for
    c in range(centre - 4, centre + 4), centre = int((224 - side - 1) / 2): the 9 positions."""
    side = int(224 / size)
    picture = TF.normalize(resize(photo[None], side)[0], MEAN, STD)
    centre = int((224 - side - 1) / 2)
    frames = []
    for c in range(centre - 4, centre + 5):
        frame = torch.zeros(3, 224, 224)
        frame[:, c : c + side, c : c + side] = picture
        frames.append(frame)
    return frames


def test_table1_black_at_s_1_6_is_the_scripts_139_px_photo_at_42():
    """The script's sizes are floats: s = 1.6000000000000003 gives int(224 / s) = 139 px at
    centre 42. Catches rounded sizes (140 px at 41, this project's earlier behaviour), round()
    instead of int(), and the mean colour confused with RGB black (zero *after* normalisation)."""
    protocol = _preset("table1")["table1_black_s1.6"]
    photo = _photo(300, 400)
    views = protocol(torch.rand(1, 3, 224, 224), torch.tensor([0]), [photo])[0]
    ours = TF.normalize(views, MEAN, STD)
    script = torch.stack(_script_black_inputs(photo, np.arange(0.1, 2.1, 0.3)[5]))
    torch.testing.assert_close(ours, script, atol=2e-6, rtol=0)


def _script_table1_numbers(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """JaggedNess() of the script on the softmax outputs of 9 views per image: for each pair
    (c, c + 1), P(top-1 change), MAC = |p1[a1] - p2[a1]| with a1 = argmax of the first view,
    and accuracy of the *first* view of each pair; each divided by the number of pairs."""
    jagged = mac = correct = counter = 0.0
    for image_probs, label in zip(probs, labels, strict=True):
        for c in range(8):
            outputs1, outputs2 = image_probs[c], image_probs[c + 1]
            top1 = int(outputs1.argmax())
            correct += float(top1 == int(label))
            mac += abs(float(outputs1[top1]) - float(outputs2[top1]))
            jagged += float(top1 != int(outputs2.argmax()))
            counter += 1
    return jagged / counter, mac / counter, correct / counter


def test_table1_measures_are_the_scripts_with_its_accuracy_as_its_own_measure():
    """P(top-1 change), MAC and the script's accuracy (first view of each pair, views 0..7 of 9)
    on random logits. The logits are built so that the last view alone is correct for some
    images: catches accuracy over all 9 views reported as the script's, MAC read at the second
    view's top-1, and P(top-1 change) over all view pairs instead of consecutive ones."""
    torch.manual_seed(0)
    protocol = _preset("table1")["table1_crop_s0.4"]
    logits = torch.randn(12, 9, 10) * 3
    labels = logits[:, -1].argmax(-1)  # the last view is right for every image
    script = _script_table1_numbers(logits.softmax(-1), labels)
    ours = [
        _per_image(m, logits, labels, protocol).mean()
        for m in ("p_top1_change", "mac", "accuracy_first_views")
    ]
    np.testing.assert_allclose(ours, script, atol=1e-6)
    assert _per_image("accuracy", logits, labels, protocol).mean() > script[2]


# -- antialiased-cnns main.py: validate_shift and validate_diagonal --------------------------------


def _zhang_input(photo: torch.Tensor) -> torch.Tensor:
    """The shift/diagonal loader: Resize(256), CenterCrop(256) (crop_size 256 for these modes)."""
    return T.CenterCrop(256)(T.Resize(256)(photo))


def test_zhang_pair_shift_is_validate_shift_with_five_pairs_per_image():
    """validate_shift: for each of --epochs-shift 5 passes, two offsets randint(32, size=2) into
    the 256 px crop, 224 px windows, top-1 agreement. Given our drawn offsets, the rewrite's
    windows must equal our views and its agreement our consistency. Catches one pair per image
    (this project's earlier behaviour), windows cut from a rounded resize (the longer side of
    Resize(256) is truncated: 300 x 451 -> 256 x 384, not 385), and consistency over all 45
    view pairs instead of within each pair."""
    protocol = _preset("zhang2019")["zhang2019_pair_shift"]
    photos = [_photo(300, 451, seed=1), _photo(480, 360, seed=2)]
    indices = torch.tensor([3, 8])
    views = protocol(torch.rand(2, 3, 224, 224), indices, photos)
    offsets = protocol.window_offsets(indices)  # [B, 10, 2]: (a_0, b_0, a_1, b_1, ...)
    assert offsets.shape == (2, 10, 2) and offsets.min() >= 0 and offsets.max() < 32
    logits = torch.randn(2, 10, 5)
    logits[:, 1::2] = logits[:, 0::2]  # pairs agree ...
    logits[0, 3] = -logits[0, 2]  # ... but the second pair of image 0
    for b, photo in enumerate(photos):
        picture = _zhang_input(photo)
        agreements = []
        for epoch in range(5):
            (r0, c0), (r1, c1) = offsets[b, 2 * epoch].tolist(), offsets[b, 2 * epoch + 1].tolist()
            window0 = picture[:, r0 : r0 + 224, c0 : c0 + 224]
            window1 = picture[:, r1 : r1 + 224, c1 : c1 + 224]
            torch.testing.assert_close(views[b, 2 * epoch], window0, atol=1e-6, rtol=0)
            torch.testing.assert_close(views[b, 2 * epoch + 1], window1, atol=1e-6, rtol=0)
            agreements.append(
                float(logits[b, 2 * epoch].argmax() == logits[b, 2 * epoch + 1].argmax())
            )
        ours = _per_image("consistency", logits, torch.zeros(2, dtype=torch.long), protocol)[b]
        assert ours == pytest.approx(np.mean(agreements))
    assert _per_image("consistency", logits, torch.zeros(2, dtype=torch.long), protocol)[0] == 0.8


def test_zhang_diagonal_is_validate_diagonal():
    """validate_diagonal: 33 windows at (off, off), off = 0..32, of the 256 px crop; per image
    the probability of the true class and the accuracy per offset (their mean over offsets is
    the printed Prob and Acc@1). Catches a window cut from a differently resized photo, 32 or
    34 offsets, and P(true class) read from another view order."""
    protocol = _preset("zhang2019")["zhang2019_diagonal"]
    photo = _photo(300, 451, seed=3)
    views = protocol(torch.rand(1, 3, 224, 224), torch.tensor([0]), [photo])[0]
    picture = _zhang_input(photo)
    reference = torch.stack([picture[:, off : off + 224, off : off + 224] for off in range(33)])
    torch.testing.assert_close(views, reference, atol=1e-6, rtol=0)
    torch.manual_seed(1)
    logits = torch.randn(1, 33, 10) * 2
    label = torch.tensor([4])
    probs = logits[0].softmax(-1)
    diag_probs = 100.0 * probs[:, 4]
    diag_corrs = (probs.argmax(-1) == 4).float()
    assert _per_image("true_class_probability", logits, label, protocol)[0] == pytest.approx(
        float(diag_probs.mean()) / 100, abs=1e-6
    )
    assert _per_image("accuracy", logits, label, protocol)[0] == pytest.approx(
        float(diag_corrs.mean())
    )


# -- truly_shift_invariant_cnns main.py: validate (circular consistency) ----------------------------


def test_aps_circular_consistency_rolls_both_copies():
    """validate: shift0, shift1 = randint(-32, 32, size=2) each; both copies rolled
    (torch.roll over H, W); agreement of the top-1. Given our drawn shifts the rewrite's inputs
    must equal our views. Catches comparing the unshifted image with one roll (this project's
    earlier behaviour) and shifts drawn in [-32, 32] or [0, 32)."""
    protocol = _preset("aps2021")["aps2021_circular"]
    torch.manual_seed(0)
    images = torch.rand(6, 3, 224, 224)
    indices = torch.arange(6)
    views = protocol(images, indices)
    shifts = protocol.shifts(indices)
    for b in range(6):
        for view in range(2):
            dy, dx = shifts[b, view].tolist()
            torch.testing.assert_close(views[b, view], torch.roll(images[b], (dy, dx), (1, 2)))
    drawn = protocol.shifts(torch.arange(4000))
    assert drawn.min() == -32 and drawn.max() == 31
    assert (drawn[:, 0] != drawn[:, 1]).any(dim=1).float().mean() > 0.99


# -- hendrycks/robustness make_imagenet_p.py: translate ---------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(300, 300), (375, 500), (500, 333)])
def test_imagenet_p_translate_frames_are_make_imagenet_p(height, width):
    """make_imagenet_p.py: img = Resize(256)(photo); frame i = CenterCrop(224)(affine(img,
    angle=0, translate=(i - 20, 0), scale=1, shear=0)) with nearest resampling and zero fill,
    i = 0..40. A square photo has 16 px beside the crop, so frames of |shift| > 16 show a black
    strip. Catches windows cut from the photo resized to cover 264 px (this project's earlier
    behaviour: no black strip, another scale), a translation in the wrong direction, and a
    vertical translation."""
    protocol = _preset("imagenet_p")["imagenet_p_translate"]
    photo = _photo(height, width, seed=4)
    views = protocol(torch.rand(1, 3, 224, 224), torch.tensor([0]), [photo])[0]
    img = T.Resize(256)(photo)
    frames = [
        T.CenterCrop(224)(TF.affine(img, angle=0.0, translate=[i - 20, 0], scale=1.0, shear=[0.0]))
        for i in range(41)
    ]
    torch.testing.assert_close(views, torch.stack(frames), atol=1e-6, rtol=0)
    if width == height:
        assert views[0, :, :, -4:].abs().max() == 0 and views[0, :, :, -5:].abs().max() > 0


# -- surgery: the published BlurPool and APS networks, rewritten -----------------------------------


def _pretrained_like(name: str, seed: int = 0) -> torch.nn.Module:
    """A timm model with random weights *and* random batch-norm statistics and affine
    parameters: timm zero-initialises the last norm of every residual branch, which would make
    the branch silent and let a wrong subsampling point pass unnoticed."""
    from lightning_inv.models.backbones import create_backbone

    torch.manual_seed(seed)
    model, _ = create_backbone(name, num_classes=10)
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = 0.5 + torch.rand(size, generator=generator)
            module.bias.data = 0.2 * torch.randn(size, generator=generator)
            module.running_mean = 0.2 * torch.randn(size, generator=generator)
            module.running_var = 0.5 + torch.rand(size, generator=generator)
    return model.eval()


def _copy_with(model: torch.nn.Module, modify: str) -> torch.nn.Module:
    from lightning_inv.models.surgery import apply_surgery

    clone = _pretrained_like("resnet18")  # same architecture; weights replaced below
    clone.load_state_dict(model.state_dict())
    return apply_surgery(clone, modify).eval()


def _zhang_blurpool(x: torch.Tensor, filt_size: int = 4) -> torch.Tensor:
    """antialiased_cnns BlurPool(channels, filt_size, stride=2): binomial filter a a^T / sum,
    reflect padding [int((f-1)/2), ceil((f-1)/2)] per axis, depthwise conv with stride 2."""
    a = torch.tensor({3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0]}[filt_size])
    filt = a[:, None] * a[None, :]
    filt = (filt / filt.sum())[None, None].repeat(x.shape[1], 1, 1, 1)
    before, after = int((filt_size - 1) / 2), int(np.ceil((filt_size - 1) / 2))
    padded = torch.nn.functional.pad(x, [before, after, before, after], mode="reflect")
    return torch.nn.functional.conv2d(padded, filt, stride=2, groups=x.shape[1])


def _conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv``'s weights at stride 1."""
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, 1, conv.padding)


def _zhang_resnet18(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """antialiased_cnns/resnet.py (pool_only=True, the released models) on the weights of the
    original timm ``model``: the stem conv stays strided; max pool at stride 1 then BlurPool;
    a strided BasicBlock runs conv1 at stride 1 -> bn1 -> relu, then conv2 = [BlurPool, conv];
    its downsample = [BlurPool, conv1x1 (stride 1), bn]. The pool keeps timm's 3x3 kernel
    (Zhang retrained with a 2x2 pool; surgery on pretrained weights keeps the pool it has)."""
    relu = torch.nn.functional.relu
    x = relu(model.bn1(model.conv1(x)))
    pool = model.maxpool
    x = _zhang_blurpool(torch.nn.functional.max_pool2d(x, pool.kernel_size, 1, pool.padding))
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            if block.downsample is None:
                x = block(x)
                continue
            out = relu(block.bn1(_conv(block.conv1, x)))
            out = block.bn2(block.conv2(_zhang_blurpool(out)))
            conv, norm = block.downsample[0], block.downsample[1]
            x = relu(out + norm(_conv(conv, _zhang_blurpool(x))))
    return model.fc(model.global_pool(x))


def test_blurpool_is_zhangs_released_placement_with_filter_4():
    """The published BlurPool ResNet (antialiased-cnns) rewritten on the same weights must give
    our ``blurpool`` network's logits. Catches blurring the stem convolution (this project's
    earlier default; that placement is ``blurpool_all``), filter 3 instead of the package's 4,
    timm's symmetric padding of an even filter (one more row and column), and a blur placed
    before the ReLU of a strided block."""
    original = _pretrained_like("resnet18")
    ours = _copy_with(original, "blurpool")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), _zhang_resnet18(original, x), atol=1e-4, rtol=1e-4)
        everywhere = _copy_with(original, "blurpool_all")
        assert everywhere.conv1.stride == (1, 1) and ours.conv1.stride == (2, 2)
        assert (everywhere(x) - ours(x)).abs().max() > 1e-2


def _aps_down(x: torch.Tensor, indices: torch.Tensor | None = None):
    """aps_downsample_v2 (apspool.py) with the 'l2' criterion: components gathered in the order
    of permute_polyphase (p0: even rows/even cols, p1: odd rows/even cols, p2: even rows/odd
    cols, p3: odd rows/odd cols), the one of largest l2 norm over channels and positions chosen
    per sample unless ``indices`` are given. Square maps, as their code assumes."""
    b, c, n, _ = x.shape
    half = torch.arange(n // 2)
    even, odd = 2 * half[None, :], 1 + 2 * half[None, :]
    even_rows, odd_rows = 2 * n * half[:, None], n + 2 * n * half[:, None]
    permute = torch.cat(
        [
            (even + even_rows).view(-1),
            (even + odd_rows).view(-1),
            (odd + even_rows).view(-1),
            (odd + odd_rows).view(-1),
        ]
    )
    poly = x.reshape(b, c, -1).index_select(2, permute).view(b, c, 4, -1).permute(0, 2, 1, 3)
    if indices is None:
        indices = torch.norm(poly, dim=(2, 3), p=2).argmax(dim=1)
    return poly[torch.arange(b), indices].reshape(b, c, n // 2, n // 2), indices


def _aps_block(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A strided BasicBlock or Bottleneck of aps_models/resnet.py on the original block's
    weights: the strided conv at stride 1, its BN + ReLU, the phase chosen there, the rest at
    the low resolution; the shortcut (ApsPool with the same polyphase_indices, then 1x1 conv,
    BN) subsampled with that phase."""
    relu = torch.nn.functional.relu
    if hasattr(block, "conv3"):  # Bottleneck
        out = relu(block.bn1(block.conv1(x)))
        out, indices = _aps_down(relu(block.bn2(_conv(block.conv2, out))))
        out = block.bn3(block.conv3(out))
    else:  # BasicBlock
        out, indices = _aps_down(relu(block.bn1(_conv(block.conv1, x))))
        out = block.bn2(block.conv2(out))
    conv, norm = block.downsample[0], block.downsample[1]
    shortcut, _ = _aps_down(x, indices)
    return relu(out + norm(_conv(conv, shortcut)))


@pytest.mark.parametrize("name", ["resnet18", "resnet26"])
def test_aps_blocks_are_chaman_and_dokmanics(name):
    """Every strided block of our ``aps`` network against the reference block rewritten on the
    same weights, on random inputs (BasicBlock: resnet18; Bottleneck: resnet26). Catches running
    the whole block at stride 1 and subsampling its output (this project's earlier surgery:
    off by 0.78 relative for BasicBlock), a shortcut that chooses its own phase, the phase
    chosen before the ReLU, and the component order (ties aside)."""
    from lightning_inv.models.backbones import create_backbone
    from lightning_inv.models.surgery import apply_surgery

    original = _pretrained_like(name)
    ours, _ = create_backbone(name, num_classes=10)
    ours.load_state_dict(original.state_dict())
    apply_surgery(ours, "aps")
    ours.eval()
    torch.manual_seed(2)
    checked = 0
    for layer in ("layer2", "layer3", "layer4"):
        block, changed = getattr(original, layer)[0], getattr(ours, layer)[0]
        channels = block.conv1.in_channels
        x = torch.relu(torch.randn(3, channels, 16, 16))
        with torch.no_grad():
            torch.testing.assert_close(changed(x), _aps_block(block, x), atol=1e-5, rtol=1e-4)
        checked += 1
    assert checked == 3


def test_aps_with_every_phase_forced_to_0_is_the_original_network():
    """With the phase fixed at 0 every APS subsampling is the original stride: the network must
    compute what the pretrained weights were trained for. Catches subsampling a BasicBlock's
    output instead of conv1's activation (conv2 then runs at the full resolution) and a stem
    phase chosen before the max pool's stride."""
    from lightning_inv.models.surgery import PolyphaseDown

    original = _pretrained_like("resnet18")
    ours = _copy_with(original, "aps")
    downs = [m for m in ours.modules() if isinstance(m, PolyphaseDown)]
    assert len(downs) == 8  # stem conv, max pool, and in layers 2-4 one leader + one follower
    for down in downs:
        down.phase = 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), original(x), atol=1e-5, rtol=1e-4)
