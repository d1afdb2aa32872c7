"""The differentiable spatial transformer: identity, conventions of translation and rotation, the closed-form
inverse, the original's sampling convention, gradients, the decoder's range, and the code box."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_robustness.transformer import (
    CONVENTIONS,
    IDENTITY_CODE,
    PRESETS,
    TransformRanges,
    decode,
    sample_codes,
    sampling_theta,
    transform,
)

PX = 2.0 / 28.0  # one pixel in the normalized coordinates of affine_grid ([-1, 1] spans 28 pixels)


def code(tx=0.0, ty=0.0, shx=0.0, shy=0.0, scale=1.0, rot=0.0, n=1):
    return torch.tensor([[tx, ty, shx, shy, scale, rot]] * n, dtype=torch.float32)


def dot_image(row: int, col: int) -> torch.Tensor:
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, row, col] = 1.0
    return img


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_identity_code_returns_glyphs(glyph_bank, convention):
    glyphs = torch.from_numpy(glyph_bank[0][:, :3]).reshape(-1, 1, 28, 28)
    codes = torch.tensor([IDENTITY_CODE] * len(glyphs))
    out = transform(glyphs, codes, convention)
    assert out.shape == glyphs.shape
    torch.testing.assert_close(out, glyphs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, 2), (-3, 1), (1, -2)])
def test_translation_moves_a_point_by_whole_pixels(dx, dy):
    """tx = k * 2/28 moves the glyph k pixels right, ty = k * 2/28 moves it k pixels down."""
    img = dot_image(10, 12)
    out = transform(img, code(tx=dx * PX, ty=dy * PX))
    expected = dot_image(10 + dy, 12 + dx)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_translation_of_2_over_14_is_two_pixels_right():
    img = dot_image(14, 5)
    out = transform(img, code(tx=2 / 14))
    assert out[0, 0].flatten().argmax().item() == 14 * 28 + 7
    assert out[0, 0, 14, 7].item() == pytest.approx(1.0, abs=1e-5)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_rotation_is_forward_placement_counterclockwise_in_image_axes():
    """p = R(rot) g with R = [[cos, -sin], [sin, cos]] in (x right, y down): a point right of the centre
    goes below it for rot = pi/2."""
    img = dot_image(13, 20)  # x = 13/28, y = -1/28
    out = transform(img, code(rot=math.pi / 2))
    # (x, y) -> (-y, x) = (1/28, 13/28): column 14, row 20
    assert out[0, 0].flatten().argmax().item() == 20 * 28 + 14
    assert out[0, 0, 20, 14].item() == pytest.approx(1.0, abs=1e-4)


def test_scale_moves_points_away_from_centre():
    img = dot_image(13, 17)  # x = 7/28, y = -1/28 (pixel centres are at odd multiples of 1/28)
    out = transform(img, code(scale=3.0))
    # x -> 21/28 (column 24), y -> -3/28 (row 12)
    assert out[0, 0].flatten().argmax().item() == 12 * 28 + 24


def forward_matrix(c: torch.Tensor) -> torch.Tensor:
    """The forward placement of the module docstring, built independently: R @ Sh @ (scale * I)."""
    tx, ty, shx, shy, s, r = c.tolist()
    rot = torch.tensor([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]], dtype=torch.float64)
    sh = torch.tensor([[1.0, shx], [shy, 1.0]], dtype=torch.float64)
    a = rot @ sh @ (s * torch.eye(2, dtype=torch.float64))
    return torch.cat([a, torch.tensor([[tx], [ty]], dtype=torch.float64)], dim=1)


def test_sampling_theta_inverts_the_forward_placement():
    gen = torch.Generator().manual_seed(0)
    codes = sample_codes(64, PRESETS["hard"], gen).double()
    theta = sampling_theta(codes)
    assert theta.shape == (64, 2, 3)
    for c, th in zip(codes, theta):
        fwd = forward_matrix(c)
        # theta maps output -> input: theta(fwd(g)) == g for every glyph point g.
        lin = th[:, :2] @ fwd[:, :2]
        off = th[:, :2] @ fwd[:, 2] + th[:, 2]
        torch.testing.assert_close(lin, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
        torch.testing.assert_close(off, torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradients_flow_to_all_six_code_entries(glyph_bank, convention):
    glyphs = torch.from_numpy(glyph_bank[0][:4, :4]).reshape(-1, 1, 28, 28)
    codes = code(0.05, -0.03, 0.1, -0.1, 1.05, 0.2, n=len(glyphs)).requires_grad_(True)
    weights = torch.rand(glyphs.shape, generator=torch.Generator().manual_seed(1))
    (transform(glyphs, codes, convention) * weights).sum().backward()
    assert codes.grad is not None and torch.isfinite(codes.grad).all()
    assert (codes.grad.abs().sum(dim=0) > 1e-4).all(), codes.grad


def test_sampling_theta_is_the_code_matrix_itself():
    """The original's convention: the code's matrix [R @ Sh @ (scale * I) | t] goes to affine_grid unchanged."""
    codes = sample_codes(64, PRESETS["hard"], torch.Generator().manual_seed(0)).double()
    theta = sampling_theta(codes, "sampling")
    assert theta.shape == (64, 2, 3)
    for c, th in zip(codes, theta):
        torch.testing.assert_close(th, forward_matrix(c), atol=1e-12, rtol=0)


def test_paper_geometry_is_the_supplements_matrix_entry_by_entry():
    """The paper's FONTS matrix, typed from the supplement, is what `paper` sends to affine_grid."""
    import math

    codes = sample_codes(64, PRESETS["hard"], torch.Generator().manual_seed(3)).double()
    theta = sampling_theta(codes, "paper")
    for (t1, t2, l1, l2, s, r), th in zip(codes.tolist(), theta):
        c, n = math.cos(r), math.sin(r)
        paper = torch.tensor([[c * s - n * s * l1, -n * s + c * s * l1, t1],
                              [c * s * l2 + n * s, -n * s * l2 + c * s, t2]], dtype=torch.float64)
        torch.testing.assert_close(th, paper, atol=1e-12, rtol=0)
    # It agrees with R @ Sh @ s without shear and differs with it.
    plain = codes.clone()
    plain[:, 2:4] = 0
    torch.testing.assert_close(sampling_theta(plain, "paper"), sampling_theta(plain, "sampling"))
    assert (sampling_theta(codes, "paper") - sampling_theta(codes, "sampling")).abs().max() > 0.1


def square_image(side: int = 8) -> torch.Tensor:
    img = torch.zeros(1, 1, 28, 28)
    lo = 14 - side // 2
    img[0, 0, lo:lo + side, lo:lo + side] = 1.0
    return img


def extent(img: torch.Tensor) -> tuple[int, int]:
    """Rows and columns (pixels) holding ink above half intensity."""
    ink = img[0, 0] > 0.5
    return int(ink.any(1).sum()), int(ink.any(0).sum())


@pytest.mark.parametrize("s", [0.5, 0.8, 1.25, 2.0])
def test_scale_enlarges_under_sampling_and_shrinks_under_placement(s):
    """A centred 8-pixel square: scale s gives 8 / s pixels under sampling and 8 * s under placement."""
    img = square_image(8)
    assert extent(img) == (8, 8)
    for convention, expected in (("sampling", 8 / s), ("placement", 8 * s)):
        rows, cols = extent(transform(img, code(scale=s), convention))
        assert rows == cols and abs(rows - expected) <= 1, (convention, rows, expected)


def test_translation_and_rotation_reverse_under_sampling():
    """Under sampling an output pixel p reads the input at A p + t, so tx > 0 shows the glyph moved left and
    a rotation turns it the other way round than under placement."""
    moved = transform(dot_image(10, 12), code(tx=2 * PX), "sampling")
    torch.testing.assert_close(moved, dot_image(10, 10), atol=1e-5, rtol=0)
    img = dot_image(13, 20)
    turned = transform(img, code(rot=math.pi / 2), "sampling")
    torch.testing.assert_close(turned, transform(img, code(rot=-math.pi / 2), "placement"), atol=1e-5, rtol=0)


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match="unknown code convention 'inverse'"):
        transform(torch.zeros(1, 1, 28, 28), code(), "inverse")
    with pytest.raises(ValueError, match="unknown code convention"):
        TransformRanges(0.1, 0.2, 0.9, 1.1, 0.5, convention="forward").validate()


def test_transform_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected images"):
        transform(torch.zeros(2, 1, 28, 28), code(n=3))
    with pytest.raises(ValueError, match="expected images"):
        transform(torch.zeros(2, 1, 28, 28), torch.zeros(2, 5))


def test_decode_shape_and_range(glyph_bank):
    glyphs = torch.from_numpy(glyph_bank[0])
    gen = torch.Generator().manual_seed(0)
    n = 50
    font = torch.randint(len(glyphs), (n,), generator=gen)
    label = torch.randint(10, (n,), generator=gen)
    codes = sample_codes(n, PRESETS["hard"], gen)
    out = decode(glyphs, font, label, codes)
    assert out.shape == (n, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    assert out.amax(dim=(1, 2, 3)).min() > 0.5  # every rendered glyph keeps ink
    # The identity code reproduces the glyph of the requested (font, label).
    same = decode(glyphs, font, label, torch.tensor([IDENTITY_CODE] * n))
    torch.testing.assert_close(same[:, 0], glyphs[font, label], atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sample_codes_stay_inside_ranges(preset):
    ranges = PRESETS[preset]
    codes = sample_codes(5000, ranges, torch.Generator().manual_seed(0))
    assert codes.shape == (5000, 6) and codes.dtype == torch.float32
    assert (codes >= ranges.low).all() and (codes <= ranges.high).all()
    # Uniform over the box: it reaches close to both ends of every coordinate.
    span = ranges.high - ranges.low
    assert ((codes.min(0).values - ranges.low) < 0.01 * span).all()
    assert ((ranges.high - codes.max(0).values) < 0.01 * span).all()


def test_sample_codes_is_deterministic_per_generator():
    a = sample_codes(10, PRESETS["easy"], torch.Generator().manual_seed(3))
    b = sample_codes(10, PRESETS["easy"], torch.Generator().manual_seed(3))
    c = sample_codes(10, PRESETS["easy"], torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_presets_are_valid():
    for ranges in PRESETS.values():
        ranges.validate()


@pytest.mark.parametrize("shear", [1.0, 1.5])
def test_validate_rejects_shear_of_one_or_more(shear):
    with pytest.raises(ValueError, match="shear bound"):
        TransformRanges(0.1, shear, 0.9, 1.1, 0.5).validate()


@pytest.mark.parametrize("bad", [
    TransformRanges(0.1, 0.2, 0.0, 1.1, 0.5),
    TransformRanges(0.1, 0.2, 1.2, 1.1, 0.5),
])
def test_validate_rejects_bad_scale(bad):
    with pytest.raises(ValueError, match="scale range"):
        bad.validate()


def test_validate_rejects_negative_bounds():
    with pytest.raises(ValueError, match="non-negative"):
        TransformRanges(-0.1, 0.2, 0.9, 1.1, 0.5).validate()
