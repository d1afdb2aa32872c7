"""Class-specific VAE-GANs: one model per class, trained on that class's images only, approximating its manifold.

The encoder maps an image to a diagonal Gaussian over a `latent_dim`-dimensional latent code, the decoder maps a
code back to an image in [0, 1], and a discriminator tells real images from decoded ones. Per batch the
encoder + decoder minimize

    KL(q(z|x) || N(0, I)) + beta * L1(x, dec(z)) + gamma * GAN,

where the KL divergence is summed over latent dimensions and the L1 error summed over pixels, both averaged over the
batch. Summing over pixels keeps beta about 3 meaningful: a per-image L1 of a few tens of units then outweighs the KL
of ten latent dimensions, so the codes carry the image instead of collapsing onto the prior. The GAN term is the
non-saturating loss -log D(fake), averaged over the fakes: reconstructions of the batch and decodings of as many
prior samples (the latter keeps sampled images sharp, not only reconstructions). The discriminator minimizes the
binary cross-entropy of real images against those fakes. Both use Adam, with separate optimizers.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from .device import Adam, fast_layout
from .io import atomic_path

log = logging.getLogger(__name__)

MODEL_ARGS = ("latent_dim", "channels", "in_channels", "image_size")
LOSS_TERMS = ("loss", "kl", "l1", "gan", "disc")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the model is discarded, never saved."""


@dataclass(frozen=True)
class VAEGANConfig:
    """Network shape (see `model_args`) and training settings of one class-specific VAE-GAN."""

    latent_dim: int = 10
    channels: tuple[int, ...] = (64, 128, 256)
    in_channels: int = 1
    image_size: int = 28
    beta: float = 3.0
    gamma: float = 1.0
    lr: float = 0.005
    batch_size: int = 100
    epochs: int = 10
    # Optimizer steps after which training stops even within an epoch; 0: none, the epochs decide. A budget in
    # steps keeps the cost of a class independent of how many images it has (FONTS grows with the fonts found).
    max_steps: int = 0
    seed: int = 0
    truncation: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))  # lists from YAML or JSON
        checks = {
            "latent_dim": self.latent_dim >= 1,
            "channels": len(self.channels) >= 1 and min(self.channels) >= 1,
            "in_channels": self.in_channels >= 1,
            "beta": self.beta > 0,
            "gamma": self.gamma >= 0,
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs >= 0,
            "max_steps": self.max_steps >= 0,
            "truncation": self.truncation > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid vaegan {key}: {getattr(self, key)!r}")
        # The decoder starts at image_size / 2^(len(channels) - 1) and doubles the size per transposed conv.
        if self.image_size % 2 ** (len(self.channels) - 1) != 0:
            raise ValueError(f"invalid vaegan image_size: {self.image_size} (must be divisible by "
                             f"2^(len(channels) - 1) = {2 ** (len(self.channels) - 1)})")
        if self.image_size // 2 ** len(self.channels) < 1:
            raise ValueError(f"invalid vaegan image_size: {self.image_size} (too small for {len(self.channels)} "
                             f"stride-2 convolutions)")

    def model_args(self) -> dict[str, Any]:
        """The fields that fix the networks' shapes, as stored in checkpoints."""
        return {key: getattr(self, key) for key in MODEL_ARGS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VAEGANConfig:
        """Rebuild from a plain dict (a checkpoint, a config file); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown vaegan config keys: {unknown}")
        return cls(**values)


def conv_size(size: int) -> int:
    """Spatial size after a 4x4, stride-2, padding-1 convolution."""
    return (size + 2 - 4) // 2 + 1


def init_weights(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer (as the classifier)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def conv_stack(cfg: VAEGANConfig) -> tuple[nn.Sequential, int]:
    """Strided convs with BN + LeakyReLU(0.2) (no BN on the first), shared by encoder and discriminator."""
    layers: list[nn.Module] = []
    in_ch, size = cfg.in_channels, cfg.image_size
    for i, out_ch in enumerate(cfg.channels):
        layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1))
        if i > 0:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2))
        in_ch, size = out_ch, conv_size(size)
    return nn.Sequential(*layers), in_ch * size * size


class Encoder(nn.Module):
    """Maps images (B, C, H, W) to the mean and log-variance (B, latent_dim) of q(z|x)."""

    def __init__(self, cfg: VAEGANConfig):
        super().__init__()
        self.features, n_features = conv_stack(cfg)
        self.mean = nn.Linear(n_features, cfg.latent_dim)
        self.logvar = nn.Linear(n_features, cfg.latent_dim)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    """Maps codes (B, latent_dim) to images (B, C, H, W) in [0, 1]: linear, transposed convs, conv, sigmoid."""

    def __init__(self, cfg: VAEGANConfig):
        super().__init__()
        widths = cfg.channels[::-1]
        self.start = (widths[0], cfg.image_size // 2 ** (len(widths) - 1))
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * self.start[1] ** 2)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for in_ch, out_ch in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1),
                       nn.BatchNorm2d(out_ch), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], cfg.in_channels, kernel_size=3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ch, size = self.start
        return self.net(self.fc(z).view(len(z), ch, size, size))


def folded_decoder(decoder: Decoder) -> Decoder:
    """A frozen eval-mode copy of `decoder` with every batch norm folded into the layer before it.

    In eval mode a batch norm is a fixed affine map per channel, so it merges into the weights and bias of the
    preceding transposed convolution (torch.nn.utils.fusion) or, for the first one, of the linear layer whose
    output it normalizes channel by channel. The copy decodes the same images to float rounding with two fewer
    passes over the activations per layer, forward and backward: attacks through the decoders, which dominate
    the learned-manifold stages, run about 1.2x faster on the CPU (benchmarks/speed.py).
    """
    folded = copy.deepcopy(decoder).eval().requires_grad_(False)
    kept: list[nn.Module] = []
    size = folded.start[1]
    for layer in folded.net:
        if not isinstance(layer, nn.BatchNorm2d):
            kept.append(layer)
            continue
        if kept:  # the transposed convolution before it
            kept[-1] = fuse_conv_bn_eval(kept[-1], layer, transpose=isinstance(kept[-1], nn.ConvTranspose2d))
            continue
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        shift = layer.bias - layer.running_mean * scale
        rows = scale.repeat_interleave(size * size)  # fc output is viewed as (channels, size, size)
        with torch.no_grad():
            folded.fc.weight.mul_(rows[:, None])
            folded.fc.bias.mul_(rows).add_(shift.repeat_interleave(size * size))
    folded.net = nn.Sequential(*kept).requires_grad_(False)
    return folded


class Discriminator(nn.Module):
    """Maps images (B, C, H, W) to one real-vs-fake logit each (B,)."""

    def __init__(self, cfg: VAEGANConfig):
        super().__init__()
        self.features, n_features = conv_stack(cfg)
        self.fc = nn.Linear(n_features, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1)).squeeze(1)


class VAEGAN(nn.Module):
    """Encoder, decoder and discriminator of one class, with the config that built them."""

    def __init__(self, cfg: VAEGANConfig = VAEGANConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.discriminator = Discriminator(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for latent codes z."""
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoding of the posterior mean (deterministic)."""
        return self.decode(self.encode(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dimensions, averaged over the batch."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()


def l1_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Absolute error summed over pixels (and channels), averaged over the batch."""
    return (recon - x).abs().flatten(1).sum(1).mean()


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """BCE of real (label 1) against fake (label 0) images, each side averaged and weighted equally."""
    # One forward pass over real and fake together, so batch norm never sees an all-real or all-fake batch
    # (per-batch statistics would otherwise let it tell them apart without looking at the images).
    logits = disc(torch.cat([real, fake]))
    return 0.5 * (F.binary_cross_entropy_with_logits(logits[:len(real)], torch.ones_like(logits[:len(real)]))
                  + F.binary_cross_entropy_with_logits(logits[len(real):], torch.zeros_like(logits[len(real):])))


def generator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss -log D(fake), averaged over the fakes (real images only fill the BN batch)."""
    logits = disc(torch.cat([real, fake]))[len(real):]
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def check_finite(losses: dict[str, torch.Tensor], name: str, epoch: int, step: int, last_total: float | None,
                 cfg: VAEGANConfig) -> dict[str, float]:
    """The losses as floats, or NonFiniteLossError naming the model, the step and the last finite total loss."""
    values = {key: float(value.detach()) for key, value in losses.items()}
    bad = {key: value for key, value in values.items() if not math.isfinite(value)}
    if bad:
        last = "none (first step)" if last_total is None else f"{last_total:.6g}"
        raise NonFiniteLossError(
            f"{name}: non-finite loss {bad} at epoch {epoch} step {step}; last finite total loss {last}. "
            f"Try a lower vaegan lr (now {cfg.lr:g}) or beta (now {cfg.beta:g}), and check the images are finite "
            f"and in [0, 1]")
    return values


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze or unfreeze a module's parameters."""
    for p in module.parameters():
        p.requires_grad_(flag)


def train_vaegan(images: torch.Tensor, cfg: VAEGANConfig, name: str = "vaegan", progress: bool = True,
                 ) -> tuple[VAEGAN, list[dict]]:
    """Train a fresh VAE-GAN on images (n, C, H, W) in [0, 1] on their device (`name` labels logs and errors);
    returns it in eval mode and the per-epoch history (mean loss terms and seconds; gan and disc are 0 when gamma
    is 0, the discriminator then untrained). Raises NonFiniteLossError, returning nothing, on divergence."""
    device = images.device
    torch.manual_seed(cfg.seed)
    model = fast_layout(VAEGAN(cfg).to(device), device)
    vae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    # beta1 = 0.5 as is usual for GANs: less momentum lets each network follow the other's moving target.
    opt_vae = Adam(vae_params, lr=cfg.lr, betas=(0.5, 0.999))
    opt_disc = Adam(model.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    shuffle = torch.Generator().manual_seed(cfg.seed)
    noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    n, last_total, steps_done = len(images), None, 0
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc=f"{name} N={n}", disable=not progress, mininterval=5)
    for epoch in bar:
        if cfg.max_steps and steps_done >= cfg.max_steps:
            break
        start, sums, count = time.perf_counter(), dict.fromkeys(LOSS_TERMS, 0.0), 0
        model.train()
        for step, batch in enumerate(torch.randperm(n, generator=shuffle).to(device).split(cfg.batch_size)):
            if cfg.max_steps and steps_done >= cfg.max_steps:
                break
            steps_done += 1
            x = images[batch]
            mean, logvar = model.encode(x)
            eps = torch.randn(mean.shape, generator=noise, device=device, dtype=mean.dtype)
            recon = model.decode(mean + (0.5 * logvar).exp() * eps)  # reparameterization trick
            kl, l1 = kl_divergence(mean, logvar), l1_error(x, recon)
            gan = disc = torch.zeros((), device=device)
            if cfg.gamma > 0:  # gamma 0 is a plain VAE: no prior samples, no discriminator, a third of the cost
                prior = model.decode(torch.randn(mean.shape, generator=noise, device=device, dtype=mean.dtype))
                fake = torch.cat([recon, prior])
                disc = discriminator_loss(model.discriminator, x, fake.detach())
                opt_disc.zero_grad()
                disc.backward()
                opt_disc.step()
                set_requires_grad(model.discriminator, False)  # the generator step needs no discriminator gradients
                gan = generator_loss(model.discriminator, x, fake)
                set_requires_grad(model.discriminator, True)
            total = kl + cfg.beta * l1 + cfg.gamma * gan
            values = check_finite({"loss": total, "kl": kl, "l1": l1, "gan": gan, "disc": disc}, name, epoch, step,
                                  last_total, cfg)
            opt_vae.zero_grad()
            total.backward()
            opt_vae.step()

            last_total, count = values["loss"], count + len(x)
            for key in LOSS_TERMS:
                sums[key] += values[key] * len(x)
        history.append({"epoch": epoch, **{key: sums[key] / max(count, 1) for key in LOSS_TERMS},
                        "images": count, "steps": steps_done, "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{history[-1]['loss']:.2f}")
        log.info("%s epoch %d loss %.3f kl %.3f l1 %.3f gan %.3f disc %.3f (%.1fs)", name, epoch,
                 *(history[-1][key] for key in LOSS_TERMS), history[-1]["seconds"])
    model.eval()
    return model, history


def truncated_normal(n: int, dim: int, bound: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, dim) samples of N(0, 1) truncated to [-bound, bound], by inverse CDF (float32, on the generator's device)."""
    if bound <= 0:
        raise ValueError(f"truncation bound must be > 0, got {bound}")
    device = generator.device if generator is not None else torch.device("cpu")
    # float64 keeps the CDF resolution far into the tails; the clamp guards the last rounding step.
    lo = torch.special.ndtr(torch.tensor(-float(bound), dtype=torch.float64, device=device))
    u = torch.rand(n, dim, generator=generator, dtype=torch.float64, device=device)
    z = torch.special.ndtri(lo + u * (1.0 - 2.0 * lo))
    return z.clamp(-bound, bound).float()


def model_device(model: nn.Module) -> torch.device:
    """The device the model's parameters live on."""
    return next(model.parameters()).device


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with the model in eval mode (batch norm on running statistics), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def sample(model: VAEGAN, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n images decoded from truncated-normal codes (bound cfg.truncation), in eval mode; the mode is restored."""
    z = truncated_normal(n, model.cfg.latent_dim, model.cfg.truncation, generator).to(model_device(model))
    with evaluating(model):
        return model.decode(z)


@torch.no_grad()
def encode_mean(model: VAEGAN, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means (n, latent_dim) in eval mode, batched; the model's mode is restored."""
    with evaluating(model):
        return torch.cat([model.encode(images[i:i + batch_size])[0] for i in range(0, len(images), batch_size)])


@torch.no_grad()
def decode_batched(model: VAEGAN, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decoded images for codes z, in eval mode, batched; the model's mode is restored."""
    with evaluating(model):
        return torch.cat([model.decode(z[i:i + batch_size]) for i in range(0, len(z), batch_size)])


def reconstruction_error(model: VAEGAN, images: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean absolute per-pixel error |x - dec(mean(x))| over all images, channels and pixels (in [0, 1] units)."""
    recon = decode_batched(model, encode_mean(model, images, batch_size), batch_size)
    return float((recon - images).abs().mean())


def save_vaegan(model: VAEGAN, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Save the state dict, the model arguments and the training config (plain data, no pickled code), atomically."""
    cfg = asdict(model.cfg)
    cfg["channels"] = list(cfg["channels"])
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    ckpt = {"state_dict": state, "model_args": {k: cfg[k] for k in MODEL_ARGS}, "config": cfg,
            "extra": dict(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_vaegan(path: str | os.PathLike, device: torch.device | str = "cpu") -> VAEGAN:
    """Rebuild a VAE-GAN from its checkpoint and return it in eval mode on `device`."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        cfg = VAEGANConfig.from_dict({**ckpt.get("config", {}), **ckpt["model_args"]})
        model = fast_layout(VAEGAN(cfg).to(device), device)
        model.load_state_dict(ckpt["state_dict"])
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as err:
        raise RuntimeError(f"cannot load vaegan {path} ({type(err).__name__}: {err}); "
                           f"delete it and rerun its vaegan rule") from err
    return model.eval()
