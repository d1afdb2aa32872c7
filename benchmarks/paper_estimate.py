"""GPU compute the paper grid needs, from a config and from costs measured on one NVIDIA H200.

1. Measured (benchmarks/measured/, made by benchmarks/gpu.py): seconds per lock step of M stacked models in
   each training mode (M = 1 to 65, batch 100, the paper's 40-step attacks, starts drawn on the device), the
   evaluation attacks at the paper's sizes, a paper-width VAE-GAN per image-epoch, and a job's start-up
   (Python, torch, the package and the CUDA context). Three tables, one per way of running the training:
   - sequential: one model after another (`classifiers.engine: sequential`), M = 1;
   - one job per setting: its seeds stacked (`engine: stacked`, `lock_step: setting`), M = seeds;
   - lock step across N: all N and seeds of a dataset and mode in one job (`lock_step: all_n`); the models
     still training at step t run together, so M falls from N's x seeds as the small N finish.
   A step of M models costs the measured cost, linear between measured M. What is not measured: the
   distances jobs, snakemake's own overhead per job, and the data jobs (CPU).
2. The plan: the same work counted in floating-point operations of the package's own networks at the config's
   widths (hooks count every convolution and linear layer), at the throughput the small networks reach on one
   H200 at large batch (classifier forward + input gradient at batch 20,000: 3.5 million images/s; training at
   batch 1,000: 550,000 images/s). Extrapolated from those anchors: a bound that no engine here reaches.
Run: .venv/bin/python benchmarks/paper_estimate.py [--config config/paper.yaml]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

import torch
import yaml
from snakemake.utils import validate
from torch import nn

from manifold_robustness import costs
from manifold_robustness.costs import lock_step_seconds, step_cost
from manifold_robustness.models import build_classifier
from manifold_robustness.stages import TRAINING_ATTACK
from manifold_robustness.vaegan import VAEGAN, VAEGANConfig

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "benchmarks" / "measured"
LAYOUTS = ("sequential", "setting", "all_n")
TRAIN_SIZE = {"emnist": 240_000, "fashion": 60_000}
# Anchors of the plan, on one H200 (images per second): see the module docstring.
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


def load_measured(directory: Path = MEASURED) -> dict:
    """The measured inputs: step costs and attack seconds (h200_gpu2.json), the VAE-GAN's seconds per image-epoch
    (h200_gpu.json, PyTorch's default precision) and the median warm start-up of a job (h200_startup.log).

    The learned-manifold attack's seconds come from h200_gpu.json, where its decoders were a trained VAE-GAN:
    the second run's untrained decoders drew images the model already misclassified, which end the attack at
    its first step. PGD was timed on a normally trained model, whose examples mostly succeed early; on robust
    models more examples run all 40 steps (not measured)."""
    run2 = json.loads((directory / "h200_gpu2.json").read_text())
    run1 = json.loads((directory / "h200_gpu.json").read_text())
    startups = [float(t) for t in re.findall(r"total ([\d.]+) s", (directory / "h200_startup.log").read_text())]
    rows = {**run2["attacks"], "onmanifold_learned": run1["attacks"]["onmanifold_learned_cpu_starts"]}
    return {"device": run2["meta"]["device"],
            "attacks": {name: row["s"] for name, row in rows.items()},
            "attack_images": {name: row["images"] for name, row in rows.items()},
            "steps": {mode: {int(m): float(s) for m, s in row.items()} for mode, row in run2["steps"].items()},
            "vaegan_s": run1["vaegan"]["default"]["s_per_image_epoch"],
            "startup_s": statistics.median(startups[1:] or startups)}  # the first start is cold


def model_steps(cfg: dict, n: int) -> int:
    """Optimizer steps of one model trained on n images."""
    return costs.model_steps(cfg["classifiers"], n)


def measured_estimate(cfg: dict, measured: dict, layout: str) -> dict[str, float]:
    """GPU-seconds per stage of the grid in `cfg` from the measured costs, training laid out as `layout`
    (sequential, setting or all_n; module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got '{layout}'")
    cls, attack_s = cfg["classifiers"], measured["attacks"]
    seeds, ns = len(cls["seeds"]), sorted(cls["n_train"])
    out: dict[str, float] = {}
    jobs = 0

    def add(key: str, seconds: float) -> None:
        out[key] = out.get(key, 0.0) + seconds

    for dataset in cfg["datasets"]:
        modes = dataset_modes(cfg, dataset)
        for mode in modes:
            steps = measured["steps"][mode]
            if layout == "sequential":
                add(f"train {mode}", sum(seeds * model_steps(cfg, n) * step_cost(steps, 1) for n in ns))
            elif layout == "setting":
                add(f"train {mode}", sum(lock_step_seconds(steps, [model_steps(cfg, n)] * seeds) for n in ns))
            else:
                add(f"train {mode}", lock_step_seconds(steps, [model_steps(cfg, n) for n in ns for _ in range(seeds)]))
        jobs += len(modes) * (1 if layout == "all_n" else len(ns))
        # Attacks: per setting a PGD job and an on-manifold job (FONTS: also the learned manifold), each of
        # its seeds attacked in turn, at the measured seconds per 1000 (PGD) and 2500 (on-manifold) images.
        onmanifold = "onmanifold_true" if dataset == "fonts" else "onmanifold_learned"
        per_model = attack_s["pgd"] * cfg["pgd"]["n_test"] / 1000 + attack_s[onmanifold] * cfg["onmanifold"]["n_test"] / 2500
        n_attacks = 2
        if dataset == "fonts" and "onmanifold_learned" in cls["modes"]:
            per_model += attack_s["onmanifold_learned"] * cfg["onmanifold"]["n_test"] / 2500
            n_attacks = 3
        add("attacks", len(modes) * len(ns) * seeds * per_model)
        jobs += len(modes) * len(ns) * n_attacks + 10  # attack jobs per setting; one VAE-GAN per class
        add("vaegan", train_size(cfg, dataset) * cfg["vaegan"]["epochs"][dataset] * measured["vaegan_s"])
    out["job start-up"] = jobs * measured["startup_s"]
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
    parser.add_argument("--measured", type=Path, default=MEASURED, help="folder of benchmarks/gpu.py's results")
    parser.add_argument("--decoder-speedup", type=float, default=1.0,
                        help="FLOP rate of the VAE-GAN networks over the classifier's, for the plan (assumed: 1)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    measured = load_measured(args.measured)
    print(f"Measured on one {measured['device']}: step costs, attacks, VAE-GAN, {measured['startup_s']:.1f} s "
          "start-up per job; distances and snakemake's own overhead not included.")
    titles = {"sequential": "sequential engine, one job per setting (M = 1)",
              "setting": f"stacked engine, one job per setting (M = {len(cfg['classifiers']['seeds'])} seeds)",
              "all_n": "stacked engine, lock step across N (lock_step: all_n)"}
    for i, layout in enumerate(LAYOUTS, 1):
        print(f"{i}. {args.config.name}, {titles[layout]}:")
        print_table(measured_estimate(cfg, measured, layout))
    print(f"4. {args.config.name} planned: the same work in FLOPs at one H200's large-batch throughput "
          "(extrapolated from anchors, not measured; a bound):")
    total = print_table(plan(cfg, args.decoder_speedup))
    verdict = "within" if total / 3600 <= GPU_BUDGET_H else "above"
    print(f"  the plan is {verdict} the {GPU_BUDGET_H:g} GPU-hour budget")


if __name__ == "__main__":
    main()
