"""Distances to the data manifold: projection onto the true FONTS decoder, PCA, exact kNN and the local affine
approximation (paper section 2.1), on the tiny FONTS data of conftest and on constructed cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from manifold_robustness.distances import (
    RANK_RTOL,
    RIDGE,
    distance_to_local_manifold,
    distance_to_perturbation_ratio,
    fit_pca,
    local_subspace_distance,
    nearest_neighbours,
    perturbation_residuals,
    pca_features,
    project_true_manifold,
    start_codes,
)
from manifold_robustness.transformer import PRESETS, decode, sample_codes

RANGES = PRESETS["easy"]  # the conftest data are rendered from the easy box


@pytest.fixture(scope="module")
def fonts_set(fonts_data, glyph_bank):
    """16 test images with their codes, fonts and labels, and the glyph bank (the true decoder)."""
    d = fonts_data["test"]
    rows = torch.randperm(len(d["labels"]), generator=torch.Generator().manual_seed(2))[:16]
    pick = {k: torch.from_numpy(v)[rows] for k, v in d.items()}
    return {**pick, "glyphs": torch.from_numpy(glyph_bank[0]).float()}


# The paper's projection: Adam at lr 0.09 for 100 steps; four starts (the defaults of config/schema.yaml).
PAPER = {"steps": 100, "lr": 0.09, "starts": 4, "seed": 0}


def project(s: dict, images: torch.Tensor, init: torch.Tensor, ranges=RANGES, **kw):
    return project_true_manifold(images, s["glyphs"], s["font"], s["labels"], init, ranges, **{**PAPER, **kw})


def test_on_manifold_images_project_to_themselves(fonts_set):
    s = fonts_set
    rendered = decode(s["glyphs"], s["font"], s["labels"], s["codes"])
    assert torch.equal(rendered, s["images"])  # the stored images are the decoder's output
    dist, codes, _ = project(s, s["images"], s["codes"], steps=3, starts=2)
    assert dist.max() < 1e-6
    assert torch.equal(codes, s["codes"])  # the start is an iterate, and nothing beats distance 0


def test_projection_renders_with_the_ranges_convention(fonts_set):
    """Images rendered under the sampling convention lie on the sampling manifold (distance 0 from their own
    codes) and off the placement one at the same codes."""
    s = fonts_set
    images = decode(s["glyphs"], s["font"], s["labels"], s["codes"], "sampling")
    dist, _, proj = project(s, images, s["codes"], replace(RANGES, convention="sampling"), steps=3, starts=2)
    assert dist.max() < 1e-6 and torch.equal(proj, images)
    elsewhere, _, _ = project(s, images, s["codes"], steps=0, starts=1)
    assert elsewhere.median() > 1.0


def test_perturbed_start_recovers_codes(fonts_set):
    s = fonts_set
    noise = 0.02 * torch.randn(len(s["codes"]), 6, generator=torch.Generator().manual_seed(3))
    dist, codes, _ = project(s, s["images"], s["codes"] + noise, starts=1)
    start_dist, _, _ = project(s, s["images"], s["codes"] + noise, steps=0, starts=1)
    assert dist.median() < 0.05 and torch.quantile(dist, 0.9) < 0.1  # images have L2 norms of about 7
    assert (dist <= start_dist).all() and dist.median() < start_dist.median() / 5
    error = (codes - s["codes"]).abs().median(0).values
    assert error[[0, 1, 4]].max() < 5e-3  # translation and scale are pinned down well
    assert error.max() < 0.03  # shear and rotation trade off in a flat valley


def test_random_starts_find_the_manifold(fonts_set):
    s = fonts_set
    init = sample_codes(len(s["codes"]), RANGES, torch.Generator().manual_seed(4))  # unrelated random codes
    dist, codes, proj = project(s, s["images"], init, starts=4)
    assert (dist < 0.1).float().mean() >= 0.75
    assert torch.equal(proj, decode(s["glyphs"], s["font"], s["labels"], codes))


def test_codes_stay_in_ranges_and_projections_are_decoded(fonts_set):
    s = fonts_set
    off = (s["images"] + 0.3 * torch.rand(s["images"].shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    outside = s["codes"] * 3  # starts outside the box are clipped into it
    dist, codes, proj = project(s, off, outside, steps=20, starts=2)
    low, high = RANGES.low, RANGES.high
    assert ((codes >= low) & (codes <= high)).all()
    assert torch.equal(proj, decode(s["glyphs"], s["font"], s["labels"], codes))
    assert torch.allclose(dist, (proj - off).flatten(1).norm(dim=1))
    assert (dist > 0.5).all()  # the noise is far from the manifold


def test_projection_is_deterministic_and_batch_independent(fonts_set):
    s = fonts_set
    init = sample_codes(len(s["codes"]), RANGES, torch.Generator().manual_seed(6))
    a = project(s, s["images"], init, steps=10, starts=3, seed=1)
    b = project(s, s["images"], init, steps=10, starts=3, seed=1, batch_size=5)
    c = project(s, s["images"], init, steps=10, starts=3, seed=2)
    # Equal up to float rounding: a batch of another size may sum in another order (seen at 7e-7 with one
    # thread); distances are reported to three decimals, codes are angles and scales of order one.
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert (a[1] - c[1]).abs().max() > 1e-3  # another seed, other starts, other local optima
    # Starts are tied to example indices: a subset with its indices gets the same answer.
    rows = torch.tensor([3, 7, 11])
    sub = project_true_manifold(s["images"][rows], s["glyphs"], s["font"][rows], s["labels"][rows], init[rows],
                                RANGES, steps=10, lr=0.09, starts=3, seed=1, indices=rows)
    torch.testing.assert_close(sub[1], a[1][rows], rtol=0, atol=1e-5)


def test_pca_is_orthonormal_and_deterministic(train_tensors):
    images = train_tensors[0][:1000]
    mean, comp = fit_pca(images, dim=40)
    assert mean.shape == (784,) and comp.shape == (784, 40)
    assert torch.allclose(comp.T @ comp, torch.eye(40), atol=1e-5)
    assert torch.allclose(mean, images.flatten(1).mean(0), atol=1e-6)
    again = fit_pca(images, dim=40, batch_size=333)
    assert torch.allclose(comp, again[1], atol=1e-5)
    # The same subspace as the top right-singular vectors of the centered data.
    x = (images.flatten(1) - mean).double()
    v = torch.linalg.svd(x, full_matrices=False).Vh[:40].T
    assert torch.allclose((v.T @ comp.double()).abs().sum(0), torch.ones(40, dtype=torch.float64), atol=2e-3)


@pytest.mark.parametrize("batch_size,train_chunk", [(1, 3), (7, 64), (500, 10000)])
def test_knn_matches_brute_force(batch_size, train_chunk):
    gen = torch.Generator().manual_seed(7)
    train = torch.randn(500, 40, generator=gen, dtype=torch.float64)
    query = torch.randn(37, 40, generator=gen, dtype=torch.float64)
    expected = torch.cdist(query, train).argsort(dim=1)[:, :7]
    got = nearest_neighbours(query, train, k=7, batch_size=batch_size, train_chunk=train_chunk)
    assert torch.equal(got, expected)


def orthogonal_case(n: int, k: int, dtype: torch.dtype, seed: int = 8):
    """Neighbours (n, k, 784) spanning a known affine subspace, x = point in it + v with v orthogonal to it."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 784, k, generator=gen, dtype=torch.float64))  # k orthonormal columns
    origin = torch.rand(n, 784, generator=gen, dtype=torch.float64)
    basis = q[:, :, :k - 1].transpose(1, 2)  # (n, k-1, 784): the subspace's directions
    coef = torch.randn(n, k, k - 1, generator=gen, dtype=torch.float64)
    neighbours = origin[:, None] + coef @ basis
    inside = origin + (torch.randn(n, 1, k - 1, generator=gen, dtype=torch.float64) @ basis).squeeze(1)
    v = 2.5 * q[:, :, k - 1]  # orthogonal to every direction of the subspace
    return (inside + v).to(dtype), neighbours.to(dtype), inside, torch.full((n,), 2.5, dtype=torch.float64)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_known_orthogonal_offset(dtype, tol):
    x, neighbours, inside, offset = orthogonal_case(5, 10, dtype)
    dist, proj, flagged = local_subspace_distance(x, neighbours)
    assert dist.dtype == dtype and not flagged.any()
    assert torch.allclose(dist.double(), offset, atol=tol)
    assert torch.allclose(proj.double(), inside, atol=tol)


def test_duplicate_neighbours_use_the_flagged_ridge():
    x, neighbours, inside, offset = orthogonal_case(4, 8, torch.float64)
    # 11 neighbours spanning the same 7-d subspace; the 9th equals the origin neighbour, a zero basis vector.
    dup = torch.cat([neighbours, neighbours[:, :3]], dim=1)
    dist, proj, flagged = local_subspace_distance(x, dup)
    assert flagged.all()
    assert torch.allclose(dist, offset, atol=1e-6)
    assert torch.allclose(proj, inside, atol=1e-4)
    same = neighbours[:, :1].expand(-1, 5, -1)  # all neighbours equal: the span is a single point
    dist, _, flagged = local_subspace_distance(x, same)
    assert torch.allclose(dist, (x - neighbours[:, 0]).norm(dim=1))


def test_training_images_lie_on_their_local_manifold(train_tensors):
    images = train_tensors[0][:1500]
    pca = fit_pca(images, dim=40)
    rows = torch.arange(0, 1500, 150)
    out = distance_to_local_manifold(images[rows], images, pca, k=20)
    assert out["neighbours"].shape == (10, 20)
    assert torch.equal(out["neighbours"][:, 0], rows)  # its own nearest neighbour
    assert out["distance"].max() < 1e-4 and not out["regularized"].any()
    # A test image is off the span of its neighbours, and the call is deterministic.
    feats = pca_features(images, pca)
    off = images[rows] + 0.1
    a = distance_to_local_manifold(off, images, pca, k=20, train_feats=feats)
    b = distance_to_local_manifold(off, images, pca, k=20, batch_size=3)
    assert (a["distance"] > 0.1).all()
    assert torch.equal(a["distance"], b["distance"]) and torch.equal(a["neighbours"], b["neighbours"])


def test_duplicated_training_set_is_counted_as_regularized(train_tensors):
    images = train_tensors[0][:300]
    doubled = torch.cat([images, images])
    out = distance_to_local_manifold(images[:5], doubled, fit_pca(doubled, dim=20), k=6)
    assert out["regularized"].dtype == torch.bool and out["regularized"].all()
    assert out["distance"].max() < 1e-4


def test_distance_to_perturbation_ratio():
    ratio = distance_to_perturbation_ratio(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, 2.0, 0.0]))
    assert torch.equal(ratio[:2], torch.tensor([0.5, 1.0])) and ratio[2].isnan()


def test_projection_keeps_the_best_iterate_of_its_trajectory(fonts_set):
    """The projection returns the best codes of its trajectory, so a longer run never ends further away: run for
    k steps, a run's distance is the minimum over the first k iterates (the same trajectory, one start). A large
    learning rate makes Adam overshoot, so the last iterate is often not the best."""
    s = fonts_set
    init = s["codes"] + 0.05 * torch.randn(len(s["codes"]), 6, generator=torch.Generator().manual_seed(5))
    runs = torch.stack([project(s, s["images"], init, steps=k, starts=1, lr=0.5)[0] for k in range(6)])
    assert (runs[1:] <= runs[:-1] + 1e-6).all()
    assert (runs[-1] < runs[0]).any()  # the projection did move towards the images


def test_start_codes_are_the_clipped_own_codes_then_uniform_in_the_box():
    n, low, high = 4000, RANGES.low, RANGES.high
    init = 2 * torch.rand(n, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64) - 0.5
    begin = start_codes(init, RANGES, 3, seed=5, indices=torch.arange(n))
    assert begin.shape == (3, n, 6) and begin.dtype == torch.float64
    assert torch.equal(begin[0], torch.maximum(torch.minimum(init, high.double()), low.double()))
    rest = begin[1:].reshape(-1, 6)
    assert ((rest >= low) & (rest <= high)).all()
    # Uniform in the box: each coordinate's range reaches both bounds and its mean is the centre.
    width = (high - low).double()
    assert ((rest.min(0).values - low) < 0.01 * width).all() and ((high - rest.max(0).values) < 0.01 * width).all()
    assert ((rest.mean(0) - (low + high) / 2).abs() < 0.02 * width).all()
    assert not torch.equal(begin[1], begin[2])
    # Drawn per (seed, index, start): a subset with its indices gets the same starts, another seed others.
    rows = torch.tensor([3, 17, 2500])
    assert torch.equal(start_codes(init[rows], RANGES, 3, seed=5, indices=rows), begin[:, rows])
    assert not torch.equal(start_codes(init, RANGES, 3, seed=6, indices=torch.arange(n))[1], begin[1])


def test_projection_of_float64_images_computes_in_float64(fonts_set):
    """Glyphs, starts and box are taken to the images' dtype: float32 ones give the float64 answer."""
    s = fonts_set
    images = s["images"].double() + 0.01
    init = s["codes"] + 0.05
    got = project(s, images, init, steps=5, starts=2)
    s64 = {**s, "glyphs": s["glyphs"].double()}
    want = project(s64, images, init.double(), steps=5, starts=2)
    for g, w in zip(got, want):
        assert g.dtype == torch.float64 and torch.equal(g, w)


def test_projection_puts_its_results_on_the_images_device(fonts_set):
    """Images on the `meta` device, which holds no data, and every other input on the CPU: each input is taken to
    the images' device, or the projection fails on mixed devices."""
    s = fonts_set
    images = s["images"].to("meta")
    dist, codes, proj = project(s, images, s["codes"], steps=2, starts=2, batch_size=5)
    assert {dist.device.type, codes.device.type, proj.device.type} == {"meta"}
    assert dist.shape == (16,) and codes.shape == (16, 6) and proj.shape == images.shape


def test_projection_creates_nothing_on_the_default_device(fonts_set):
    """With the default device set to `meta`, a tensor created without the inputs' device breaks the result."""
    s = fonts_set
    want = project(s, s["images"], s["codes"] + 0.05, steps=3, starts=2, batch_size=5)
    with torch.device("meta"):
        got = project(s, s["images"], s["codes"] + 0.05, steps=3, starts=2, batch_size=5)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_projection_of_no_images(fonts_set):
    s = {k: v[:0] for k, v in fonts_set.items() if k != "glyphs"} | {"glyphs": fonts_set["glyphs"]}
    dist, codes, proj = project(s, s["images"], s["codes"], steps=2, starts=2)
    assert dist.shape == (0,) and codes.shape == (0, 6) and proj.shape == (0, 1, 28, 28)


@pytest.mark.parametrize("kw,message", [
    ({"starts": 0}, "starts must be >= 1 and steps >= 0, got 0 and 2"),
    ({"starts": 1, "steps": -1}, "starts must be >= 1 and steps >= 0, got 1 and -1"),
])
def test_projection_refuses_bad_starts_and_steps(fonts_set, kw, message):
    with pytest.raises(ValueError) as err:
        project(fonts_set, fonts_set["images"], fonts_set["codes"], **{"steps": 2, **kw})
    assert str(err.value) == message


def test_projection_refuses_codes_of_the_wrong_shape(fonts_set):
    with pytest.raises(ValueError) as err:
        project(fonts_set, fonts_set["images"], fonts_set["codes"][:3], steps=2)
    assert str(err.value) == "init_codes must have shape (16, 6), got (3, 6)"


def test_distance_to_perturbation_ratio_is_nan_only_for_zero_perturbations():
    ratio = distance_to_perturbation_ratio(torch.tensor([1.0, 0.3, 0.0]), torch.tensor([0.0, 0.5, 0.5]))
    assert ratio[0].isnan() and torch.equal(ratio[1:], torch.tensor([0.6, 0.0]))


def test_pca_matches_the_singular_vectors_in_float64(train_tensors):
    """In float64 the mean and the directions match the SVD of the centered data to round-off, each direction
    signed so that its largest-magnitude entry is positive."""
    images = train_tensors[0][:600].double()
    mean, comp = fit_pca(images, dim=12)
    assert mean.dtype == comp.dtype == torch.float64
    x = images.flatten(1)
    assert torch.allclose(mean, x.mean(0), rtol=0, atol=1e-13)
    v = torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh[:12].T
    v = v * torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    assert torch.allclose(comp, v, rtol=0, atol=1e-9)
    assert (comp.gather(0, comp.abs().argmax(0, keepdim=True)) > 0).all()


@pytest.mark.parametrize("n,dim,ok", [(2, 784, True), (10, 1, True), (1, 5, False), (10, 0, False),
                                     (10, 785, False)])
def test_pca_needs_two_images_and_a_dimension_up_to_the_pixels(train_tensors, n, dim, ok):
    images = train_tensors[0][:n]
    if ok:
        assert fit_pca(images, dim=dim)[1].shape == (784, dim)
        return
    with pytest.raises(ValueError) as err:
        fit_pca(images, dim=dim)
    assert str(err.value) == f"need 0 < dim <= 784 and at least two images, got dim {dim} and {n} images"


def test_pca_features_are_coordinates_in_the_basis(train_tensors):
    mean, comp = fit_pca(train_tensors[0][:300].double(), dim=6)
    points = torch.stack([mean, *(mean + 2 * comp.T)]).view(7, 1, 28, 28)
    feats = pca_features(points, (mean, comp), batch_size=3)
    assert torch.allclose(feats, torch.cat([torch.zeros(1, 6), 2 * torch.eye(6)]).double(), atol=1e-12)
    assert pca_features(points[:0], (mean, comp)).shape == (0, 6)


@pytest.mark.parametrize("train_chunk", [64, 1000])
def test_knn_ties_keep_the_lowest_indices(train_chunk):
    """300 training points at one place and one elsewhere: the 50 nearest are the 50 lowest indices of the tie,
    whatever the chunking, although `topk` alone would pick any of the tied points."""
    gen = torch.Generator().manual_seed(10)
    point = torch.randn(1, 8, generator=gen)
    train = torch.cat([point + 5, point.expand(300, 8)])
    query = point + 0.01 * torch.randn(3, 8, generator=gen)
    got = nearest_neighbours(query, train, k=50, batch_size=2, train_chunk=train_chunk)
    assert torch.equal(got, torch.arange(1, 51).expand(3, 50))


def test_knn_takes_the_training_features_to_the_queries_dtype():
    gen = torch.Generator().manual_seed(11)
    train = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    query = torch.randn(4, 5, generator=gen)
    got = nearest_neighbours(query, train, k=3)
    assert torch.equal(got, torch.cdist(query, train.float()).argsort(1)[:, :3])


@pytest.mark.parametrize("k,ok", [(1, True), (40, True), (60, True), (0, False), (61, False)])
def test_knn_k_is_between_one_and_the_training_set(k, ok):
    gen = torch.Generator().manual_seed(12)
    train, query = torch.randn(60, 5, generator=gen), torch.randn(4, 5, generator=gen)
    if ok:
        assert torch.equal(nearest_neighbours(query, train, k=k), torch.cdist(query, train).argsort(1)[:, :k])
        return
    with pytest.raises(ValueError) as err:
        nearest_neighbours(query, train, k=k)
    assert str(err.value) == f"k must be in 1..60, got {k}"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_local_distance_of_few_neighbours_is_least_squares(k):
    """One neighbour spans a point, two a line, three a plane: the distance is that of the least-squares fit."""
    gen = torch.Generator().manual_seed(13)
    x = torch.rand(6, 784, generator=gen, dtype=torch.float64)
    nb = torch.rand(6, k, 784, generator=gen, dtype=torch.float64)
    basis = (nb[:, 1:] - nb[:, :1]).transpose(1, 2)
    coef = torch.linalg.lstsq(basis, (x - nb[:, 0])[:, :, None]).solution
    want = (x - nb[:, 0] - (basis @ coef).squeeze(2)).norm(dim=1)
    dist, proj, flagged = local_subspace_distance(x, nb)
    assert torch.allclose(dist, want, rtol=1e-10) and torch.allclose((x - proj).norm(dim=1), want, rtol=1e-10)
    assert flagged.dtype == torch.bool and not flagged.any()


@pytest.mark.parametrize("shape", [(5, 10, 784, 1), (4, 10, 784), (5, 10, 783)])
def test_local_distance_refuses_neighbours_of_the_wrong_shape(shape):
    x = torch.zeros(5, 784)
    with pytest.raises(ValueError) as err:
        local_subspace_distance(x, torch.zeros(shape))
    assert str(err.value) == f"expected neighbours (n, k, D) for x (5, 784), got {shape}"


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_rank_deficiency_is_judged_relative_to_the_gram_scale(scale):
    """Flagging compares the smallest Gram eigenvalue with RANK_RTOL times the largest, so it does not depend on
    the images' scale: duplicates are flagged and well-spread neighbours are not, at any scale."""
    x, neighbours, inside, offset = orthogonal_case(3, 8, torch.float64)
    dist, _, flagged = local_subspace_distance(scale * x, scale * neighbours)
    assert not flagged.any() and torch.allclose(dist, scale * offset, rtol=1e-8)
    dup = torch.cat([neighbours, neighbours[:, 2:4]], dim=1)
    dist, proj, flagged = local_subspace_distance(scale * x, scale * dup)
    assert flagged.all() and torch.allclose(dist, scale * offset, rtol=1e-6)


def test_the_ridge_shrinks_a_small_direction_by_w_over_w_plus_ridge():
    """A Gram with eigenvalues 4 and w = 1e-10 (below RANK_RTOL x 4) is flagged; the ridge RIDGE x 4 then keeps
    w / (w + 4 RIDGE) of x's part along the small direction, and all of it along the large one."""
    d = 784
    e1, e2 = torch.eye(d, dtype=torch.float64)[:2]
    w = 1e-10
    assert w <= RANK_RTOL * 4
    neighbours = torch.stack([torch.zeros(d, dtype=torch.float64), 2 * e1, w ** 0.5 * e2])[None]
    x = (0.7 * e1 + 0.3 * e2)[None]
    _, proj, flagged = local_subspace_distance(x, neighbours)
    assert flagged.all()
    assert torch.allclose(proj[0, :2], torch.tensor([0.7, 0.3 * w / (w + RIDGE * 4)], dtype=torch.float64),
                          rtol=1e-6, atol=0)


def test_local_distance_returns_its_projection_in_the_inputs_dtype():
    x, neighbours, _, _ = orthogonal_case(2, 5, torch.float32)
    dist, proj, _ = local_subspace_distance(x, neighbours)
    assert dist.dtype == proj.dtype == torch.float32


def test_local_manifold_takes_flat_images(train_tensors):
    images = train_tensors[0][:400]
    pca = fit_pca(images, dim=10)
    a = distance_to_local_manifold(images[:7] + 0.05, images, pca, k=8)
    b = distance_to_local_manifold((images[:7] + 0.05).flatten(1), images, pca, k=8)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_local_manifold_computes_in_the_images_dtype_and_device(train_tensors):
    """float64 images give float64 distances equal to the float64 least-squares fit, and with the default device
    set to `meta` (which holds no data) the results are the same."""
    images = train_tensors[0][:400].double()
    pca = fit_pca(images, dim=10)
    out = distance_to_local_manifold(images[:7] + 0.05, images, pca, k=8)
    nb = images.flatten(1)[out["neighbours"]]
    want, _, _ = local_subspace_distance((images[:7] + 0.05).flatten(1), nb)
    assert out["distance"].dtype == torch.float64
    assert torch.allclose(out["distance"], want, rtol=1e-12, atol=0)  # float32 would differ from 1e-8 on
    assert out["regularized"].dtype == torch.bool
    with torch.device("meta"):
        again = distance_to_local_manifold(images[:7] + 0.05, images, pca, k=8, batch_size=3)
        pca_again = fit_pca(images, dim=10)
    assert torch.allclose(again["distance"], out["distance"], rtol=1e-12, atol=0)
    assert torch.equal(again["regularized"], out["regularized"]) and torch.equal(again["neighbours"], out["neighbours"])
    assert torch.equal(pca_again[0], pca[0]) and torch.equal(pca_again[1], pca[1])


def test_pca_and_local_distance_put_their_results_on_the_images_device(train_tensors):
    """Images on the `meta` device, the PCA basis and the neighbours on the CPU: these are taken to the images'
    device, and every result lands there. (The neighbour search cannot run on `meta`: whether a row has ties is a
    question about data.)"""
    images = train_tensors[0][:400]
    pca = fit_pca(images, dim=10)
    meta = images.to("meta")
    feats = pca_features(meta, pca)
    assert feats.device.type == "meta" and feats.shape == (400, 10)
    mean, comp = fit_pca(meta, dim=10)
    assert mean.device.type == comp.device.type == "meta"
    for k in (1, 3):  # one neighbour: the span is a point
        _, proj, flagged = local_subspace_distance(meta[:2].flatten(1), images[:2 * k].flatten(1).view(2, k, 784))
        assert proj.device.type == flagged.device.type == "meta"


def test_local_manifold_of_no_images(train_tensors):
    images = train_tensors[0][:100]
    out = distance_to_local_manifold(images[:0], images, fit_pca(images, dim=10), k=5)
    assert out["distance"].shape == (0,) and out["regularized"].shape == (0,) and out["neighbours"].shape == (0, 5)



# --- The paper's estimator on approximated manifolds and the supplement's mean-centred variant -----------------


def _lstsq_residual(vec: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """||vec - X beta*|| per example by torch.linalg.lstsq (float64), X's columns the rows of `columns`."""
    sol = torch.linalg.lstsq(columns.transpose(1, 2).double(), vec.double()[:, :, None], driver="gelsd").solution
    return (vec.double() - (columns.transpose(1, 2).double() @ sol).squeeze(2)).norm(dim=1)


def test_paper_estimator_measures_the_perturbation_outside_the_span_of_the_centred_neighbours() -> None:
    g = torch.Generator().manual_seed(5)
    n, k, d = 6, 8, 40
    origin = torch.rand(n, d, generator=g, dtype=torch.float64)
    nb = origin[:, None] + 0.3 * torch.randn(n, k, d, generator=g, dtype=torch.float64)
    inside = torch.einsum("nk,nkd->nd", torch.randn(n, k, generator=g, dtype=torch.float64), nb - origin[:, None])
    out = perturbation_residuals(origin + inside, origin, nb)
    assert out["paper"].abs().max() < 1e-9  # a perturbation along the local manifold is on it
    # One orthogonal to every x_i - x (Gram-Schmidt against them): its whole norm is off the manifold.
    raw = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr((nb - origin[:, None]).transpose(1, 2))
    ortho = raw - (q @ (q.transpose(1, 2) @ raw[:, :, None])).squeeze(2)
    out = perturbation_residuals(origin + ortho, origin, nb)
    torch.testing.assert_close(out["paper"], ortho.norm(dim=1))
    # Any perturbation: the least-squares residual, for both centrings (all k mean-centred vectors for lstsq).
    delta = 0.2 * torch.randn(n, d, generator=g, dtype=torch.float64)
    out = perturbation_residuals(origin + delta, origin, nb)
    torch.testing.assert_close(out["paper"], _lstsq_residual(delta, nb - origin[:, None]))
    torch.testing.assert_close(out["mean_centred"], _lstsq_residual(delta, nb - nb.mean(1, keepdim=True)))
    assert not out["paper_regularized"].any() and not out["mean_centred_regularized"].any()
    assert not torch.allclose(out["mean_centred"], out["paper"])


def test_local_distances_do_not_depend_on_batching_and_clean_perturbations_are_zero(fonts_set) -> None:
    images = fonts_set["images"].double()
    train = torch.cat([images, images.flip(-1)])
    pca = fit_pca(train, dim=10)
    adversarial = (images + 0.05 * torch.sign(torch.sin(torch.arange(784.0))).view(1, 1, 28, 28)).clamp(0, 1)
    a = distance_to_local_manifold(adversarial, train, pca, k=6, origins=images)
    b = distance_to_local_manifold(adversarial, train, pca, k=6, batch_size=5, origins=images)
    for key in ("paper", "mean_centred", "distance"):
        torch.testing.assert_close(a[key], b[key])
        assert a[key].shape == (len(images),)
    torch.testing.assert_close(a["distance"], distance_to_local_manifold(adversarial, train, pca, k=6)["distance"])
    same = distance_to_local_manifold(images, train, pca, k=6, origins=images)
    assert same["paper"].abs().max() == 0 and same["mean_centred"].abs().max() == 0  # delta = 0
    perturbation = (adversarial - images).flatten(1).norm(dim=1)
    assert (a["paper"] <= perturbation + 1e-9).all()  # a residual never exceeds the vector it is of
