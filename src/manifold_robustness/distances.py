"""L2 distances of images to the data manifold (paper section 2.1, Fig. 2).

Two estimates, as in the paper:

* FONTS, where the manifold is known: project an image onto the true decoder's image of its (font, class) by
  minimizing ||decode(glyphs, font, label, c) - x||_2 over the six codes c inside the sampling box, with Adam
  (the paper's lr 0.09 and 100 iterations are the defaults of the `distances` settings, config/schema.yaml)
  from several starts; the first start is the example's own code, the others are uniform in the box, drawn per
  (seed, example index, start) so that a result never depends on batching or order.
* EMNIST / Fashion-MNIST, where it is not: approximate the manifold locally by the k nearest training images
  x_1..x_k of the adversarial example x~ (searched in a PCA space, as the paper does). Three estimators
  (`LOCAL_ESTIMATORS`, config `distances.local_estimator`):
  - `paper` (the main paper's, supplement section on the distance to the manifold): the part of the perturbation
    delta = x~ - x that the span of x_i - x cannot explain, ||delta - X beta*|| with beta* the least-squares
    fit; x is the image the attack started from (the test image; for an on-manifold example the decoded clean
    latent, our reading: the test image itself is off the learned manifold by the VAE-GAN's reconstruction
    error). A clean image has delta = 0 and distance 0 by construction.
  - `mean_centred` (the supplement's variant): the same delta against the span of x_i - mean(x_i); a clean image
    is measured as x - mean(x_i) against its own neighbours, which is its distance to their affine span.
  - `affine` (this project's earlier estimator): the distance of x~ itself to the affine span of its neighbours.
"""

from __future__ import annotations

import torch

from .attacks import restart_noise
from .device import Adam
from .transformer import TransformRanges, decode

# Ridge strength, relative to the largest eigenvalue of the neighbours' Gram matrix, used when it is (near) singular:
# far above float64 round-off of exactly zero eigenvalues (~1e-16), far below the directions real neighbours span.
RIDGE = 1e-9
# A Gram matrix whose eigenvalue ratio min/max falls below this (float64) counts as rank deficient.
RANK_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# True manifold (FONTS)
# ---------------------------------------------------------------------------------------------------------------


def start_codes(init_codes: torch.Tensor, ranges: TransformRanges, starts: int, seed: int,
                indices: torch.Tensor) -> torch.Tensor:
    """Starts (starts, n, 6): the clipped own codes first, then codes uniform in the box per (seed, index, start)."""
    low, high = ranges.low.to(init_codes), ranges.high.to(init_codes)
    first = torch.maximum(torch.minimum(init_codes, high), low)
    rest = [low + (restart_noise(indices, s, (6,), seed).to(init_codes) + 1) / 2 * (high - low)
            for s in range(1, starts)]
    return torch.stack([first, *rest])


def _project_batch(images: torch.Tensor, glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor,
                   starts: torch.Tensor, low: torch.Tensor, high: torch.Tensor, steps: int,
                   lr: float, convention: str) -> torch.Tensor:
    """Best codes (b, 6) over all starts (s, b, 6) and all Adam iterates, by L2 distance to the images; of
    iterates with equal distances the first is kept."""
    s, b = starts.shape[:2]
    target = torch.cat([images] * s)
    font_s, label_s = font.repeat(s), label.repeat(s)
    codes = starts.reshape(s * b, 6).clone().requires_grad_(True)
    # Per-example losses are summed: Adam is per coordinate, so the examples do not interact.
    optimizer = Adam([codes], lr=lr)
    best = images.new_full((s * b,), float("inf"))
    best_codes = codes.detach().clone()
    for step in range(steps + 1):
        recon = decode(glyphs, font_s, label_s, codes, convention)
        sq = (recon - target).flatten(1).pow(2).sum(1)
        with torch.no_grad():
            better = sq < best
            best = torch.where(better, sq, best)
            best_codes = torch.where(better[:, None], codes, best_codes)
        if step == steps:
            break
        optimizer.zero_grad()
        # The squared norm has the same minimizers as the norm and a gradient that is smooth at 0.
        sq.sum().backward()
        optimizer.step()
        with torch.no_grad():
            codes.copy_(torch.maximum(torch.minimum(codes, high), low))
    pick = best.view(s, b).argmin(0)
    return best_codes.view(s, b, 6)[pick, torch.arange(b, device=images.device)]


def project_true_manifold(images: torch.Tensor, glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor,
                          init_codes: torch.Tensor, ranges: TransformRanges, *, steps: int, lr: float,
                          starts: int, seed: int, batch_size: int = 1000, indices: torch.Tensor | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project images (n,1,28,28) onto the true FONTS manifold of their font and class.

    Returns (distances (n,) as L2 norms in pixel units, codes (n, 6) inside `ranges`, projections (n,1,28,28)
    equal to decode(glyphs, font, label, codes, ranges.convention)). `indices` (default 0..n-1) are the examples'
    identities that seed their random starts; all starts of a batch are folded into one decoder batch.

    Shear and rotation trade off almost exactly for many glyphs, a flat valley in which Adam at lr 0.09 stops at
    a residual of about 0.02 (of image norms about 7); a decaying learning rate was tried and did not do better.
    """
    if starts < 1 or steps < 0:
        raise ValueError(f"starts must be >= 1 and steps >= 0, got {starts} and {steps}")
    images = images.detach()
    n, device, dtype = len(images), images.device, images.dtype
    if init_codes.shape != (n, 6):
        raise ValueError(f"init_codes must have shape ({n}, 6), got {tuple(init_codes.shape)}")
    if not n:  # affine_grid refuses an empty batch
        return images.new_empty(0), images.new_empty(0, 6), images.clone()
    indices = torch.arange(n, device="cpu") if indices is None else indices.cpu()
    glyphs = glyphs.to(device, dtype)
    font, label = font.to(device), label.to(device)
    init = init_codes.to(device, dtype)
    low, high = ranges.low.to(device, dtype), ranges.high.to(device, dtype)
    parts = zip(images.split(batch_size), font.split(batch_size), label.split(batch_size),
                init.split(batch_size), indices.split(batch_size))
    with torch.enable_grad():
        codes = torch.cat([_project_batch(x, glyphs, f, y, start_codes(c, ranges, starts, seed, i), low, high,
                                          steps, lr, ranges.convention) for x, f, y, c, i in parts])
    with torch.no_grad():
        projections = torch.cat([decode(glyphs, f, y, c, ranges.convention) for f, y, c in
                                 zip(font.split(batch_size), label.split(batch_size), codes.split(batch_size))])
        distances = (projections - images).flatten(1).norm(dim=1)
    return distances, codes, projections


def distance_to_perturbation_ratio(distance_adv: torch.Tensor, perturbation_l2: torch.Tensor) -> torch.Tensor:
    """Distance of adversarial examples to the manifold over their perturbation's L2 norm (NaN where it is 0)."""
    distance_adv, perturbation_l2 = torch.as_tensor(distance_adv), torch.as_tensor(perturbation_l2)
    ratio = distance_adv / perturbation_l2
    return torch.where(perturbation_l2 > 0, ratio, torch.full_like(ratio, float("nan")))


# ---------------------------------------------------------------------------------------------------------------
# Local linear approximation (EMNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------------------------


def fit_pca(train_images: torch.Tensor, *, dim: int, batch_size: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and top-`dim` principal directions (D, dim) of the training images, without randomness (the
    paper's 40 dimensions are the default of the `distances.pca_dim` setting).

    Uses the eigendecomposition of the covariance, accumulated in float64 over chunks (memory D x D, exact and
    deterministic, unlike randomized `pca_lowrank`); each direction's sign makes its largest-magnitude entry
    positive. Returned in the images' dtype and device.
    """
    x = train_images.flatten(1)
    n, d = x.shape
    if not 0 < dim <= d or n < 2:
        raise ValueError(f"need 0 < dim <= {d} and at least two images, got dim {dim} and {n} images")
    mean = torch.zeros(d, device=x.device, dtype=torch.float64)
    for i in range(0, n, batch_size):
        mean += x[i:i + batch_size].double().sum(0)
    mean /= n
    cov = torch.zeros(d, d, device=x.device, dtype=torch.float64)
    for i in range(0, n, batch_size):
        c = x[i:i + batch_size].double() - mean
        cov += c.T @ c
    _, vectors = torch.linalg.eigh(cov)  # the scatter matrix: the covariance's eigenvectors, unscaled
    components = vectors[:, -dim:].flip(1)
    signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    return mean.to(x.dtype), (components * signs).to(x.dtype)


def pca_features(images: torch.Tensor, pca: tuple[torch.Tensor, torch.Tensor], batch_size: int = 20000) -> torch.Tensor:
    """Coordinates (n, dim) of images in the PCA basis."""
    mean, components = pca[0].to(images.device), pca[1].to(images.device)
    return torch.cat([(x - mean) @ components for x in images.flatten(1).split(batch_size)])


def nearest_neighbours(query_feats: torch.Tensor, train_feats: torch.Tensor, *, k: int, batch_size: int = 500,
                       train_chunk: int = 50000) -> torch.Tensor:
    """Indices (n, k) of the exact k nearest training points (Euclidean), nearest first.

    Memory is bounded by batch_size x (train_chunk + k x chunks) distances: queries go in batches, the training set
    in chunks whose top-k are merged. Points are ranked by ||b||^2 - 2ab, the squared distance ||a - b||^2 less the query's
    own ||a||^2, which orders a query's neighbours the same. Ties keep the lower index.
    """
    n_train = len(train_feats)
    if not 0 < k <= n_train:
        raise ValueError(f"k must be in 1..{n_train}, got {k}")
    train_feats = train_feats.to(query_feats)
    train_sq = train_feats.pow(2).sum(1)
    out = []
    for q in query_feats.split(batch_size):
        found_d, found_i = [], []
        for j, t in zip(range(0, n_train, train_chunk), train_feats.split(train_chunk)):
            dist = train_sq[j:j + len(t)] - 2 * q @ t.T
            d, idx = lowest(dist, min(k, len(t)))
            found_d.append(d)
            found_i.append(idx + j)
        # Sorted by (distance, index): the lowest-index ties of each chunk, so the merge does not depend on chunking.
        best_d, best_i = torch.cat(found_d, 1), torch.cat(found_i, 1)
        order = torch.argsort(best_i)
        best_d, best_i = best_d.gather(1, order), best_i.gather(1, order)
        out.append(best_i.gather(1, torch.argsort(best_d, stable=True)[:, :k]))
    return torch.cat(out)


def lowest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row and their columns, keeping the lowest columns among ties.

    `torch.topk` picks any of several tied entries; a row whose k-th smallest value is tied beyond k entries is
    therefore sorted in full (stably), which is exact and rare with real data."""
    d, idx = torch.topk(values, k, largest=False)
    tied = (values <= d[:, -1:]).sum(1) > k
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        order = torch.argsort(values[rows], stable=True)[:, :k]
        d[rows], idx[rows] = values[rows].gather(1, order), order
    return d, idx


def span_residual(vec: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distance of vec (n, D) from the linear span of basis (n, m, D), with the projection (n, D) and the flag of
    a rank-deficient basis, computed as `local_subspace_distance` describes (float64, ridge where singular)."""
    v64, b64 = vec.flatten(1).double(), basis.to(vec.device, torch.float64)
    gram = b64 @ b64.transpose(1, 2)  # (n, m, m)
    rhs = (b64 @ v64[:, :, None]).squeeze(2)  # (n, m)
    values, vectors = torch.linalg.eigh(gram)
    tiny = torch.finfo(torch.float64).tiny
    top = values[:, -1].clamp_min(tiny)
    flagged = values[:, 0] <= RANK_RTOL * top
    ridge = torch.where(flagged, RIDGE * top, torch.zeros_like(top))
    # Flagged or not, every denominator is positive; the clamp keeps 1 / denom finite where the Gram is zero
    # (all basis vectors zero), where every coefficient is then 0 and the projection is 0.
    inv = 1 / (values + ridge[:, None]).clamp_min(tiny)
    coef = (vectors @ (inv * (vectors.transpose(1, 2) @ rhs[:, :, None]).squeeze(2))[:, :, None]).squeeze(2)
    proj = (coef[:, None, :] @ b64).squeeze(1)
    return (v64 - proj).norm(dim=1), proj, flagged


def local_subspace_distance(x: torch.Tensor, neighbours: torch.Tensor,
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distance of x (n, D) to the affine span of its neighbours (n, k, D), with the projection (n, D).

    The span is neighbours[0] + span(neighbours[1:] - neighbours[0]); the least-squares coefficients solve the
    normal equations in float64 through an eigendecomposition of the (k-1)x(k-1) Gram matrix. Where that matrix
    is rank deficient (eigenvalue ratio below RANK_RTOL, e.g. duplicate neighbours), a ridge term of
    RIDGE x (largest eigenvalue) is added instead; the third output flags those examples. Directions in the Gram's
    null space carry no part of the right-hand side, so the ridge only shrinks the coefficient of a direction
    with eigenvalue w by w / (w + ridge).
    """
    x = x.flatten(1)
    if neighbours.dim() != 3 or neighbours.shape[0] != len(x) or neighbours.shape[2] != x.shape[1]:
        raise ValueError(f"expected neighbours (n, k, D) for x {tuple(x.shape)}, got {tuple(neighbours.shape)}")
    x64, nb = x.double(), neighbours.to(x.device, torch.float64)
    origin = nb[:, 0]
    if nb.shape[1] == 1:
        proj = origin
        flagged = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    else:
        _, offset, flagged = span_residual(x64 - origin, nb[:, 1:] - origin[:, None])
        proj = origin + offset
    distance = (x64 - proj).norm(dim=1)
    return distance.to(x.dtype), proj.to(x.dtype), flagged


LOCAL_ESTIMATORS = ("paper", "mean_centred", "affine")


def perturbation_residuals(adversarial: torch.Tensor, origins: torch.Tensor, neighbours: torch.Tensor,
                           ) -> dict[str, torch.Tensor]:
    """The `paper` and `mean_centred` distances (see the module docstring) of adversarial examples (n, D) made
    from `origins` (n, D), against their neighbours (n, k, D), with each one's rank-deficiency flag.

    The k vectors x_i - mean(x_i) sum to zero, so any k - 1 of them span the same space; the first k - 1 are
    used, which keeps the Gram matrix regular for k distinct neighbours in general position."""
    adversarial, origins = adversarial.flatten(1).double(), origins.flatten(1).double()
    nb = neighbours.to(adversarial.device, torch.float64)
    delta = adversarial - origins
    paper, _, paper_flag = span_residual(delta, nb - origins[:, None])
    centred = nb - nb.mean(dim=1, keepdim=True)
    if nb.shape[1] > 1:
        mean_centred, _, mean_flag = span_residual(delta, centred[:, :-1])
    else:  # one neighbour: its mean is itself and the span is {0}
        mean_centred, mean_flag = delta.norm(dim=1), torch.zeros(len(delta), dtype=torch.bool, device=delta.device)
    dtype = neighbours.dtype
    return {"paper": paper.to(dtype), "mean_centred": mean_centred.to(dtype), "paper_regularized": paper_flag,
            "mean_centred_regularized": mean_flag}


def distance_to_local_manifold(images: torch.Tensor, train_images: torch.Tensor,
                               pca: tuple[torch.Tensor, torch.Tensor], *, k: int, batch_size: int = 250,
                               train_feats: torch.Tensor | None = None,
                               origins: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L2 distance of each image to the affine span of its k nearest training images (neighbours found in PCA space;
    the paper's k = 50 is the default of the `distances.neighbours` setting).

    Returns dict(distance (n,), regularized (n,) mask of the examples whose Gram matrix needed the ridge,
    neighbours (n, k) training indices). `train_feats` may pass precomputed PCA features of `train_images`.
    Given `origins` (n, ...), the images the adversarial examples `images` were made from, it adds the `paper`
    and `mean_centred` distances of `perturbation_residuals` (and their `*_regularized` masks) over the same
    neighbours; `distance` is then the third estimator, `affine`.
    """
    device = images.device
    train_flat = train_images.flatten(1)
    if train_feats is None:
        train_feats = pca_features(train_flat.to(device), pca)
    neighbours = nearest_neighbours(pca_features(images, pca), train_feats.to(device), k=k)
    batches = zip(images.flatten(1).split(batch_size), neighbours.split(batch_size),
                  (origins.flatten(1) if origins is not None else images.flatten(1)).split(batch_size))
    parts = []
    for x, nb, start in batches:
        near = train_flat[nb.to(train_flat.device)].to(device)
        distance, _, flagged = local_subspace_distance(x, near)
        parts.append({"distance": distance, "regularized": flagged,
                      **(perturbation_residuals(x, start, near) if origins is not None else {})})
    return {**{key: torch.cat([p[key] for p in parts]) for key in parts[0]}, "neighbours": neighbours}
