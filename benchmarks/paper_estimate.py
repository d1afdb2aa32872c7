"""GPU compute the paper grid needs: its work counted from a config, times costs per unit of work. Two tables.

1. As the workflow runs today (one job per setting training its seeds one after another, batch 100, a GPU per
   job): training counted in image-epochs
   (N x epochs per model), each attack job and each job's start-up as one unit. The costs were measured on one
   NVIDIA H200 with the package's own stages (FONTS, N=2000, 5 epochs, batch 100; on-manifold attacks on 1000
   images x 5 restarts): pass your own with the flags below.
2. The plan: the same work counted in floating-point operations of the package's own networks at the config's
   widths (hooks count every convolution and linear layer), run at the throughput the small networks reach on
   one H200 at large batch (issue anchors: classifier forward + input gradient at batch 20,000, 3.5 million
   images/s; training at batch 1,000, 550,000 images/s). Large batches come from doing many models at once:
   models of several seeds stacked in one process, restarts folded into one batch, several jobs sharing a GPU
   so start-up overlaps compute. The decoders are assumed to reach the classifier's FLOP rate (their wider
   convolutions should do better). Nothing in table 2 was measured on a GPU by this script.
Run: .venv/bin/python benchmarks/paper_estimate.py [--config config/paper.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from snakemake.utils import validate
from torch import nn

from manifold_robustness.models import build_classifier
from manifold_robustness.stages import TRAINING_ATTACK
from manifold_robustness.vaegan import VAEGAN, VAEGANConfig

ROOT = Path(__file__).resolve().parents[1]
# Seconds per training image-epoch, per mode, on one H200 (training time / (2000 images x 5 epochs)).
TRAIN_S = {"normal": 0.77 / 1e4, "adversarial": 14.46 / 1e4, "onmanifold_true": 24.43 / 1e4,
           "onmanifold_learned": 74.84 / 1e4, "transformation": 24.41 / 1e4}
# Seconds per attack job: on-manifold, 1000 images x 5 restarts x 40 steps took about 1.0 s (true and learned
# manifold alike), scaled by the number of images; PGD is taken to cost the same per image (one classifier pass
# per step, no decoder: an upper bound).
ATTACK_S_PER_IMAGE = 1.0 / 1000
TRAIN_SIZE = {"emnist": 240_000, "fashion": 60_000}
# Issue-7 anchors on one H200 (images per second): see the module docstring.
ATTACK_PASSES_PER_S = 3.5e6  # classifier forward + backward to the input, batch 20,000
TRAIN_PASSES_PER_S = 5.5e5  # classifier training step (forward, backward, Adam), batch 1,000
GPU_BUDGET_H = 2.0


def load_config(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"))  # fills in the schema's defaults
    return cfg


def dataset_modes(cfg: dict, dataset: str) -> list[str]:
    """The training modes the workflow runs for `dataset` (on-manifold training on the true manifold: FONTS only)."""
    return [m for m in cfg["classifiers"]["modes"] if m != "onmanifold_true" or dataset == "fonts"]


def train_size(cfg: dict, dataset: str) -> int:
    """Training images of `dataset`, the set each class's VAE-GAN is trained on (a tenth per class)."""
    fonts = cfg["fonts"]
    return fonts["max_fonts"] * fonts["per_font_class_train"] * 10 if dataset == "fonts" else TRAIN_SIZE[dataset]


def estimate(cfg: dict, startup_s: float, vaegan_s: float, stack: int = 1,
             floor: dict[str, float] | None = None, start_s: float = 0.0) -> dict[str, float]:
    """GPU-seconds per stage of the grid in `cfg`. With `stack` > 1, the training cost per image-epoch is the
    measured one divided by `stack` (models stacked in lock step, on a launch-bound GPU), except the drawing
    of random starts (`start_s` per adversarial example, on the CPU, which stacking does not divide), and never
    below `floor[mode]` (the cost of the same FLOPs at the plan's attained rate)."""
    cls = cfg["classifiers"]
    per_mode_images = sum(cls["n_train"]) * len(cls["seeds"]) * cls["epochs"]
    out: dict[str, float] = {}
    jobs = 0
    for dataset in cfg["datasets"]:
        modes = dataset_modes(cfg, dataset)
        runs = len(cls["n_train"]) * len(cls["seeds"]) * len(modes)
        for mode in modes:
            starts = start_s * cls["adversarial_fraction"] if mode != "normal" else 0.0
            cost = max((TRAIN_S[mode] - starts) / stack + starts, (floor or {}).get(mode, 0.0))
            out[f"train {mode}"] = out.get(f"train {mode}", 0.0) + per_mode_images * cost
        n_attacks = 3 if dataset == "fonts" else 2  # PGD, on-manifold (and the learned manifold on FONTS)
        images = cfg["pgd"]["n_test"] + (n_attacks - 1) * cfg["onmanifold"]["n_test"]
        out["attacks"] = out.get("attacks", 0.0) + runs * images * ATTACK_S_PER_IMAGE
        jobs += len(cls["n_train"]) * len(modes) * (1 + n_attacks) + 10  # a job per setting, its seeds in turn
        out["vaegan"] = out.get("vaegan", 0.0) + train_size(cfg, dataset) * cfg["vaegan"]["epochs"][dataset] * vaegan_s
    out["job start-up"] = jobs * startup_s
    return out


def forward_flops(module: nn.Module, *inputs: torch.Tensor) -> float:
    """Floating-point operations of one forward pass per example: 2 x the multiply-adds of every convolution,
    transposed convolution and linear layer (activations and normalization are left out)."""
    macs = 0

    def count(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        x = args[0]
        if isinstance(layer, nn.ConvTranspose2d):  # every input pixel feeds k x k outputs of each channel
            macs += x[0].numel() * layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups
        elif isinstance(layer, nn.Conv2d):
            macs += out[0].numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups
        elif isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    with torch.no_grad():
        module.eval()(*inputs)
    for hook in hooks:
        hook.remove()
    return 2.0 * macs


def train_cost(cfg: dict, train_pass: float, attack_pass: float, decoder_pass: float) -> dict[str, float]:
    """Seconds per training image-epoch of each mode: one training step, plus for the adversarial half of each
    batch `steps + 1` attack passes (through a decoder on the learned manifold)."""
    cls = cfg["classifiers"]
    out = {}
    for mode in ("normal", *TRAINING_ATTACK):
        out[mode] = train_pass
        if mode != "normal":
            passes = cls["adversarial_fraction"] * (cls[TRAINING_ATTACK[mode]]["steps"] + 1)
            out[mode] += passes * (attack_pass + (decoder_pass if mode == "onmanifold_learned" else 0.0))
    return out


def rates(cfg: dict, decoder_speedup: float = 1.0, quiet: bool = False) -> dict[str, float]:
    """Seconds per classifier training step, per classifier attack pass and per decoder pass, per image, at the
    plan's attained rates; and the FLOPs per image of the VAE-GAN networks."""
    clf = forward_flops(build_classifier(), torch.zeros(1, 1, 28, 28))
    vae = VAEGAN(VAEGANConfig(channels=tuple(cfg["vaegan"]["channels"]), latent_dim=cfg["vaegan"]["latent_dim"]))
    dec = forward_flops(vae.decoder, torch.zeros(1, cfg["vaegan"]["latent_dim"]))
    enc = forward_flops(vae.encoder, torch.zeros(1, 1, 28, 28))
    disc = forward_flops(vae.discriminator, torch.zeros(1, 1, 28, 28))
    flop_rate = ATTACK_PASSES_PER_S * 2 * clf  # FLOP/s of forward + input gradient (2 x forward)
    if not quiet:
        print(f"  forward MFLOP per image: classifier {clf / 1e6:.2f}, decoder {dec / 1e6:.2f}, encoder "
              f"{enc / 1e6:.2f}, discriminator {disc / 1e6:.2f}; attained rate {flop_rate / 1e12:.1f} TFLOP/s")
    return {"train": 1 / TRAIN_PASSES_PER_S, "attack": 1 / ATTACK_PASSES_PER_S,
            "decoder": 2 * dec / (flop_rate * decoder_speedup), "flop_rate": flop_rate,
            "vaegan_flops": 3 * (enc + 2 * dec + 6 * disc)}


def plan(cfg: dict, decoder_speedup: float = 1.0) -> dict[str, float]:
    """GPU-seconds per stage of the grid in `cfg` at the large-batch throughput of the plan (module docstring);
    `decoder_speedup` scales the FLOP rate of decoder (and VAE-GAN) passes over the classifier's."""
    cls = cfg["classifiers"]
    r = rates(cfg, decoder_speedup)
    attack_pass, decoder_pass, train_pass, flop_rate = r["attack"], r["decoder"], r["train"], r["flop_rate"]
    per_mode_images = sum(cls["n_train"]) * len(cls["seeds"]) * cls["epochs"]
    runs = len(cls["n_train"]) * len(cls["seeds"])
    out: dict[str, float] = {}

    def add(key: str, seconds: float) -> None:
        out[key] = out.get(key, 0.0) + seconds

    per_image = train_cost(cfg, train_pass, attack_pass, decoder_pass)
    for dataset in cfg["datasets"]:
        modes = dataset_modes(cfg, dataset)
        for mode in modes:
            add(f"train {mode}", per_mode_images * per_image[mode])
        attacks = {"pgd": (cfg["pgd"], 0.0), "on-manifold": (cfg["onmanifold"], decoder_pass if dataset != "fonts"
                                                            else 0.0)}
        if dataset == "fonts" and "onmanifold_learned" in cls["modes"]:
            attacks["on-manifold learned"] = (cfg["onmanifold"], decoder_pass)
        for name, (section, extra) in attacks.items():
            passes = section["n_test"] * section["restarts"] * (section["steps"] + 1)  # no early exit: a bound
            add("attacks", len(modes) * runs * passes * (attack_pass + extra))
        # Per image: encoder, two decodes (reconstruction, prior), discriminator on 3 batches twice; x3 to train.
        add("vaegan", train_size(cfg, dataset) * cfg["vaegan"]["epochs"][dataset] * r["vaegan_flops"]
            / (flop_rate * decoder_speedup))
    return out


def print_table(stages: dict[str, float]) -> float:
    total = sum(stages.values())
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {seconds / 3600:8.2f} GPU-hours  {seconds / total:6.1%}")
    print(f"  {'total':28s} {total / 3600:8.2f} GPU-hours")
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--startup-s", type=float, default=10.0,
                        help="seconds per job for snakemake, imports and CUDA initialization (assumed, not measured)")
    parser.add_argument("--vaegan-s", type=float, default=2e-5,
                        help="GPU-seconds per VAE-GAN training image-epoch (assumed: not measured on a GPU)")
    parser.add_argument("--start-s", type=float, default=25e-6,
                        help="CPU seconds to draw one adversarial example's random start, for table 2 (measured on "
                             "a 2-core CPU: 17-35 microseconds, by the start's shape)")
    parser.add_argument("--decoder-speedup", type=float, default=1.0,
                        help="FLOP rate of the VAE-GAN networks over the classifier's, for table 2 (assumed: 1)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    stack = len(cfg["classifiers"]["seeds"])
    print(f"1. {args.config.name} with the sequential engine (one model at a time, batch 100; H200-measured "
          "costs):")
    print_table(estimate(cfg, args.startup_s, args.vaegan_s))
    r = rates(cfg, args.decoder_speedup, quiet=True)
    floor = train_cost(cfg, r["train"], r["attack"], r["decoder"])
    print(f"2. {args.config.name} with the stacked engine ({stack} seeds in lock step; extrapolated, not "
          f"measured: the costs of table 1 divided by {stack}, as on a launch-bound GPU, except the random starts "
          f"({args.start_s * 1e6:g} us per adversarial example), and not below those of table 3):")
    print_table(estimate(cfg, args.startup_s, args.vaegan_s, stack, floor, args.start_s))
    print(f"3. {args.config.name} planned: the same work in FLOPs at one H200's large-batch throughput "
          "(extrapolated from anchors, not measured here):")
    total = print_table(plan(cfg, args.decoder_speedup))
    verdict = "within" if total / 3600 <= GPU_BUDGET_H else "above"
    print(f"  the plan is {verdict} the {GPU_BUDGET_H:g} GPU-hour budget")

if __name__ == "__main__":
    main()
