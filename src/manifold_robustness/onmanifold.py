"""Attacks through a decoder: on the true FONTS manifold, on a learned (VAE-GAN) manifold, and on the six
parameters of a spatial transformer applied to the image itself (adversarial transformations).

Each is the box attack of `attacks.box_attack` run on the decoder's input z: maximize the cross-entropy of
f(dec(z + zeta)) over ||zeta||_inf <= eta, with z + zeta also kept inside the decoder's own domain (the code
sampling ranges, the latent box [-bound, bound]^d, or the transformation bounds). Restarts begin at the
engine's random start (`AttackConfig.start`) around z, drawn in z's own units and clipped to that box. The
clean prediction, over which success rates are computed, is the prediction on dec(z), the decoded clean point.

The `*_adversary` factories wrap the same attacks for training: they map (model, positions in the training
set, labels, attack settings) to adversarial images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .attacks import Adversary, AttackConfig, AttackResult, box_attack
from .device import fast_layout
from .transformer import IDENTITY_CODE, TransformRanges, decode as render, transform
from .vaegan import folded_decoder, model_device

MANIFOLDS = ("true", "learned")
# What keeps a latent of the learned manifold in the decoder's domain (see `latent_box`).
LATENT_BOXES = ("prior", "data_range")


def clipped_box(center: torch.Tensor, eps: float, low: torch.Tensor,
                high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eta-box around `center` intersected with [low, high]; the center is first clipped into [low, high]."""
    low, high = low.to(center).expand_as(center), high.to(center).expand_as(center)
    center = torch.maximum(torch.minimum(center, high), low)
    return center, torch.maximum(center - eps, low), torch.minimum(center + eps, high)


# How a batch is decoded by the decoders of its examples' classes (see `ClassDecoders`).
DECODER_LAYOUTS = ("per_class", "grouped")


class GroupedDecoder(nn.Module):
    """K decoders of one shape written out as one network: the linear layer as a batched matrix product over
    the K classes, each convolution as one convolution with groups=K over the K x C channels.

    A batch is laid out as K rows of `width` slots, the examples of class k in row k in their batch order and
    zero latents in the slots left over (width = the largest class count of the batch). A pass then launches
    the operators of one decoder instead of K, and asks the device for one number (the width) instead of one
    per class; the padded slots cost arithmetic, width x K decodes for the batch's n. Each example's image is
    its own decoder's (in float64, to rounding; tests/test_onmanifold.py).
    """

    def __init__(self, decoders: Sequence[nn.Module]):
        super().__init__()
        shapes = {(d.start, tuple(type(layer).__name__ for layer in d.net)) for d in decoders}
        if len(shapes) != 1:
            raise ValueError(f"grouped decoding needs decoders of one shape, got {len(shapes)} different shapes")
        first = decoders[0]
        self.classes, self.start = len(decoders), first.start
        self.fc_weight = nn.Parameter(torch.stack([d.fc.weight.t() for d in decoders]), requires_grad=False)
        self.fc_bias = nn.Parameter(torch.stack([d.fc.bias for d in decoders])[:, None], requires_grad=False)
        layers: list[nn.Module] = []
        for i, layer in enumerate(first.net):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                layer = grouped_conv([d.net[i] for d in decoders])
            layers.append(layer)
        self.net = nn.Sequential(*layers).requires_grad_(False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        k, (channels, size) = self.classes, self.start
        counts = torch.bincount(labels, minlength=k)
        if len(counts) > k:
            raise ValueError(f"labels must be classes 0..{k - 1}, got {int(labels.max())}")
        width = int(counts.max())
        # Slot of each example: its class's row, then its rank among that class's examples in batch order.
        order = torch.argsort(labels, stable=True)
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(len(labels), device=labels.device) - (counts.cumsum(0) - counts)[labels[order]]
        slot = labels * width + rank
        padded = z.new_zeros(k * width, z.shape[1]).index_copy(0, slot, z).view(k, width, -1)
        h = torch.baddbmm(self.fc_bias, padded, self.fc_weight)  # (k, width, channels * size^2)
        h = self.net(h.transpose(0, 1).reshape(width, k * channels, size, size))
        out = h.view(width, k, -1, *h.shape[2:]).transpose(0, 1).reshape(k * width, -1, *h.shape[2:])
        return out[slot]


def grouped_conv(convs: Sequence[nn.Module]) -> nn.Module:
    """One convolution (or transposed convolution) with groups=K whose group k is `convs[k]`."""
    first = convs[0]
    transposed = isinstance(first, nn.ConvTranspose2d)
    kind = nn.ConvTranspose2d if transposed else nn.Conv2d
    k = len(convs)
    grouped = kind(k * first.in_channels, k * first.out_channels, first.kernel_size, first.stride, first.padding,
                   groups=k, bias=first.bias is not None, device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        # Both kinds keep their groups along the weight's first dimension (in_channels of a transposed
        # convolution, out_channels of a plain one), so the K weights stack there.
        grouped.weight.copy_(torch.cat([c.weight for c in convs]))
        if first.bias is not None:
            grouped.bias.copy_(torch.cat([c.bias for c in convs]))
    return grouped


class ClassDecoders(nn.Module):
    """The decoders (and encoders) of class-specific VAE-GANs, applied to each example by its label.

    Frozen and in eval mode: attacks need gradients w.r.t. latents only. Decoding runs through copies of the
    decoders with their batch norms folded in (`folded_decoder`), which give the same images, faster.
    `layout`: per_class runs each class's decoder on its examples (one pass per class in the batch);
    grouped runs all of them as one network (`GroupedDecoder`), which launches the operators of one decoder.
    """

    def __init__(self, models: Sequence[nn.Module], layout: str = "per_class"):
        super().__init__()
        if layout not in DECODER_LAYOUTS:
            raise ValueError(f"decoder layout must be one of {DECODER_LAYOUTS}, got '{layout}'")
        self.models = nn.ModuleList(models)
        self.requires_grad_(False)
        self.eval()
        self.layout = layout
        self.decoders = nn.ModuleList(fast_layout(folded_decoder(m.decoder), model_device(m)) for m in models)
        self.grouped = fast_layout(GroupedDecoder(self.decoders), model_device(models[0])) \
            if layout == "grouped" else None

    @property
    def bound(self) -> float:
        """Half-width of the latent box [-bound, bound]^d the VAE-GANs sample from."""
        return float(self.models[0].cfg.truncation)

    def _per_class(self, fn: Callable[[int, torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
        parts, order = [], []
        for c in labels.unique().tolist():
            rows = (labels == c).nonzero().squeeze(1)
            parts.append(fn(c, inputs[rows]))
            order.append(rows)
        out = torch.cat(parts)
        # Scatter back to input order through an index (differentiable), not an in-place assignment.
        return out[torch.argsort(torch.cat(order))]

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images decoded from latents `z` by the VAE-GAN of each example's class."""
        if self.grouped is not None:
            return self.grouped(z, labels)
        return self._per_class(lambda c, x: self.decoders[c](x), z, labels)

    @torch.no_grad()
    def encode_mean(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Encoder means of images under the VAE-GAN of their class."""
        return torch.cat([self._per_class(lambda c, x: self.models[c].encode(x)[0], images[i:i + batch_size],
                                          labels[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def decoded_images(result: AttackResult, decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   restart: int | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Images of the kept variables: of the best restart per example, or of one given restart."""
    v = result.best_variables() if restart is None else result.variables[:, restart]
    return decode_variables(v, decode, batch_size)


def decode_variables(v: torch.Tensor, decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     batch_size: int = 1000) -> torch.Tensor:
    """Images of one variable (code or latent) per attacked example, row i decoded as example i."""
    n = len(v)
    rows = torch.arange(n, device=v.device)
    with torch.no_grad():
        return torch.cat([decode(v[i:i + batch_size], rows[i:i + batch_size]) for i in range(0, n, batch_size)]) \
            if n else v.new_empty(0, 1, 28, 28)


def true_manifold_attack(model: nn.Module, glyphs: torch.Tensor, font: torch.Tensor, labels: torch.Tensor,
                         codes: torch.Tensor, ranges: TransformRanges, cfg: AttackConfig,
                         indices: torch.Tensor | None = None, progress: bool = False,
                         ) -> tuple[AttackResult, Callable]:
    """Attack the 6 transformation codes of FONTS images (font and class fixed) within eta and the ranges.

    Returns the result (variables are codes) and the decoder `decode(codes, rows)` that renders them.
    """
    center, lo, hi = clipped_box(codes, cfg.eps, ranges.low, ranges.high)

    def decode(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return render(glyphs, font[rows], labels[rows], v, ranges.convention)

    return box_attack(model, decode, center, lo, hi, labels, cfg, indices, progress=progress), decode


def latent_box(latents: torch.Tensor, labels: torch.Tensor, setting: str,
               bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the box (low, high), each shaped like `latents`, that its clean and adversarial latents
    are kept in on the learned manifold.

    prior: [-bound, bound]^d, the support of the truncated prior the VAE-GANs sample from (the paper's text).
    Encoder means outside it are clipped into it before the attack, which moves the clean point.
    data_range: per class and coordinate, the smallest and largest of the `latents` of that class (the
    training latents for training, the attacked test latents for evaluation), so no latent is moved. Per
    class, because each class has a VAE-GAN of its own: coordinate k of one class's latent space has nothing
    to do with coordinate k of another's, and a range pooled over classes would let one class's outliers widen
    every other class's box.
    """
    if setting == "prior":
        low = torch.full_like(latents, -bound)
        return low, -low
    if setting != "data_range":
        raise ValueError(f"latent box must be one of {LATENT_BOXES}, got '{setting}'")
    low, high = torch.empty_like(latents), torch.empty_like(latents)
    for c in labels.unique().tolist():
        rows = labels == c
        low[rows], high[rows] = latents[rows].amin(dim=0), latents[rows].amax(dim=0)
    return low, high


def clamped_shares(latents: torch.Tensor, bound: float) -> dict[str, float]:
    """How much of `latents` lies outside the prior's box [-bound, bound]^d: the share of latents with any
    coordinate outside it and the share of coordinates outside it (what the `prior` box clamps)."""
    outside = latents.abs() > bound
    if not outside.numel():
        return {"clamped_latent_share": float("nan"), "clamped_coordinate_share": float("nan")}
    return {"clamped_latent_share": int(outside.any(dim=1).sum()) / len(outside),
            "clamped_coordinate_share": int(outside.sum()) / outside.numel()}


def learned_manifold_attack(model: nn.Module, decoders: ClassDecoders, latents: torch.Tensor, labels: torch.Tensor,
                            cfg: AttackConfig, indices: torch.Tensor | None = None, progress: bool = False,
                            box: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[AttackResult, Callable]:
    """Attack VAE-GAN latents (encoder means of the true class) within eta and the latent `box` (low, high),
    broadcastable to `latents` (see `latent_box`); None is the prior's box [-bound, bound]^d. The latents are
    clipped into the box first."""
    if box is None:
        bound = torch.tensor(decoders.bound, device=latents.device)
        box = (-bound, bound)
    center, lo, hi = clipped_box(latents, cfg.eps, *box)

    def decode(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return decoders.decode(v, labels[rows])

    return box_attack(model, decode, center, lo, hi, labels, cfg, indices, progress=progress), decode


def transformation_box(n: int, eps: float, ranges: TransformRanges,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eta-box around the identity transformation, intersected with the admissible ranges."""
    identity = torch.tensor(IDENTITY_CODE, device="cpu")  # checked where the ranges are
    if ((identity < ranges.low) | (identity > ranges.high)).any():
        raise ValueError(f"transformation ranges {ranges} must contain the identity {IDENTITY_CODE}")
    return clipped_box(identity.to(device).expand(n, 6), eps, ranges.low, ranges.high)


def transformation_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ranges: TransformRanges,
                          cfg: AttackConfig, indices: torch.Tensor | None = None, progress: bool = False,
                          ) -> tuple[AttackResult, Callable]:
    """Attack the 6 parameters of a spatial transformer applied to the images, starting around the identity."""
    center, lo, hi = transformation_box(len(images), cfg.eps, ranges, images.device)

    def decode(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return transform(images[rows], v, ranges.convention)

    return box_attack(model, decode, center, lo, hi, labels, cfg, indices, clean_images=images,
                      progress=progress), decode


def true_manifold_adversary(glyphs: torch.Tensor, font: torch.Tensor, codes: torch.Tensor,
                            ranges: TransformRanges) -> Adversary:
    """On-manifold training examples on the true FONTS manifold, from the training images' own codes."""
    def attack(model: nn.Module, pos: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
               blocks: tuple[int, ...] | None = None) -> torch.Tensor:
        result, decode = true_manifold_attack(model, glyphs, font[pos], y, codes[pos], ranges, cfg, pos.cpu())
        return decoded_images(result, decode, restart=0)
    return attack


def learned_manifold_adversary(decoders: ClassDecoders, latents: torch.Tensor,
                               box: tuple[torch.Tensor, torch.Tensor] | Callable[[int], tuple] | None = None,
                               ) -> Adversary:
    """On-manifold training examples on the learned manifold, from the training images' encoder means; `box`:
    per training image, the latent box (as `latent_box` gives it), None for the prior's; or, where it depends
    on the training set, a function of N giving the box per image of a model trained on the first N images.
    Stacked models of different N are attacked in one call whose rows come in equal blocks, one per model:
    `blocks` then names the N of each block (otherwise every row is of a model trained on all `latents`)."""
    def attack(model: nn.Module, pos: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
               blocks: tuple[int, ...] | None = None) -> torch.Tensor:
        rows_box = None
        if callable(box):
            per_block = pos.tensor_split(len(blocks)) if blocks else [pos]
            parts = [box(n) for n in (blocks or (len(latents),))]
            rows_box = tuple(torch.cat([part[i][p] for part, p in zip(parts, per_block)]) for i in range(2))
        elif box is not None:
            rows_box = (box[0][pos], box[1][pos])
        result, decode = learned_manifold_attack(model, decoders, latents[pos], y, cfg, pos.cpu(), box=rows_box)
        return decoded_images(result, decode, restart=0)
    return attack


def transformation_adversary(images: torch.Tensor, ranges: TransformRanges) -> Adversary:
    """Adversarially transformed training images."""
    def attack(model: nn.Module, pos: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
               blocks: tuple[int, ...] | None = None) -> torch.Tensor:
        result, decode = transformation_attack(model, images[pos], y, ranges, cfg, pos.cpu())
        return decoded_images(result, decode, restart=0)
    return attack
