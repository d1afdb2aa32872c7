"""Projected-gradient attacks in a box: L_inf PGD on images, and the engine later reused for attacks on codes
and latents (every constraint set in this study is a box: the eps-ball intersected with [0, 1], or a latent
eta-box intersected with the latent's range).

The engine maximizes the cross-entropy of the model on `decode(v)` over v in [lo, hi] from random starts
v0 = clip(center + eps * u, lo, hi), where the offset u (in units of the radius eps) is one of two starts:
- "uniform" (Madry et al.): every coordinate of u uniform in [-1, 1], i.e. u uniform in the L_inf unit ball;
- "distance_direction" (our reading of the paper's "(distance and direction) uniformly sampled in the
  eps-ball"): u = r g / ||g||_inf with g standard normal per coordinate (its direction uniform over all
  directions) and then r uniform in [0, 1], so the distance ||eps * u||_inf, taken before clipping, is uniform
  in [0, eps]. Most coordinates of g are far smaller than its largest one, so such a start lies much closer to
  the center in L2 than a uniform one; the start can thus move the distances to the manifold of Fig. 2.
On-manifold attacks run this same engine, so they draw the same start in their code, latent or transformation
boxes, eps then being in the decoder input's own units. Two step rules: signed gradient (Madry et al.; the
default) and Adam on the perturbation (the paper's choice), either in the variable's own units or, with
`relative_step`, in units of each coordinate's half-width of its box. Random starts are drawn per
(seed, example index, restart) by a counter-based generator on the attack's device (`keyed`), so a result never
depends on batch size, chunking, how restarts are laid out or where the starts are drawn.

What each restart keeps:
- early_stop=True (evaluation): the first iterate that is misclassified; the example then leaves the active
  batch. If no iterate succeeds, the iterate with the highest loss.
- early_stop=False (adversarial training): the iterate with the highest loss over all `steps + 1` iterates.
A restart counts as successful when the iterate it keeps is misclassified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import keyed

Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, positions in the training set, their labels, attack settings) -> adversarial images, for training.
# Stacked models of different N (`stacked.train_stacked`) add `blocks=`, the N of each model's block of rows,
# for adversaries whose examples depend on the training set (the learned manifold's data-range box).
Adversary = Callable[..., torch.Tensor]
STEP_RULES = ("sign", "adam")
LAYOUTS = ("auto", "sequential", "folded")
STARTS = ("uniform", "distance_direction")


@dataclass(frozen=True)
class AttackConfig:
    """Budget and optimizer of a box attack; `eps` is the radius of the box around the clean variable."""

    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    restarts: int = 5
    optimizer: str = "sign"
    adam_lr: float = 0.005
    start: str = "uniform"
    # Signed and Adam steps in units of each coordinate's half-width of its box ((hi - lo) / 2 per coordinate)
    # instead of in the variable's own units: for boxes whose coordinates differ in width (translation, shear,
    # scale, rotation), step_size 2.5 / steps is Madry et al.'s rule per coordinate, and a step below 2 can
    # never cross a box in one step.
    relative_step: bool = False
    early_stop: bool = True
    # An int, or one int per model when M stacked models are attacked at once (`stacked.StackedClassifier`):
    # their rows then come in M equal blocks, model after model, and block m draws its starts from seed m.
    seed: int | tuple[int, ...] = 0
    layout: str = "auto"
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.optimizer not in STEP_RULES:
            raise ValueError(f"optimizer must be one of {STEP_RULES}, got '{self.optimizer}'")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got '{self.start}'")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got '{self.layout}'")
        if self.eps < 0 or self.steps < 0 or self.restarts < 1 or self.batch_size < 1:
            raise ValueError(f"need eps >= 0, steps >= 0, restarts >= 1, batch_size >= 1; got {self}")
        if isinstance(self.seed, tuple) and not self.seed:
            raise ValueError("seed must be an int or one int per stacked model, got an empty tuple")

    def row_seeds(self, n: int) -> list[int]:
        """The seed of each of `n` rows: `seed` for all, or the seeds of M models for M equal blocks of rows."""
        if not isinstance(self.seed, tuple):
            return [self.seed] * n
        if n % len(self.seed):
            raise ValueError(f"{n} rows cannot be split into equal blocks for {len(self.seed)} stacked models")
        return [s for s in self.seed for _ in range(n // len(self.seed))]


@dataclass
class AttackResult:
    """Per example (n) and restart (R): the kept variable, whether it fools the model, its loss and prediction."""

    labels: torch.Tensor  # (n,)
    clean_pred: torch.Tensor  # (n,)
    variables: torch.Tensor  # (n, R, *shape): adversarial images for PGD
    success: torch.Tensor  # (n, R) bool
    loss: torch.Tensor  # (n, R) float
    pred: torch.Tensor  # (n, R) long
    steps_to_success: torch.Tensor  # (n, R) long, -1 where the restart never succeeded

    @property
    def correct(self) -> torch.Tensor:
        """Examples the model classifies correctly before the attack: the ones success rates are over."""
        return self.clean_pred == self.labels

    def best_restart(self) -> torch.Tensor:
        """Per example, a successful restart with the highest loss, else the restart with the highest loss."""
        loss = self.loss.masked_fill(~torch.isfinite(self.loss), torch.finfo(self.loss.dtype).min)
        # Where some restart succeeded, the unsuccessful ones are out of the running.
        others = self.success.any(dim=1, keepdim=True) & ~self.success
        return loss.masked_fill(others, -torch.inf).argmax(dim=1)

    def best_variables(self) -> torch.Tensor:
        """The variable of `best_restart` for every example, shape (n, *shape)."""
        return self.variables[torch.arange(len(self.labels)), self.best_restart()]


def success_rates(success: np.ndarray | torch.Tensor, correct: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Both success-rate definitions, over the examples the model gets right before the attack.

    `success`: fraction of (restart, example) pairs that succeed (the original implementation's average);
    `success_any`: fraction of examples for which any restart succeeds (the robust-accuracy convention);
    `robust_accuracy`: fraction of all examples that are correct and survive every restart.
    """
    success = torch.as_tensor(np.asarray(success), dtype=torch.bool)
    correct = torch.as_tensor(np.asarray(correct), dtype=torch.bool)
    n, n_correct = len(correct), int(correct.sum())
    attacked = success[correct]
    any_success = attacked.any(dim=1)
    return {
        "success": float(attacked.float().mean()) if n_correct else float("nan"),
        "success_any": float(any_success.float().mean()) if n_correct else float("nan"),
        "robust_accuracy": float((n_correct - int(any_success.sum())) / n) if n else float("nan"),
        "n_attacked": n,
        "n_correct": n_correct,
    }


def restart_noise(indices: torch.Tensor, restart: int | torch.Tensor, shape: tuple[int, ...],
                  seed: int | Sequence[int] | torch.Tensor, start: str = "uniform",
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Each example's offset from the center in units of eps (see the module docstring for the two starts),
    determined by (seed, example index, restart) alone; `seed` and `restart` are one int for all examples or
    one per example.

    All examples are drawn at once, on `device` (by default that of `indices`), by the counter-based generator
    of `keyed`: an example's offset is the same whatever its batch, its place in it or the device. The start
    rule is part of the key, so the two starts draw independent numbers."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got '{start}'")
    device = indices.device if device is None else torch.device(device)
    n = len(indices)
    if not isinstance(seed, int):
        seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
        if len(seed) != n:
            raise ValueError(f"one seed per example is needed: {n} examples, {len(seed)} seeds")
    lanes = keyed.keys([seed, indices, restart, STARTS.index(start)], device)
    d = math.prod(shape)
    if start == "uniform":
        return (keyed.uniform(lanes, d) * 2 - 1).view(n, *shape)
    g = keyed.normal(lanes, d)
    radius = keyed.uniform(lanes, 1, first=d + d % 2)  # after the words of the Gaussian coordinates
    return (g / g.abs().amax(dim=1, keepdim=True) * radius).view(n, *shape)


def resolve_layout(layout: str, device: torch.device) -> str:
    """Restart layout by device, as measured: separate batches per restart on CPU, one folded batch on GPU."""
    if layout != "auto":
        return layout
    return "folded" if device.type == "cuda" else "sequential"


def _optimize(model: nn.Module, decode: Decoder, v0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
              y: torch.Tensor, rows: torch.Tensor, cfg: AttackConfig) -> tuple[torch.Tensor, ...]:
    """Run one batch of independent attack trajectories; returns kept variable, success, loss, pred, step.

    The trajectories still running are kept packed in their own tensors: per step the kept iterate and its
    loss are updated elementwise, and the tensors are re-packed only when some trajectory finishes (early
    stop), so a batch in which nothing succeeds costs what plain PGD costs.
    """
    m = len(v0)
    device = v0.device
    out_v, out_loss = v0.clone(), torch.full((m,), -torch.inf, device=device, dtype=v0.dtype)
    out_success, out_pred = torch.zeros(m, dtype=torch.bool, device=device), y.clone()
    out_first = torch.full((m,), -1, dtype=torch.long, device=device)
    ids = torch.arange(m, device=device)  # which trajectory each packed row is
    # Packed state of the running trajectories: variable, box, labels, decoder rows, kept iterate and record.
    v, lo_a, hi_a, y_a, rows_a = v0.clone(), lo, hi, y, rows
    kept, best_loss, success, pred, first_hit = v0.clone(), out_loss.clone(), out_success.clone(), y.clone(), \
        out_first.clone()
    moments = [torch.zeros_like(v), torch.zeros_like(v)] if cfg.optimizer == "adam" else []
    as_rows = (-1,) + (1,) * (v0.dim() - 1)  # broadcast a per-row mask over a variable

    def write_back(which: torch.Tensor) -> None:
        at = ids[which]
        out_v[at], out_loss[at], out_success[at] = kept[which], best_loss[which], success[which]
        out_pred[at], out_first[at] = pred[which], first_hit[which]

    for t in range(cfg.steps + 1):
        if len(ids) == 0:
            break
        last = t == cfg.steps
        va = v.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            logits = model(decode(va, rows_a))
            losses = F.cross_entropy(logits, y_a, reduction="none")
        p = logits.detach().argmax(dim=1)
        hit = p != y_a
        improved = losses.detach() > best_loss
        record = (hit | improved) if cfg.early_stop else improved
        kept = torch.where(record.view(as_rows), va.detach(), kept)
        best_loss = torch.where(record, losses.detach(), best_loss)
        pred = torch.where(record, p, pred)
        success = torch.where(record, hit, success)
        first_hit = torch.where(hit & (first_hit < 0), t, first_hit)
        if last:
            break
        (grad,) = torch.autograd.grad(losses.sum(), va)
        if cfg.optimizer == "sign":
            step = cfg.step_size * grad.sign()
        else:
            b1, b2 = 0.9, 0.999
            moments[0] = b1 * moments[0] + (1 - b1) * grad
            moments[1] = b2 * moments[1] + (1 - b2) * grad * grad
            m_hat = moments[0] / (1 - b1 ** (t + 1))
            v_hat = moments[1] / (1 - b2 ** (t + 1))
            step = cfg.adam_lr * m_hat / (v_hat.sqrt() + 1e-8)
        if cfg.relative_step:
            step = step * (hi_a - lo_a) / 2
        v = torch.maximum(torch.minimum(va.detach() + step, hi_a), lo_a)
        if cfg.early_stop and bool(hit.any()):  # finished trajectories leave the batch
            write_back(hit)
            go = ~hit
            ids, v, lo_a, hi_a, y_a, rows_a = ids[go], v[go], lo_a[go], hi_a[go], y_a[go], rows_a[go]
            kept, best_loss, success, pred, first_hit = kept[go], best_loss[go], success[go], pred[go], first_hit[go]
            moments = [mom[go] for mom in moments]
    write_back(torch.ones(len(ids), dtype=torch.bool, device=device))
    return out_v, out_success, out_loss, out_pred, out_first


def box_attack(model: nn.Module, decode: Decoder, center: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
               labels: torch.Tensor, cfg: AttackConfig, indices: torch.Tensor | None = None,
               clean_images: torch.Tensor | None = None, progress: bool = False) -> AttackResult:
    """Attack every example from `cfg.restarts` random starts; the model's train/eval mode is restored after.

    `decode(v, rows)` maps variables of the examples at positions `rows` to images; `indices` (default
    0..n-1) are the examples' identities that seed their random starts; `clean_images` (default
    `decode(center)`) give the clean prediction.
    """
    n = len(center)
    device = center.device
    indices = torch.arange(n, device=device) if indices is None else indices.to(device)
    seeds = torch.tensor(cfg.row_seeds(n), dtype=torch.int64, device=device)
    layout = resolve_layout(cfg.layout, device)
    shape = tuple(center.shape[1:])
    out_v = torch.empty(n, cfg.restarts, *shape, device=device, dtype=center.dtype)
    out = {k: torch.empty(n, cfg.restarts, dtype=d, device=device)
           for k, d in (("success", torch.bool), ("loss", torch.float32), ("pred", torch.long), ("step", torch.long))}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows_all = torch.arange(n, device=device)
            clean = clean_images if clean_images is not None else decode(center, rows_all)
            clean_pred = torch.cat([model(clean[i:i + cfg.batch_size]).argmax(1) for i in range(0, n, cfg.batch_size)])
        groups = [[r] for r in range(cfg.restarts)] if layout == "sequential" else [list(range(cfg.restarts))]
        batches = [(start, restarts) for start in range(0, n, cfg.batch_size) for restarts in groups]
        for start, restarts in tqdm(batches, desc=f"attack {n} examples ({layout} restarts)", disable=not progress):
            sl = slice(start, min(start + cfg.batch_size, n))
            k = len(restarts)
            # All restarts of the batch in one draw, restart-major as the rows are folded below.
            restart_of_row = torch.tensor(restarts, device=device).repeat_interleave(sl.stop - sl.start)
            noise = restart_noise(indices[sl].repeat(k), restart_of_row, shape, seeds[sl].repeat(k), cfg.start)
            noise = noise.to(center.dtype)
            rep = lambda t: t[sl].repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731 (restart-major folding)
            c, l, h = rep(center), rep(lo), rep(hi)
            v0 = torch.maximum(torch.minimum(c + cfg.eps * noise, h), l)
            kept, succ, loss, pred, step = _optimize(model, decode, v0, l, h, rep(labels), rep(rows_all), cfg)
            width = sl.stop - sl.start
            for j, r in enumerate(restarts):
                part = slice(j * width, (j + 1) * width)
                out_v[sl, r] = kept[part]
                out["success"][sl, r], out["loss"][sl, r] = succ[part], loss[part]
                out["pred"][sl, r], out["step"][sl, r] = pred[part], step[part]
    finally:
        model.train(was_training)
    return AttackResult(labels=labels, clean_pred=clean_pred, variables=out_v, success=out["success"],
                        loss=out["loss"], pred=out["pred"], steps_to_success=out["step"])


def _identity(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return v


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: AttackConfig,
        indices: torch.Tensor | None = None, progress: bool = False) -> AttackResult:
    """L_inf PGD: maximize cross-entropy over ||delta||_inf <= eps with x + delta in [0, 1]."""
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got range [{images.min():.3g}, {images.max():.3g}]")
    lo = (images - cfg.eps).clamp(0, 1)
    hi = (images + cfg.eps).clamp(0, 1)
    return box_attack(model, _identity, images, lo, hi, labels, cfg, indices, progress=progress)


def pgd_adversary(images: torch.Tensor) -> Adversary:
    """Adversarial training's PGD examples for the training images at the given positions."""
    def attack(model: nn.Module, pos: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
               blocks: tuple[int, ...] | None = None) -> torch.Tensor:
        return pgd(model, images[pos], y, cfg, indices=pos.cpu()).variables[:, 0]
    return attack


def training_config(cfg: AttackConfig) -> AttackConfig:
    """The variant used inside adversarial training: one restart, full iterations, highest-loss iterate."""
    return replace(cfg, restarts=1, early_stop=False)
