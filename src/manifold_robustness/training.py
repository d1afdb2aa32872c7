"""Training the classifier: normal, or with each batch half clean and half adversarial: regular PGD examples
(adversarial), on-manifold examples on the true or learned manifold, or adversarial transformations.

One explicit loop: Adam with L2 weight decay, the learning rate decayed by a constant factor per epoch,
batches drawn from one seeded permutation per epoch, the final-epoch model kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .attacks import Adversary, AttackConfig, pgd_adversary, training_config
from .device import Adam, fast_layout
from .models import ClassifierConfig, build_classifier

MODES = ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings (the paper's defaults) and, for the adversarial modes, the attack used."""

    mode: str = "normal"
    epochs: int = 20
    batch_size: int = 100
    lr: float = 0.01
    lr_decay: float = 0.95
    weight_decay: float = 1e-4
    seed: int = 0
    adversarial_fraction: float = 0.5
    attack: AttackConfig = field(default_factory=AttackConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"training mode must be one of {MODES}, got '{self.mode}'")
        if not 0.0 <= self.adversarial_fraction <= 1.0:
            raise ValueError(f"adversarial_fraction must be in [0, 1], got {self.adversarial_fraction}")


def learning_rate(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of `epoch` (0-based): exponential decay per epoch."""
    return cfg.lr * cfg.lr_decay ** epoch


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of misclassified images."""
    return float((predict(model, images, batch_size) != labels).float().mean())


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, cfg: TrainConfig,
                      epoch: int, adversary: Adversary) -> torch.Tensor:
    """Replace the last `adversarial_fraction` of the batch by the adversary's examples (highest-loss iterate,
    one restart, no early stop); `pos` are the examples' positions in the training set."""
    k = len(x) - int(round(cfg.adversarial_fraction * len(x)))
    if k == len(x):
        return x
    # Seeded by (run seed, epoch) and the examples' positions, so each epoch draws fresh starts.
    attack = replace(training_config(cfg.attack), seed=cfg.seed * 100_003 + epoch)
    return torch.cat([x[:k], adversary(model, pos[k:], y[k:], attack).detach()])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                     model_cfg: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                     adversary: Adversary | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a fresh classifier on (images, labels) on their device; returns the model and per-epoch history.

    Every mode but `normal` needs an `adversary`; `adversarial` defaults to PGD on the training images.
    """
    device = images.device
    if cfg.mode == "adversarial" and adversary is None:
        adversary = pgd_adversary(images)
    if cfg.mode != "normal" and adversary is None:
        raise ValueError(f"training mode '{cfg.mode}' needs an adversary that makes its examples")
    torch.manual_seed(cfg.seed)
    model = fast_layout(build_classifier(model_cfg).to(device), device)
    optimizer = Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    n = len(images)
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.mode} N={n}", disable=not progress, mininterval=5)
    for epoch in bar:
        optimizer.lr = learning_rate(epoch, cfg)
        start, total, count = time.perf_counter(), 0.0, 0
        model.train()
        for batch in torch.randperm(n, generator=shuffle).to(device).split(cfg.batch_size):
            x, y = images[batch], labels[batch]
            if cfg.mode != "normal":
                x = adversarial_batch(model, x, y, batch, cfg, epoch, adversary)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(y), count + len(y)
        history.append({"epoch": epoch, "lr": learning_rate(epoch, cfg), "loss": total / count,
                        "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{total / count:.3f}")
        log.info("epoch %d lr %.5f loss %.4f (%.1fs)", epoch, history[-1]["lr"], history[-1]["loss"],
                 history[-1]["seconds"])
    model.eval()
    return model, history
