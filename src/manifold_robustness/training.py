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


def clean_count(batch: int, cfg: TrainConfig) -> int:
    """How many examples at the start of a batch stay clean; the rest are replaced by adversarial ones."""
    return batch - int(round(cfg.adversarial_fraction * batch))


def attack_seed(cfg: TrainConfig, epoch: int) -> int:
    """Seed of the attack's random starts in `epoch`: with the examples' positions it keys every start, so each
    epoch draws fresh ones."""
    return cfg.seed * 100_003 + epoch


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, cfg: TrainConfig,
                      epoch: int, adversary: Adversary) -> torch.Tensor:
    """Replace the last `adversarial_fraction` of the batch by the adversary's examples (highest-loss iterate,
    one restart, no early stop); `pos` are the examples' positions in the training set."""
    k = clean_count(len(x), cfg)
    if k == len(x):
        return x
    attack = replace(training_config(cfg.attack), seed=attack_seed(cfg, epoch))
    return torch.cat([x[:k], adversary(model, pos[k:], y[k:], attack).detach()])


def epoch_record(epoch: int, cfg: TrainConfig, loss: float, seconds: float) -> dict:
    """One epoch of a model's training history, logged as it is recorded."""
    record = {"epoch": epoch, "lr": learning_rate(epoch, cfg), "loss": loss, "seconds": seconds}
    log.info("seed %d epoch %d lr %.5f loss %.4f (%.1fs)", cfg.seed, epoch, record["lr"], loss, seconds)
    return record


def check_adversary(cfg: TrainConfig, adversary: Adversary | None, images: torch.Tensor) -> Adversary | None:
    """The adversary of `cfg.mode`: PGD on the training images by default for `adversarial`; other modes but
    `normal` need one given."""
    if cfg.mode == "adversarial" and adversary is None:
        return pgd_adversary(images)
    if cfg.mode != "normal" and adversary is None:
        raise ValueError(f"training mode '{cfg.mode}' needs an adversary that makes its examples")
    return adversary


def train_classifier(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                     model_cfg: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                     adversary: Adversary | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a fresh classifier on (images, labels) on their device; returns the model and per-epoch history.

    Every mode but `normal` needs an `adversary`; `adversarial` defaults to PGD on the training images.
    """
    device = images.device
    adversary = check_adversary(cfg, adversary, images)
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
        history.append(epoch_record(epoch, cfg, total / count, time.perf_counter() - start))
        bar.set_postfix(loss=f"{total / count:.3f}")
    model.eval()
    return model, history
