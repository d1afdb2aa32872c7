"""Distances to the data manifold: projection onto the true FONTS decoder, PCA, exact kNN and the local affine
approximation (paper section 2.1), on the tiny FONTS data of conftest and on constructed cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from manifold_robustness.distances import (
    distance_to_local_manifold,
    distance_to_perturbation_ratio,
    fit_pca,
    local_subspace_distance,
    nearest_neighbours,
    pca_features,
    project_true_manifold,
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


def project(s: dict, images: torch.Tensor, init: torch.Tensor, **kw):
    return project_true_manifold(images, s["glyphs"], s["font"], s["labels"], init, RANGES, **kw)


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
    dist, _, proj = project_true_manifold(images, s["glyphs"], s["font"], s["labels"], s["codes"],
                                          replace(RANGES, convention="sampling"), steps=3, starts=2)
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
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[1], c[1])
    # Starts are tied to example indices: a subset with its indices gets the same answer.
    rows = torch.tensor([3, 7, 11])
    sub = project_true_manifold(s["images"][rows], s["glyphs"], s["font"][rows], s["labels"][rows], init[rows],
                                RANGES, steps=10, starts=3, seed=1, indices=rows)
    assert torch.equal(sub[1], a[1][rows])


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
    assert out["distance"].max() < 1e-4 and out["n_regularized"] == 0
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
    assert out["n_regularized"] == 5 and out["regularized"].all()
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
