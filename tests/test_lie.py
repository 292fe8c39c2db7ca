"""Lie derivatives (Gruver et al. 2023): tangents, end-to-end derivatives, per-layer attribution.

Each test names the plausible wrong implementation it catches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from lightning_inv.measuring.lie import (
    Linearized,
    linearizable,
    log_probability_lie,
    logit_derivatives,
    softmax_lie,
)
from lightning_inv.measuring.lie_layers import (
    UNATTRIBUTED,
    LayerAttribution,
    attribution_points,
)
from lightning_inv.measuring.statistics import rank_correlation, spearman
from lightning_inv.protocols.lie import LieDerivative
from lightning_inv.protocols.tangents import BOUNDARIES, GENERATORS, tangent, transformed

# -- tangents ----------------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("size", [15, 16])
def test_tangent_is_the_derivative_of_the_band_limited_transformation(boundary, size):
    """X x equals central differences (+-1e-4, float64) of the exact band-limited sub-pixel
    transformation, for every generator, odd and even sizes. Catches: a one-pixel difference
    (np.gradient) instead of the spectral derivative (off by O(1) on noise), a sign error (content moving left), radians instead of degrees, a
    log-scale of 1 instead of 1%, the rotation centre at pixel 0."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    for generator in GENERATORS:
        step = 1e-4
        central = (
            transformed(x, generator, step, boundary) - transformed(x, generator, -step, boundary)
        ) / (2 * step)
        assert torch.allclose(tangent(x, generator, boundary=boundary), central, atol=1e-6), (
            generator
        )


def test_tangent_units_and_directions_by_hand():
    """On a horizontal sinusoid I(u) = sin(2 pi u / n), the same in every row: translate_x is
    -I'(u) (the content moves right), translate_y is 0, a feature map half the image's width
    moves half as fast, and rotation is -(v - c) I'(u) per radian times pi/180. Catches: x and
    y swapped, the content moving left, the stride of a feature map ignored, the rotation's
    sign or centre."""
    n = 16
    u = torch.arange(n, dtype=torch.float64)
    image = torch.sin(2 * math.pi * u / n).expand(n, n).clone()  # rows identical
    slope = 2 * math.pi / n * torch.cos(2 * math.pi * u / n)
    moved = tangent(image, "translate_x", boundary="periodic")
    assert torch.allclose(moved, -slope.expand(n, n), atol=1e-10)
    assert torch.allclose(
        tangent(image, "translate_y", boundary="periodic"),
        torch.zeros(n, n, dtype=torch.float64),
        atol=1e-10,
    )
    half = tangent(image, "translate_x", image_size=(2 * n, 2 * n), boundary="periodic")
    assert torch.allclose(half, moved / 2, atol=1e-12)
    # rotation: X = -(v - c) d/du + (u - c) d/dv; d/dv = 0 here, so -(v - c) I'(u) per radian
    v = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2)[:, None]
    expected = -v * slope * math.pi / 180
    assert torch.allclose(tangent(image, "rotate", boundary="periodic"), expected, atol=1e-10)


# -- end to end --------------------------------------------------------------------------------


def _finite_difference(model, images, generator, step=1e-3):
    """Central differences of the logits over a band-limited sub-pixel transformation (+-1e-3
    px, or degree, or percent), float64."""
    up = model(transformed(images, generator, step))
    down = model(transformed(images, generator, -step))
    return (up - down) / (2 * step)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit"])
def test_end_to_end_matches_finite_differences(name):
    """``logit_derivatives`` (one forward-mode pass) equals central differences of the logits
    under the band-limited transformation, for a CNN and a ViT (timm's test models, 32 px,
    float64), every generator, to 1e-5 of the derivative's scale. Catches: a tangent that is
    not the generator of the transformation the model sees (one-pixel difference, other
    boundary, other units), a forward-mode pass through the wrong model (the frozen copy out
    of sync), the fused attention kernel (no forward mode) left in."""
    torch.manual_seed(0)
    kwargs = {"img_size": 32} if "vit" in name else {}
    model = linearizable(timm.create_model(name, num_classes=7, **kwargs).eval()).double()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    _, derivatives = logit_derivatives(model, images, tuple(GENERATORS))
    assert derivatives.shape == (2, len(GENERATORS), 7)
    for k, generator in enumerate(GENERATORS):
        with torch.no_grad():
            expected = _finite_difference(model, images, generator)
        scale = expected.abs().max().item()
        assert scale > 1e-6, f"{name} {generator}: the derivative vanished"
        assert torch.allclose(derivatives[:, k].double(), expected, atol=1e-5 * scale + 1e-9), (
            generator
        )


class _Circular(nn.Sequential):
    """Linear and translation-equivariant (stride 1, circular padding) up to global pooling, or
    with a ``stride`` 2 subsampling, or a pointwise ``nonlinearity`` inserted."""

    def __init__(self, stride: int = 1, nonlinearity: bool = False) -> None:
        layers = [nn.Conv2d(3, 6, 3, padding=1, padding_mode="circular")]
        if nonlinearity:
            layers.append(nn.ReLU())
        layers += [
            nn.Conv2d(6, 6, 3, stride=stride, padding=1, padding_mode="circular"),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 4),
        ]
        super().__init__(*layers)


def test_zero_for_an_exactly_invariant_model_nonzero_for_subsampling_and_nonlinearity():
    """Theory: a stride-1 circular convolutional network with global average pooling is exactly
    invariant to band-limited circular translation, so its translation Lie derivative is 0 (to
    float64 rounding); a ReLU on the sub-pixel shift (aliasing) makes it non-zero, and so does a
    stride-2 layer on a 15 px image (its samples do not tile the period). On 16 px the linear
    stride-2 network keeps only the constant and Nyquist frequencies through global pooling,
    and the Nyquist term has no slope at the samples: 0 again. Catches: a one-pixel difference
    tangent (it does not commute with the convolutions: the invariant model would not give 0),
    the mirror boundary used where the periodic one is asked."""
    torch.manual_seed(0)

    def size(model, side=16, boundary="periodic"):
        images = torch.rand(3, 3, side, side, dtype=torch.float64)
        model = model.double().eval()
        _, d = logit_derivatives(model, images, ("translate_x", "translate_y"), boundary=boundary)
        return d.abs().max().item()

    assert size(_Circular()) < 1e-12
    assert size(_Circular(), side=15) < 1e-12
    assert size(_Circular(nonlinearity=True)) > 1e-4
    assert size(_Circular(stride=2), side=15) > 1e-4
    assert size(_Circular(stride=2), side=16) < 1e-12
    assert (
        size(_Circular(), boundary="reflect") > 1e-4
    )  # a mirror extension is not a circular shift


def test_measures_by_hand():
    """logits (2, 0), d logits (1, -1), true class 1 (not the top-1): p = (0.881, 0.119),
    dp = +-2 p0 p1 = +-0.2100, ||dp||^2 = 0.0882; d log p_1 = -1 - <p, dz> = -1.762, squared
    3.105. Catches: the squared norm of the logit derivative (2.0) instead of the softmax's,
    log p of the top-1 class (0.058) instead of the true class, a missing square."""
    rows = torch.tensor([[[2.0, 0.0], [1.0, -1.0]]])
    p0 = 1 / (1 + math.exp(-2))
    assert softmax_lie(rows, 1).item() == pytest.approx(2 * (2 * p0 * (1 - p0)) ** 2, rel=1e-6)
    expected = (-1 - (p0 * 1 + (1 - p0) * -1)) ** 2
    assert log_probability_lie(rows, torch.tensor([1]), 1).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_linearized_copy_computes_the_same_function(tiny_classifier):
    """The frozen-batch-norm copy gives the classifier's logits (float rounding) and leaves the
    classifier itself untouched. Catches: freezing the batch norms of the evaluated model in
    place, a missing input normalisation in the copy."""
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 32)
    before = {k: v.clone() for k, v in tiny_classifier.state_dict().items()}
    linearized = Linearized(tiny_classifier)
    with torch.no_grad():
        assert torch.allclose(linearized(images), tiny_classifier(images), atol=1e-4)
    after = tiny_classifier.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- per layer ---------------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x):
        return x + self.act(self.conv(x))


class _Net(nn.Module):
    """Stem (strided), batch norm, ReLU, a residual block, pooling, head; ``position``: a fixed
    map added in ``forward`` outside any module (like a ViT's position embedding)."""

    def __init__(self, position: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.block = _Residual()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 5)
        self.position = nn.Parameter(torch.randn(1, 6, 8, 8)) if position else None

    def forward(self, x):
        x = self.act(self.norm(self.stem(x)))
        if self.position is not None:
            x = x + self.position
        return self.head(self.pool(self.block(x)).flatten(1))


def _attribution(net, generator="translate_x"):
    torch.manual_seed(0)
    net.norm.running_mean.uniform_(-0.5, 0.5)
    net.norm.running_var.uniform_(0.5, 2.0)
    model = linearizable(net.eval()).double()
    return LayerAttribution(model, model, attribution_points(model, 16), generator)


@pytest.mark.parametrize("generator", ["translate_x", "rotate"])
def test_layer_contributions_add_up_to_the_end_to_end_derivative(generator):
    """The chain rule: the signed per-layer contributions c_l sum to the end-to-end derivative
    exactly (float64), through a residual block and a batch norm; the points are the layers in
    forward order with their depths. Catches: X g(h) not subtracted from a layer's own
    derivative (the sum then counts the transformation itself), the output tangent of a
    strided layer at the input's resolution, a layer skipped or counted twice."""
    attribution = _attribution(_Net())
    attribution = LayerAttribution(
        attribution.run, attribution.backbone, attribution.points, generator
    )
    names = ["stem", "norm", "act", "block.conv", "block.act", "pool"]
    assert [p.name for p in attribution.points] == names
    assert [p.depth for p in attribution.points] == [0, 1, 1, 1, 2, 2]
    images = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    parts, total = attribution.signed(images)
    assert total.abs().max() > 1e-4
    assert torch.allclose(parts.sum(1), total, atol=1e-10 * total.abs().max().item() + 1e-14)
    values = attribution(images)
    assert values[UNATTRIBUTED].max() < 1e-20
    assert values["norm"].max() < 1e-20  # a per-channel affine map commutes with any X


def test_an_operation_outside_modules_is_reported_unattributed():
    """A fixed map added in ``forward`` (no module) does not commute with translation: its
    share appears as ``UNATTRIBUTED``, equal to |J_softmax (e2e - sum c_l)|^2. Catches: an
    attribution that silently drops what no module accounts for."""
    attribution = _attribution(_Net(position=True))
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    values = attribution(images)
    assert values[UNATTRIBUTED].min() > 1e-8


def test_exact_contributions_equal_the_reference_probe_estimator():
    """Gruver et al.'s layerwise_lee.py estimates each layer's contribution with random probes:
    per probe z ~ N(0, I_C), backpropagate z . softmax(f(x)) and take (grad at the layer's
    output . the layer's own Lie derivative)^2; the mean over probes is |J_softmax c_l|^2 in
    expectation. A rewrite of that estimator (backward hooks, 600 probes) agrees with our exact
    values within 5 standard errors, per image and layer. Catches: contributions in logit space
    (no softmax Jacobian), the layer's output tangent not subtracted."""
    net = _Net()
    attribution = _attribution(net)
    model = attribution.run
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    exact = attribution(images)
    _, own = attribution.own_derivatives(images)
    modules = dict(model.named_modules())
    grads: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, grad_input, grad_output):
            grads[name] = grad_output[0].detach()

        return hook

    handles = [
        modules[p.module].register_full_backward_hook(keep(p.name)) for p in attribution.points
    ]
    generator = torch.Generator().manual_seed(0)
    probes = 600
    samples = {p.name: [] for p in attribution.points}
    try:
        for _ in range(probes):
            x = images.clone().requires_grad_(True)
            probabilities = model(x).softmax(-1)
            z = torch.randn(probabilities.shape, generator=generator, dtype=torch.float64)
            (z * probabilities).sum().backward()
            for index, point in enumerate(attribution.points):
                estimate = (grads[point.name] * own[index]).flatten(1).sum(-1) ** 2
                samples[point.name].append(estimate)
    finally:
        for handle in handles:
            handle.remove()
    for point in attribution.points:
        drawn = torch.stack(samples[point.name])  # [probes, B]
        mean, error = drawn.mean(0), drawn.std(0) / math.sqrt(probes)
        assert torch.all((mean - exact[point.name]).abs() <= 5 * error + 1e-15), point.name


def test_transformer_tokens_are_refused_for_attribution():
    """Per-layer attribution reads [B, C, H, W] maps; a ViT's tokens are refused with a message
    that keeps the end-to-end measure. Catches: tokens silently read as images."""
    model = linearizable(timm.create_model("test_vit", img_size=32, num_classes=3).eval())
    with pytest.raises(ValueError, match="transformer tokens"):
        attribution_points(model, 32)


def test_evaluator_measures_lie_derivatives_per_image_and_per_layer(tiny_classifier):
    """Through ``Trainer.test`` (which runs under ``torch.inference_mode``): the per-image
    ``lie_softmax_*`` equal the direct computation on the same images, and the per-layer split
    of resnet10t (max pool, residual sums, fused norm-act layers) leaves nothing unattributed.
    Catches: a per-layer pass whose tangent inference mode silently drops (every layer 0, all
    of it "unattributed"), rows of a differential protocol read as views."""
    import pytorch_lightning as pl

    from lightning_inv.data.datamodules import EvalDataModule
    from lightning_inv.measuring.evaluator import InvarianceEvaluator

    torch.manual_seed(0)
    images = torch.rand(5, 3, 32, 32)
    data = [{"image": images[i], "label": i % 10, "index": i, "name": str(i)} for i in range(5)]
    protocol = LieDerivative(canvas=32, generators=("translate_x", "rotate"))
    evaluator = InvarianceEvaluator(
        tiny_classifier, [protocol], probe=True, probe_keys={protocol.key}, intervals=False
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(evaluator, datamodule=EvalDataModule(data, 2), verbose=False)
    result = evaluator.per_image[protocol.key]
    with torch.no_grad():
        logits, derivatives = logit_derivatives(
            Linearized(tiny_classifier), images, protocol.generators
        )
    rows = torch.cat([logits[:, None], derivatives], 1)
    expected = softmax_lie(rows, 2)
    assert np.allclose(result.values["lie_softmax_translate_x"], expected[:, 0].numpy(), rtol=1e-4)
    assert np.allclose(result.values["lie_softmax_rotate"], expected[:, 1].numpy(), rtol=1e-4)
    layers = result.lie_layers
    assert len(layers) > 10 and result.kinds["conv1.0"] == "strided convolution"
    attributed = sum(v for k, v in layers.items() if k != UNATTRIBUTED)
    assert (attributed > 0).all()
    assert (layers[UNATTRIBUTED] < 1e-6 * result.values["lie_softmax_translate_x"]).all()
    summary = evaluator.results[protocol.key]
    assert summary["lie_layers_generator"] == "translate_x"
    assert summary["lie_layers_depth"][UNATTRIBUTED] == max(summary["lie_layers_depth"].values())


# -- protocol and correlation ---------------------------------------------------------------------


def test_protocol_declares_rows_and_measures():
    """One view, 1 + K rows; its measures name each generator; bad input refused."""
    protocol = LieDerivative(canvas=32, generators=("translate_x", "scale"))
    assert (protocol.num_views, protocol.num_rows) == (1, 3)
    assert "lie_softmax_scale" in protocol.measures and "lie_logp_translate_x" in protocol.measures
    with pytest.raises(ValueError, match="unknown transformation"):
        LieDerivative(canvas=32, generators=("shear",))
    with pytest.raises(ValueError, match="unknown boundary"):
        LieDerivative(canvas=32, boundary="zeros")


def test_spearman_with_ties_matches_scipy():
    """Spearman's rho with tied ranks (P(top-1 change) is mostly 0) equals scipy's. Catches:
    Pearson on the values, ties ranked by position."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    lie = rng.exponential(size=40)
    change = (rng.random(40) < 0.3).astype(float) * rng.integers(1, 3, 40)
    assert spearman(lie, change) == pytest.approx(stats.spearmanr(lie, change).statistic, abs=1e-12)
    result = rank_correlation(lie, lie**3, resamples=50)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]


@pytest.mark.slow
def test_lie2023_runs_end_to_end_and_resumes_from_its_saved_model(repo_root, tmp_path):
    """``evaluate.py --experiment lie2023`` as a user runs it (two tiny models, 6 digits, with
    figures): results.json holds the Lie measures with intervals, the per-layer split with
    depths and kinds, the rank correlations and the paired difference; the figure beside Fig.
    10 is drawn; a --resume of the run stopped before its outputs reads the saved per-layer
    values back, writes the same numbers and draws the figure again. Catches: per-layer values lost on resume, the figure silently
    skipped, a correlation over mismatched images."""
    import json
    import subprocess
    import sys

    from tiny_runs import TINY_DIGITS

    out = tmp_path / "run"
    flags = [a for a in TINY_DIGITS if a != "--no-figures"]
    models = flags.index("--models")
    flags[models + 1 : models + 2] = ["resnet10t", "resnet10t:blurpool"]
    command = [sys.executable, str(repo_root / "evaluate.py"), *flags]
    args = ["--experiment", "lie2023", "--num-images", "6", "--output", str(out)]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank correlation over images" in done.stdout
    results = json.loads((out / "results.json").read_text())
    row = results["models"]["resnet10t"]["lie2023_lie"]
    assert row["num_images"] == 6 and len(row["lie_softmax_rotate_ci95"]) == 2
    assert row["lie_layers_kind"]["conv1.0"] == "strided convolution"
    assert row["lie_layers"][UNATTRIBUTED] < 1e-6 * row["lie_softmax_translate_x"]
    correlation = results["lie2023_correlation"]["resnet10t"]
    assert all(c["num_images"] == 6 for c in correlation.values())
    pair = results["comparisons"]["resnet10t - resnet10t:blurpool"]["lie2023_lie"]
    assert "lie_softmax_scale" in pair
    assert (out / "figures/lie_layers.png").stat().st_size > 10_000
    # As if the run had stopped after measuring both models, before its outputs.
    results["complete"] = False
    (out / "results.json").write_text(json.dumps(results))
    (out / "figures/lie_layers.png").unlink()
    resumed = subprocess.run(
        [sys.executable, str(repo_root / "evaluate.py"), "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["complete"] and again["models"] == results["models"]
    assert (out / "figures/lie_layers.png").is_file()
