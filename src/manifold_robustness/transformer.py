"""The differentiable spatial transformer that places glyphs (FONTS) and deforms images (transformation attacks).

A code is six numbers (tx, ty, shear_x, shear_y, scale, rotation), read as one affine map in the normalized
coordinates of `affine_grid` ([-1, 1] spans the image, so tx = 0.2 is 2.8 pixels at 28x28):

    M(code) = [A | t],  A = R(rotation) @ Sh(shear_x, shear_y) @ (scale * I),  t = (tx, ty),
    R(r) = [[cos r, -sin r], [sin r, cos r]],  Sh(a, b) = [[1, a], [b, 1]].

Two conventions say which way M points (`CONVENTIONS`, carried by `TransformRanges.convention`):

* placement: M is the glyph's forward placement, a glyph point g lands at A @ g + t, so scale s shrinks the
  glyph to s and tx > 0 moves it right. `grid_sample` needs the inverse map (output pixel -> input location),
  which is computed in closed form so that gradients flow to all six parameters.
* sampling: M itself is the `affine_grid` theta, output pixel p samples the input at A @ p + t, as the
  original FONTS generator passes its parameters. The glyph seen is placed by the inverse map
  g -> A^-1 @ (g - t): scale s enlarges it by 1/s (the "hard" range [0.75, 1.15] gives glyph scales
  [0.87, 1.33]), t shifts it by -A^-1 @ t (tx > 0 moves it left), rotation turns it the other way, and shear
  acts reversed and applied after the rotation. The ranges of translation, shear and rotation are symmetric
  about 0, so their inverses cover similar sets; the scale range is not symmetric about 1, and changes most.
* paper: the matrix the paper's supplement prints for FONTS, used as the `affine_grid` theta like sampling,

      [[cos(r) s - sin(r) s l1, -sin(r) s + cos(r) s l1, t1],
       [cos(r) s l2 + sin(r) s, -sin(r) s l2 + cos(r) s, t2]]

  (t translation, l shear, s scale, r rotation; code entries shear_x = l1, shear_y = l2). It is not
  R @ Sh @ s: its rows are s (r1 + l1 r1') and s (r2 + l2 r1), with r1 = (cos r, -sin r), r2 = (sin r, cos r)
  the rows of R and r1' = (-sin r, cos r), so its area scale depends on the rotation. Over the hard box (shear
  and rotation on a grid, scale at its ends) |det A| spans 0.25-2.06 here against 0.42-1.65 for R @ Sh @ s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CODE_NAMES: tuple[str, ...] = ("tx", "ty", "shear_x", "shear_y", "scale", "rotation")
IDENTITY_CODE: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CONVENTIONS: tuple[str, ...] = ("placement", "sampling", "paper")


def check_convention(convention: str) -> None:
    """Reject a convention that is not one of `CONVENTIONS`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown code convention '{convention}'; expected one of {CONVENTIONS}")


@dataclass(frozen=True)
class TransformRanges:
    """Box of admissible codes: translation, shear, one isotropic scale and rotation (radians), and the
    convention the codes are rendered with (see the module docstring), since the box means a different set
    of glyph geometries under each."""

    translation: float
    shear: float
    scale_min: float
    scale_max: float
    rotation: float
    convention: str = "placement"

    @property
    def low(self) -> torch.Tensor:
        """Lower bound of each of the six code entries (on the CPU, whatever the default device)."""
        t, s, r = self.translation, self.shear, self.rotation
        return torch.tensor([-t, -t, -s, -s, self.scale_min, -r], dtype=torch.float32, device="cpu")

    @property
    def high(self) -> torch.Tensor:
        """Upper bound of each of the six code entries."""
        t, s, r = self.translation, self.shear, self.rotation
        return torch.tensor([t, t, s, s, self.scale_max, r], dtype=torch.float32, device="cpu")

    def validate(self) -> None:
        """Reject boxes that make the affine map singular or empty."""
        if self.shear >= 1.0:
            raise ValueError(f"shear bound {self.shear} must be < 1 so that the shear matrix stays invertible")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range [{self.scale_min}, {self.scale_max}] must satisfy 0 < min <= max")
        if min(self.translation, self.shear, self.rotation) < 0:
            raise ValueError("translation, shear and rotation bounds must be non-negative")
        check_convention(self.convention)


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


def code_matrix(codes: torch.Tensor, convention: str = "placement") -> torch.Tensor:
    """The matrices M = [A | t] (B, 2, 3) of codes (B, 6): A = R @ Sh @ (scale * I) for placement and sampling,
    the supplement's matrix for paper (module docstring)."""
    tx, ty, shx, shy, scale, rot = codes.unbind(dim=1)
    cos, sin = torch.cos(rot), torch.sin(rot)
    if convention == "paper":
        row1 = torch.stack([cos * scale - sin * scale * shx, -sin * scale + cos * scale * shx, tx], dim=1)
        row2 = torch.stack([cos * scale * shy + sin * scale, -sin * scale * shy + cos * scale, ty], dim=1)
        return torch.stack([row1, row2], dim=1)
    row1 = torch.stack([scale * (cos - sin * shy), scale * (cos * shx - sin), tx], dim=1)
    row2 = torch.stack([scale * (sin + cos * shy), scale * (sin * shx + cos), ty], dim=1)
    return torch.stack([row1, row2], dim=1)


def sampling_theta(codes: torch.Tensor, convention: str = "placement") -> torch.Tensor:
    """Map codes (B, 6) to the (B, 2, 3) matrices that `affine_grid` expects (output -> input)."""
    check_convention(convention)
    m = code_matrix(codes, convention)
    if convention in ("sampling", "paper"):
        return m
    a11, a12, a21, a22 = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    tx, ty = m[:, 0, 2], m[:, 1, 2]
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    b1 = -(i11 * tx + i12 * ty)
    b2 = -(i21 * tx + i22 * ty)
    row1 = torch.stack([i11, i12, b1], dim=1)
    row2 = torch.stack([i21, i22, b2], dim=1)
    return torch.stack([row1, row2], dim=1)


def transform(images: torch.Tensor, codes: torch.Tensor, convention: str = "placement") -> torch.Tensor:
    """Apply one code per image (B, C, H, W) by bilinear resampling; outside the image is black (0)."""
    if images.shape[0] != codes.shape[0] or codes.shape[1:] != (6,):
        raise ValueError(f"expected images (B,C,H,W) and codes (B,6), got {tuple(images.shape)} and {tuple(codes.shape)}")
    theta = sampling_theta(codes.to(images.dtype), convention)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def decode(glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor, codes: torch.Tensor,
           convention: str = "placement") -> torch.Tensor:
    """The true FONTS decoder: render (font, class, code) from the glyph bank (F, K, H, W) to (B, 1, H, W).

    Output stays in [0, 1] because bilinear interpolation of [0, 1] glyphs with zero padding is a convex
    combination of values in [0, 1].
    """
    base = glyphs[font, label].unsqueeze(1)
    return transform(base, codes, convention)
