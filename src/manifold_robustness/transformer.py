"""The differentiable spatial transformer that places glyphs (FONTS) and deforms images (transformation attacks).

A code is six numbers (tx, ty, shear_x, shear_y, scale, rotation). They describe the forward placement of the
glyph: a glyph point g lands at p = R(rotation) @ Sh(shear_x, shear_y) @ (scale * g) + (tx, ty), in the
normalized coordinates of `affine_grid` ([-1, 1] spans the image, so tx = 0.2 is 2.8 pixels at 28x28).
`grid_sample` needs the inverse map (output pixel -> input location), which is computed in closed form
so that gradients flow to all six parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CODE_NAMES: tuple[str, ...] = ("tx", "ty", "shear_x", "shear_y", "scale", "rotation")
IDENTITY_CODE: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class TransformRanges:
    """Box of admissible codes: translation, shear, one isotropic scale and rotation (radians)."""

    translation: float
    shear: float
    scale_min: float
    scale_max: float
    rotation: float

    @property
    def low(self) -> torch.Tensor:
        """Lower bound of each of the six code entries."""
        t, s, r = self.translation, self.shear, self.rotation
        return torch.tensor([-t, -t, -s, -s, self.scale_min, -r], dtype=torch.float32)

    @property
    def high(self) -> torch.Tensor:
        """Upper bound of each of the six code entries."""
        t, s, r = self.translation, self.shear, self.rotation
        return torch.tensor([t, t, s, s, self.scale_max, r], dtype=torch.float32)

    def validate(self) -> None:
        """Reject boxes that make the affine map singular or empty."""
        if self.shear >= 1.0:
            raise ValueError(f"shear bound {self.shear} must be < 1 so that the shear matrix stays invertible")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range [{self.scale_min}, {self.scale_max}] must satisfy 0 < min <= max")
        if min(self.translation, self.shear, self.rotation) < 0:
            raise ValueError("translation, shear and rotation bounds must be non-negative")


# The three ranges of the original FONTS generator; "hard" is what the paper's figures use.
PRESETS: dict[str, TransformRanges] = {
    "easy": TransformRanges(0.1, 0.2, 0.9, 1.1, math.pi / 6),
    "moderate": TransformRanges(0.2, 0.4, 0.85, 1.15, math.pi / 3),
    "hard": TransformRanges(0.2, 0.5, 0.75, 1.15, math.pi / 2),
}


def sample_codes(n: int, ranges: TransformRanges, generator: torch.Generator) -> torch.Tensor:
    """Draw `n` codes uniformly from the box `ranges` (float32, shape (n, 6))."""
    low, high = ranges.low, ranges.high
    u = torch.rand(n, 6, generator=generator, dtype=torch.float32)
    return low + u * (high - low)


def sampling_theta(codes: torch.Tensor) -> torch.Tensor:
    """Map codes (B, 6) to the (B, 2, 3) matrices that `affine_grid` expects (output -> input)."""
    tx, ty, shx, shy, scale, rot = codes.unbind(dim=1)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # Forward linear part A = R @ Sh @ (scale * I), with Sh = [[1, shx], [shy, 1]].
    a11 = scale * (cos - sin * shy)
    a12 = scale * (cos * shx - sin)
    a21 = scale * (sin + cos * shy)
    a22 = scale * (sin * shx + cos)
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    b1 = -(i11 * tx + i12 * ty)
    b2 = -(i21 * tx + i22 * ty)
    row1 = torch.stack([i11, i12, b1], dim=1)
    row2 = torch.stack([i21, i22, b2], dim=1)
    return torch.stack([row1, row2], dim=1)


def transform(images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Apply one code per image (B, C, H, W) by bilinear resampling; outside the image is black (0)."""
    if images.shape[0] != codes.shape[0] or codes.shape[1:] != (6,):
        raise ValueError(f"expected images (B,C,H,W) and codes (B,6), got {tuple(images.shape)} and {tuple(codes.shape)}")
    theta = sampling_theta(codes.to(images.dtype))
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def decode(glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The true FONTS decoder: render (font, class, code) from the glyph bank (F, K, H, W) to (B, 1, H, W).

    Output stays in [0, 1] because bilinear interpolation of [0, 1] glyphs with zero padding is a convex
    combination of values in [0, 1].
    """
    base = glyphs[font, label].unsqueeze(1)
    return transform(base, codes)
