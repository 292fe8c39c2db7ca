"""Named experiments: a paper's table or figure with its authors' parameters.

``evaluate.py --experiment NAME`` runs a preset; ``paper`` runs all of them. A preset owns
everything about itself: its protocols (``build``, whose result keys start with the preset's
name, ``table1_crop_s0.4``), the paired contrast it reports (``contrast``), the figures drawn
for it (``figures``) and the published values set beside ours (``published``, a data file in
``published/``). Where a paper does not state a parameter, the value chosen here is said in
``description`` and in docs/design.md ("Presets").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from lightning_inv.protocols import (
    Circular,
    Crop,
    Embed,
    ImageNetPTranslate,
    LieDerivative,
    PairShift,
    Protocol,
    RandomLocation,
    Scale,
    Translate,
)
from lightning_inv.protocols.sweeps import DEFAULT_OBJECT_SCALE

PUBLISHED = Path(__file__).parent / "published"


@dataclass(frozen=True)
class PresetContext:
    """What a preset may adapt to: the model's canvas and mean colour, the seed, the fill of the
    random-location sets (``inpaint`` for photos, ``black`` suits digits) and the object scale of
    the fig2 sweep (the paper states none: ``DEFAULT_OBJECT_SCALE``, or where a checkpoint was
    trained)."""

    canvas: int
    mean: tuple[float, ...]
    seed: int = 0
    location_fill: str = "inpaint"
    object_scale: float = DEFAULT_OBJECT_SCALE


@dataclass(frozen=True)
class Contrast:
    """A paired contrast between two groups of a preset's protocols: per image, the mean of each
    measure over the ``first`` protocols minus its mean over the ``second`` (reported as
    ``<preset>_<name>`` in results.json, with its bootstrap interval over images)."""

    name: str
    first: str
    first_keys: tuple[str, ...]
    second: str
    second_keys: tuple[str, ...]
    measures: tuple[str, ...] = ("p_top1_change", "mac")


@dataclass(frozen=True)
class Correlation:
    """A rank correlation over images between one measure of one protocol and one of another
    (Spearman, with its bootstrap interval; reported as ``<preset>_correlation``)."""

    first_key: str
    first_measure: str
    second_key: str
    second_measure: str

    @property
    def name(self) -> str:
        return f"{self.first_key}/{self.first_measure} ~ {self.second_key}/{self.second_measure}"


@dataclass(frozen=True)
class Preset:
    """A named experiment: its protocols, the keys of those to probe (``probe``: nonshiftability
    of its ordered protocols, Fig. 10; per-layer Lie derivatives of its differential ones), its
    contrast, its rank correlations between measures, its figures (names of
    ``lightning_inv.reporting.figures.PRESET_FIGURES``, each with the protocol keys it draws)
    and its published values (a file of ``published/``, keyed by timm weights name)."""

    name: str
    source: str
    description: str
    build: Callable[[PresetContext], list[Protocol]]
    probe: bool = False
    contrast: Contrast | None = None
    figures: tuple[tuple[str, tuple[str, ...]], ...] = ()
    published: str | None = None
    correlations: tuple[Correlation, ...] = ()

    def published_values(self) -> dict[str, Any] | None:
        """The published table (with its source and how its numbers combine), or None."""
        return read_published(self.published) if self.published else None


@cache
def read_published(name: str) -> dict[str, Any]:
    """A published table of ``published/`` (JSON: source, combination, models by timm weights)."""
    return json.loads((PUBLISHED / name).read_text(encoding="utf-8"))


def table1_sizes() -> list[float]:
    """The authors' sizes s = 0.1, 0.4, ..., 1.9 as their script has them: the floats of
    ``np.arange(0.1, 2.1, 0.3)``, unrounded (the sixth is 1.6000000000000003, so the Black photo
    is ``int(224 / s)`` = 139 px, not 140)."""
    return [float(s) for s in np.arange(0.1, 2.1, 0.3)]


CROP_SIZES_UP_TO = 1.1  # the script's test: s <= 1.1 is "Crop", larger s "Black"


def _table1_key(size: float) -> str:
    kind = "crop" if size <= CROP_SIZES_UP_TO else "black"
    return f"table1_{kind}_s{round(size, 1):g}"


TABLE1_CROP = tuple(_table1_key(s) for s in table1_sizes() if s <= CROP_SIZES_UP_TO)
TABLE1_BLACK = tuple(_table1_key(s) for s in table1_sizes() if s > CROP_SIZES_UP_TO)


def _table1(c: PresetContext) -> list[Protocol]:
    protocols: list[Protocol] = []
    for s in table1_sizes():
        name = f"{round(s, 1):g}"
        if s <= CROP_SIZES_UP_TO:
            # min(): the script's fourth size is 1.0000000000000002; a crop box cannot exceed
            # the photo, and RandomResizedCrop draws the same boxes for both values.
            protocols.append(
                Crop(
                    canvas=c.canvas,
                    seed=c.seed,
                    area=min(s, 1.0),
                    margin=10,
                    steps=9,
                    direction="diagonal",
                    label=f"table1_crop_s{name}",
                )
            )
        else:
            protocols.append(
                Embed(
                    canvas=c.canvas,
                    seed=c.seed,
                    zoom_out=s,
                    fill="mean",
                    mean=c.mean,
                    direction="diagonal",
                    label=f"table1_black_s{name}",
                )
            )
    return protocols


def _fig2(c: PresetContext) -> list[Protocol]:
    return [
        Translate(
            canvas=c.canvas,
            seed=c.seed,
            scale=c.object_scale,
            fill="inpaint",
            mean=c.mean,
            direction="vertical",
            label="fig2_translate_inpaint",
        )
    ]


def fig6_scales() -> list[float]:
    """Object scales 0.3, 0.4, ..., 1.0 (1.0: the photo fills the canvas, the reference)."""
    return [round(0.3 + 0.1 * i, 1) for i in range(8)]


def _fig6(c: PresetContext) -> list[Protocol]:
    return [
        RandomLocation(
            canvas=c.canvas,
            seed=c.seed,
            scale=s,
            fill=c.location_fill,
            mean=c.mean,
            label=f"fig6_random_location_s{s:g}",
        )
        for s in fig6_scales()
    ]


def _fig9(c: PresetContext) -> list[Protocol]:
    return [
        Scale(
            canvas=c.canvas,
            seed=c.seed,
            min_scale=0.55,
            max_scale=0.7,
            fill="inpaint",
            mean=c.mean,
            label="fig9_scale_inpaint",
        )
    ]


ZHANG_PAIRS = 5  # antialiased-cnns main.py: --epochs-shift 5 passes, one pair per image each


def _zhang2019(c: PresetContext) -> list[Protocol]:
    shift = PairShift(
        canvas=c.canvas, seed=c.seed, num_pairs=ZHANG_PAIRS, label="zhang2019_pair_shift"
    )
    margin = shift.base - c.canvas  # validate_diagonal: offsets (k, k), k = 0..32 at 224
    diagonal = Crop(
        canvas=c.canvas,
        seed=c.seed,
        margin=margin,
        steps=margin + 1,
        direction="diagonal",
        label="zhang2019_diagonal",
    )
    return [shift, diagonal]


def _aps2021(c: PresetContext) -> list[Protocol]:
    return [
        Circular(
            canvas=c.canvas,
            seed=c.seed,
            max_shift=round(c.canvas * 32 / 224),
            label="aps2021_circular",
        )
    ]


def _imagenet_p(c: PresetContext) -> list[Protocol]:
    return [ImageNetPTranslate(canvas=c.canvas, seed=c.seed, max_shift=20)]


def _lie2023(c: PresetContext) -> list[Protocol]:
    lie = LieDerivative(canvas=c.canvas, seed=c.seed, label="lie2023_lie")
    margin = round(c.canvas * 16 / 224)
    shifts = Crop(
        canvas=c.canvas,
        seed=c.seed,
        margin=margin,
        steps=margin + 1,
        direction="horizontal",
        label="lie2023_crop_shift",
    )
    return [lie, shifts]


LIE2023_KEYS = ("lie2023_lie", "lie2023_crop_shift")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "table1",
            "Azulay & Weiss, JMLR 2019, Table 1 and the size plot; the authors' script "
            "CheckTranslationInvariance.py (github.com/AzulEye/CNN-Failures)",
            "the script's sizes (floats of np.arange(0.1, 2.1, 0.3)): s <= 1.1 'Crop' (a crop of "
            "area s of the original photo resized to canvas + 10 px, 9 windows at diagonal "
            "offsets 0..8); s > 1.1 'Black' (the photo resized to int(canvas / s) px on the mean "
            "colour, diagonal offsets -4..+4): P(top-1 change), MAC, accuracy over 8 one-pixel "
            "pairs",
            _table1,
            contrast=Contrast("black_minus_crop", "black", TABLE1_BLACK, "crop", TABLE1_CROP),
            figures=(("table1_sizes", TABLE1_CROP + TABLE1_BLACK),),
            published="azulay_weiss_2019_table1.json",
        ),
        Preset(
            "fig2",
            "Azulay & Weiss 2019, Fig. 1 (top) and Fig. 2; jaggedness Sec. 2, MAD Fig. 7",
            f"vertical translation of the photo at {DEFAULT_OBJECT_SCALE:g} of the canvas (or a "
            "checkpoint's training "
            "scale), shifts of +-16 px at 224 (scaled to the canvas; the paper states neither), "
            "inpainted background",
            _fig2,
        ),
        Preset(
            "fig6",
            "Azulay & Weiss 2019, Sec. 5 and Fig. 6",
            "one view per photo at a seeded random location, object scales 0.3..1.0, inpainted "
            "background (1.0 = the photo fills the canvas)",
            _fig6,
        ),
        Preset(
            "fig9",
            "Azulay & Weiss 2019, Fig. 1 (middle) and Fig. 9",
            "the photo at the centre growing 1 px per view from 0.55 to 0.70 of the canvas, "
            "inpainted background",
            _fig9,
        ),
        Preset(
            "fig10",
            "Azulay & Weiss 2019, Sec. 3 and Fig. 10",
            "nonshiftability of every activity (the output of each nonlinearity) on the fig2 "
            "sweep: per image, the number of >20% jumps of a feature map's global sum per "
            "counted feature map, against depth (convolutions before it)",
            _fig2,
            probe=True,
        ),
        Preset(
            "zhang2019",
            "Zhang, 'Making convolutional networks shift-invariant again', ICML 2019 "
            "(antialiased-cnns main.py: validate_shift and validate_diagonal)",
            "pair shift: 5 pairs of canvas-sized windows per image, each window at a random "
            "offset in [0, 32)^2 of the 256 px centre crop (Resize(256) + CenterCrop(256); at "
            "224, scaled to the canvas): consistency of the top-1 within each pair; diagonal: "
            "33 windows at offsets (k, k), k = 0..32, of that crop: accuracy and P(true class) "
            "per offset",
            _zhang2019,
            figures=(("offset_curves", ("zhang2019_diagonal",)),),
        ),
        Preset(
            "aps2021",
            "Chaman & Dokmanic, 'Truly shift-invariant convolutional neural networks', CVPR 2021 "
            "(truly_shift_invariant_cnns main.py: validate)",
            "two circular shifts of the prepared image, each by its own random (dy, dx) in "
            "[-32, 32) px (at 224): consistency of the top-1 between them",
            _aps2021,
        ),
        Preset(
            "imagenet_p",
            "Hendrycks & Dietterich, ICLR 2019, ImageNet-P 'translate' (hendrycks/robustness "
            "make_imagenet_p.py, test.py)",
            "41 frames: Resize(256), a horizontal translation by -20..+20 px with black fill, "
            "CenterCrop(224) (scaled to the canvas; the video compression of the published "
            "frames is not reproduced): flip rate and top-5 distance",
            _imagenet_p,
        ),
        Preset(
            "lie2023",
            "Gruver, Finzi, Goldblum & Wilson, 'The Lie Derivative for Measuring Learned "
            "Equivariance', ICLR 2023 (ngruver/lie-deriv, lee/e2e_lee.py, lee/layerwise_lee.py)",
            "Lie derivatives at the prepared image along horizontal and vertical translation "
            "(per px), rotation (per degree) and scaling (per 1%), band-limited (spectral "
            "tangents; the paper's code uses bilinear sampling): ||d softmax/dt||^2 and "
            "(d log p(true)/dt)^2 per image; the horizontal one split into every layer's "
            "contribution, beside Fig. 10's nonshiftability on a discrete sweep of the same "
            "photos (17 windows 1 px apart, horizontally, at 224) and rank-correlated with its "
            "P(top-1 change)",
            _lie2023,
            probe=True,
            figures=(("lie_layers", LIE2023_KEYS),),
            correlations=(
                Correlation(
                    "lie2023_lie", "lie_softmax_translate_x", "lie2023_crop_shift", "p_top1_change"
                ),
                Correlation("lie2023_lie", "lie_softmax_translate_x", "lie2023_crop_shift", "mac"),
                Correlation("lie2023_lie", "lie_logp_translate_x", "lie2023_crop_shift", "mad"),
            ),
        ),
    )
}
PAPER = "paper"  # every preset
DEFAULT_EXPERIMENTS = ("table1", "fig2", "fig6", "fig10")


def expand_experiments(names: Sequence[str]) -> list[str]:
    """``paper`` -> every preset; unknown names are refused with the list of known ones."""
    expanded: list[str] = []
    for name in names:
        if name == PAPER:
            expanded += list(PRESETS)
        elif name in PRESETS:
            expanded.append(name)
        else:
            raise ValueError(
                f"unknown experiment {name!r}; choose from {', '.join([*PRESETS, PAPER])}"
            )
    return list(dict.fromkeys(expanded))


def build_experiments(
    names: Sequence[str], context: PresetContext
) -> tuple[list[Protocol], set[str]]:
    """The protocols of the named presets (each key once) and the keys to probe for Fig. 10."""
    protocols: dict[str, Protocol] = {}
    probed: set[str] = set()
    for name in expand_experiments(names):
        preset = PRESETS[name]
        for protocol in preset.build(context):
            protocols.setdefault(protocol.key, protocol)
            if preset.probe and (protocol.ordered or protocol.differential):
                probed.add(protocol.key)
    return list(protocols.values()), probed


def presets_of(names: Sequence[str]) -> list[Preset]:
    """The presets a list of experiment names runs (``paper`` expanded)."""
    return [PRESETS[name] for name in expand_experiments(names)]
