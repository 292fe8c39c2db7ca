"""Tangents of image transformations: the velocity field of an infinitesimal translation,
rotation or scaling, applied to an image or a feature map (docs/design.md, "Lie derivatives").

A one-parameter transformation T_t of an image x has the tangent X x = d/dt T_t x at t = 0, the
generator applied to x. The derivative of a sub-pixel transformation needs x between pixels: here
x is read as a band-limited interpolant (a trigonometric polynomial through its samples), whose
gradient is exact in the Fourier domain (spectral derivative; the Nyquist frequency of an even
length has no derivative at the samples and is dropped). So X x is the derivative of a
band-limited sub-pixel transformation of x, not a one-pixel difference. Two boundaries
(``BOUNDARIES``): ``periodic`` interpolates x itself as one period (a circular shift; a network
of circular convolutions of stride 1, pointwise linear maps and global average pooling is then
exactly invariant, test_lie.py checks it), which puts a seam where the right edge wraps onto
the left one and rings over the whole image; ``reflect`` (the default for photos) interpolates
the mirror extension of x (x followed by its reflection along each axis, a period of twice the
size), which has no seam, so content moves in across a mirrored edge (as the bilinear sampling
with reflected indices of Gruver et al.'s code does).

Units (``GENERATORS``), chosen so that one unit is a "small transformation" of the paper:
``translate_x`` / ``translate_y``: per pixel of the input image (the content moves right / down);
``rotate``: per degree, counter-clockwise on the screen, about the image centre; ``scale``: per 1%
of size, about the centre. A feature map of a network moves with its input: a map of width w
under an input of width W moves w / W of its pixels per input pixel, and rotates and scales
about its own centre (its pixel grid is taken as aligned with the input's at the centre; a
strided layer's half-pixel offset is not modelled).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

GENERATORS: dict[str, str] = {
    "translate_x": "horizontal translation, per input pixel",
    "translate_y": "vertical translation, per input pixel",
    "rotate": "rotation about the centre, per degree",
    "scale": "scaling about the centre, per 1% of size",
}
BOUNDARIES = ("reflect", "periodic")
DEGREE = math.pi / 180.0
PERCENT = math.log(1.01)  # the log-scale of a 1% enlargement


def check_generator(name: str) -> None:
    if name not in GENERATORS:
        raise ValueError(f"unknown transformation {name!r}; choose from {', '.join(GENERATORS)}")


def check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; choose from {', '.join(BOUNDARIES)}")


def mirror_extension(x: Tensor, dims: tuple[int, ...] = (-2, -1)) -> Tensor:
    """x followed by its reflection along each of ``dims`` (twice the size along each)."""
    for dim in dims:
        x = torch.cat([x, x.flip(dim)], dim)
    return x


def spectral_derivative(x: Tensor, dim: int, boundary: str = "periodic") -> Tensor:
    """d x / d(pixel) along ``dim`` of the band-limited interpolant, at the samples (the
    interpolant of x as one period, or of its mirror extension along ``dim``).

    >>> u = torch.arange(16.0)
    >>> wave = torch.sin(2 * math.pi * u / 16)
    >>> torch.allclose(spectral_derivative(wave, 0), 2 * math.pi / 16 * torch.cos(2 * math.pi * u / 16), atol=1e-5)
    True
    """
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    if boundary == "reflect":
        return spectral_derivative(mirror_extension(x, (dim,)), dim).narrow(dim, 0, n)
    spectrum = torch.fft.rfft(x, dim=dim)
    frequency = torch.arange(spectrum.shape[dim], device=x.device, dtype=x.dtype)
    factor = (2j * math.pi / n) * frequency
    if n % 2 == 0:
        factor[-1] = 0  # the Nyquist term: its interpolant cos(pi u) has no slope at the samples
    shape = [1] * x.dim()
    shape[dim] = -1
    return torch.fft.irfft(spectrum * factor.view(shape), n=n, dim=dim)


def _centred(n: int, like: Tensor) -> Tensor:
    """Pixel coordinates relative to the centre, (n - 1) / 2."""
    return torch.arange(n, device=like.device, dtype=like.dtype) - (n - 1) / 2


def tangent(
    x: Tensor,
    generator: str,
    image_size: tuple[int, int] | None = None,
    boundary: str = "reflect",
) -> Tensor:
    """X x, the tangent of ``generator`` at ``x`` [..., H, W] (same shape as ``x``).

    ``image_size``: (H, W) of the network's input when ``x`` is a feature map (translation then
    moves it by H_map / H_image of its pixels per input pixel); None for the image itself.
    Exactly: translate_x: -d/du; translate_y: -d/dv; rotate: -(v - c_v) d/du + (u - c_u) d/dv
    (times pi / 180); scale: -((u - c_u) d/du + (v - c_v) d/dv) (times log 1.01), with u the
    column and v the row and c the centre (T_t x(p) = x(A_t^-1 p) for the affine A_t of the
    transformation).
    """
    check_generator(generator)
    check_boundary(boundary)
    if x.dim() < 2:
        raise ValueError(f"a tangent needs a map [..., H, W]; got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if generator in ("translate_x", "translate_y"):
        along_x = generator == "translate_x"
        size = width if along_x else height
        full = size if image_size is None else image_size[1 if along_x else 0]
        return -spectral_derivative(x, -1 if along_x else -2, boundary) * (size / full)
    du, dv = spectral_derivative(x, -1, boundary), spectral_derivative(x, -2, boundary)
    u, v = _centred(width, x), _centred(height, x)[:, None]
    if generator == "rotate":
        # The content turns counter-clockwise on the screen (rows grow downwards).
        return (-v * du + u * dv) * DEGREE
    return -(u * du + v * dv) * PERCENT


def transformed(x: Tensor, generator: str, amount: float, boundary: str = "reflect") -> Tensor:
    """T_t x for ``amount`` t of ``generator`` (units of ``GENERATORS``), by evaluating the
    band-limited interpolant of ``x`` [..., H, W] (or of its mirror extension) at the moved
    coordinates: exact for any sub-pixel amount, O(HW (H + W)) memory (for tests on small maps;
    float64 advised)."""
    check_generator(generator)
    check_boundary(boundary)
    height, width = x.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    cu, cv = (width - 1) / 2, (height - 1) / 2
    if generator == "translate_x":
        su, sv = u - amount, v
    elif generator == "translate_y":
        su, sv = u, v - amount
    elif generator == "rotate":
        angle = -amount * DEGREE  # sample the source at the inverse rotation
        su = cu + (u - cu) * math.cos(angle) + (v - cv) * math.sin(angle)
        sv = cv - (u - cu) * math.sin(angle) + (v - cv) * math.cos(angle)
    else:
        factor = math.exp(-amount * PERCENT)
        su, sv = cu + (u - cu) * factor, cv + (v - cv) * factor
    source = mirror_extension(x) if boundary == "reflect" else x
    return _interpolate(source, sv.flatten(), su.flatten()).reshape(x.shape)


def _basis(n: int, positions: Tensor) -> Tensor:
    """[P, n]: the weights of the n samples in the periodic band-limited interpolant at
    ``positions``, Re(sum_w e^{i w (p - j)}) / n over the DFT frequencies w (signed; for an even
    n the Nyquist term is cos(pi (p - j)), which has no slope at the samples)."""
    k = torch.arange(n, dtype=torch.float64)
    frequencies = 2 * math.pi * torch.where(k <= n // 2, k, k - n) / n
    at_points = torch.exp(1j * positions[:, None] * frequencies[None, :])  # [P, n]
    at_samples = torch.exp(-1j * frequencies[:, None] * k[None, :])  # [n, n]
    return (at_points @ at_samples).real / n


def _interpolate(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """x [..., H, W] at the points (rows[p], cols[p]) -> [..., P] (separable bases)."""
    by_row, by_col = _basis(x.shape[-2], rows), _basis(x.shape[-1], cols)  # [P, H], [P, W]
    flat = x.to(torch.float64)
    values = torch.einsum("...hw,ph,pw->...p", flat, by_row, by_col)
    return values.to(x.dtype)
