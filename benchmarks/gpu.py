"""The paper grid's costs measured on one GPU, in a single run sized for a short lease of the machine.

Sections (each prints as it goes and adds to one JSON file, so a run stopped at its limit keeps what it did):
- `decoders`: the ten class decoders run class by class against as one grouped network: operators and seconds
  of a decode pass and of a learned-manifold lock step at M = 1, 5 and 65 stacked models.
- `starts`: seconds to draw an example's random start on the CPU and on the device, and that both draw the same.
- `steps`: seconds per lock step of M stacked models (batch 100 each) in every training mode at the paper's
  attack (40 steps), for M from 1 to 65: the step costs the estimate (benchmarks/paper_estimate.py) integrates
  over the models a lock step holds.
- `multi_n`: four N of five seeds, one job per N against all twenty in one lock step across N.
- `knobs`: at M = 65, what cuDNN's algorithm search, non-deterministic kernels and bf16 autocast change.
- `attacks`: the evaluation attacks at the paper's sizes (PGD on 1000 images, on-manifold on 2500, 5 restarts,
  40 Adam steps): seconds per attack job.
- `train`: seconds per training image-epoch of every mode, sequential (one model) against stacked (grouped
  layout at M = 5, 25, 65; vmap at 5).
- `precision`: five stacked seeds of normal (N 4000, 10 epochs) and adversarial (N 1000, 5 epochs) training on
  Fashion-MNIST in strict fp32, in PyTorch's default (cuDNN convolutions in TF32), with TF32 matmuls too, and
  under bf16 autocast: test error, the paper's PGD success and seconds for each.
- `vaegan`: a paper-width VAE-GAN (channels 64, 128, 256) trained on one class in each precision: seconds per
  image-epoch, and how far its bf16 decodes lie from its fp32 ones.
Training throughput does not depend on the images (no early stop), so the decoders are paper-width VAE-GANs
with their initial weights and the true manifold's glyph bank is made of Fashion-MNIST images.
benchmarks/measured/ keeps the runs made so far (h200_gpu: train, precision, vaegan, attacks before the starts
were drawn on the device; h200_gpu2: the default sections).

Run: PYTHONPATH=src python3 benchmarks/gpu.py --data benchmarks/out/gpu/fashion.npz [--budget-s 300]
(`--tiny` shrinks every size for a smoke test on the CPU). The data file is made by `--prepare`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from manifold_robustness import attacks as attacks_module
from manifold_robustness.attacks import AttackConfig, pgd, restart_noise, success_rates
from manifold_robustness.device import configure_torch, resolve_device
from manifold_robustness.onmanifold import (DECODER_LAYOUTS, ClassDecoders, learned_manifold_adversary,
                                            learned_manifold_attack, transformation_adversary,
                                            true_manifold_adversary, true_manifold_attack)
from manifold_robustness.stacked import train_stacked
from manifold_robustness.training import TrainConfig, error_rate, train_classifier
from manifold_robustness.transformer import PRESETS
from manifold_robustness.vaegan import VAEGAN, VAEGANConfig, train_vaegan

ROOT = Path(__file__).resolve().parents[1]
# config/paper.yaml's attacks: inside training 40 signed steps of 0.01; evaluation 40 Adam steps at lr 0.005.
TRAIN_ATTACK = AttackConfig(eps=0.3, steps=40, step_size=0.01, restarts=1, early_stop=False, start="distance_direction")
EVAL_ATTACK = AttackConfig(eps=0.3, steps=40, optimizer="adam", adam_lr=0.005, restarts=5, start="distance_direction",
                           batch_size=10_000)
PAPER_VAEGAN = VAEGANConfig(channels=(64, 128, 256))
PRECISIONS = ("fp32", "default", "tf32", "bf16")


class Budget:
    """Seconds left of the run; sections ask before starting work they may not finish."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


class Results:
    """Measurements by key, written to `path` after every addition."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.data = path, {"meta": meta}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def add(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float))
        tmp.replace(self.path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """fp32: no TF32 anywhere; default: PyTorch's (cuDNN convolutions in TF32, matmuls in fp32); tf32: matmuls in
    TF32 too; bf16: autocast to bfloat16 on top of the default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = name != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()
    try:
        with autocast:
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


DEVICE = torch.device("cpu")
TINY = False


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def prepare(path: Path, n_train: int = 20_000, n_test: int = 2_500) -> None:
    """Fashion-MNIST's first images as one compressed file, small enough to travel with the working tree."""
    from manifold_robustness.datasets import load_torchvision

    root = ROOT / "resources" / "fashion"
    splits = load_torchvision("fashion", root, download=False)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, train_images=xtr[:n_train].numpy(), train_labels=ytr[:n_train].numpy(),
                        test_images=xte[:n_test].numpy(), test_labels=yte[:n_test].numpy())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def load(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    raw = np.load(path)
    out = {}
    for split in ("train", "test"):
        out[f"{split}_images"] = torch.from_numpy(raw[f"{split}_images"]).float().div(255).unsqueeze(1).to(device)
        out[f"{split}_labels"] = torch.from_numpy(raw[f"{split}_labels"]).long().to(device)
    return out


def glyph_bank(images: torch.Tensor, labels: torch.Tensor, fonts: int) -> torch.Tensor:
    """(fonts, 10, 28, 28): the first `fonts` images of each class stand in for glyphs (timing only)."""
    return torch.stack([images[labels == c][:fonts, 0] for c in range(10)], dim=1)


def paper_decoders(device: torch.device, layout: str = "per_class") -> ClassDecoders:
    """Ten paper-width VAE-GANs with their initial weights (timing only; narrow ones for --tiny)."""
    torch.manual_seed(0)
    cfg = replace(PAPER_VAEGAN, channels=(8, 16, 32)) if TINY else PAPER_VAEGAN
    return ClassDecoders([VAEGAN(cfg).to(device).eval() for _ in range(10)], layout=layout)


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------


def adversaries(data: dict, n: int, device: torch.device) -> dict[str, tuple[object, AttackConfig]]:
    x, y = data["train_images"][:n], data["train_labels"][:n]
    glyphs = glyph_bank(data["train_images"], data["train_labels"], 100)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ranges = PRESETS["hard"]
    codes = (ranges.low + (ranges.high - ranges.low) * torch.rand(n, 6, generator=gen)).to(device)
    font = torch.randint(0, len(glyphs), (n,), generator=gen).to(device)
    decoders = paper_decoders(device)
    latents = decoders.encode_mean(x, y)
    return {
        "normal": (None, AttackConfig()),
        "adversarial": (attacks_module.pgd_adversary(x), TRAIN_ATTACK),
        "onmanifold_true": (true_manifold_adversary(glyphs, font, codes, ranges), TRAIN_ATTACK),
        "onmanifold_learned": (learned_manifold_adversary(decoders, latents), TRAIN_ATTACK),
        "transformation": (transformation_adversary(x, ranges), TRAIN_ATTACK),
    }


def train_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """Seconds per training image-epoch (per model) of each mode, sequential and stacked."""
    n_normal, n_adv = (200, 100) if tiny else (4000, 500)
    stacks = [2, 3] if tiny else [5, 25, 65]
    modes = ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation")
    made = adversaries(data, max(n_normal, n_adv), device)
    out: dict[str, dict] = {}
    for mode in modes:
        adversary, attack = made[mode]
        n = n_normal if mode == "normal" else n_adv
        x, y = data["train_images"][:n], data["train_labels"][:n]
        row: dict[str, float] = {}
        cfgs = lambda m: [TrainConfig(mode=mode, epochs=1, seed=s, attack=attack) for s in range(m)]  # noqa: E731
        runs: list[tuple[str, Callable[[], object], int]] = [
            ("sequential", lambda: train_classifier(x, y, cfgs(1)[0], progress=False, adversary=adversary), 1)]
        for m in stacks:
            runs.append((f"grouped_M{m}", lambda m=m: train_stacked(x, y, cfgs(m), progress=False,
                                                                    adversary=adversary), m))
        runs.append((f"vmap_M{stacks[0]}", lambda: train_stacked(x, y, cfgs(stacks[0]), progress=False,
                                                                 adversary=adversary, layout="vmap"), stacks[0]))
        if mode == "normal":  # the workflow asks for deterministic kernels on CUDA: what that costs
            runs.append(("sequential_nondeterministic", runs[0][1], 1))
            runs.append((f"grouped_M{stacks[0]}_nondeterministic", runs[1][1], stacks[0]))
        for name, fn, m in runs:
            if budget.left() < 30:
                print(f"  {mode} {name}: skipped, budget spent")
                continue
            torch.use_deterministic_algorithms(not name.endswith("nondeterministic") and device.type == "cuda",
                                               warn_only=True)
            # Warm-up on a tenth of the data (kernels chosen, memory allocated), then the timed epoch.
            warm = x[: max(100, n // 10)], y[: max(100, n // 10)]
            if name == "sequential":
                train_classifier(*warm, cfgs(1)[0], progress=False, adversary=adversary)
            else:
                train_stacked(*warm, cfgs(m), progress=False, adversary=adversary,
                              layout="vmap" if name.startswith("vmap") else "grouped")
            seconds, _ = timed(device, fn)
            per_image = seconds / (n * m)
            row[name] = per_image
            print(f"  {mode:18s} {name:28s} {n * m / seconds:12,.0f} image-epochs/s  {per_image * 1e6:9.2f} us per "
                  f"image-epoch  ({seconds:.2f} s, N {n}, M {m})", flush=True)
        if "sequential" in row:
            for name, value in row.items():
                if name != "sequential":
                    print(f"  {mode:18s} {name:28s} {row['sequential'] / value:6.2f}x the sequential engine")
        out[mode] = row
        results.add("train", out)


def precision_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """Test error, PGD success and time of five stacked seeds in each precision."""
    settings = {"normal": (200, 1) if tiny else (4000, 10), "adversarial": (100, 1) if tiny else (1000, 5)}
    xt, yt = data["test_images"][: 200 if tiny else 1000], data["test_labels"][: 200 if tiny else 1000]
    m = 2 if tiny else 5
    out: dict[str, dict] = {}
    for mode, (n, epochs) in settings.items():
        x, y = data["train_images"][:n], data["train_labels"][:n]
        attack = TRAIN_ATTACK if mode != "normal" else AttackConfig()
        cfgs = [TrainConfig(mode=mode, epochs=epochs, seed=s, attack=attack) for s in range(m)]
        for name in PRECISIONS:
            if budget.left() < 40:
                print(f"  {mode} {name}: skipped, budget spent")
                continue
            with precision(name, device):
                seconds, (models, _) = timed(device, lambda: train_stacked(x, y, cfgs, progress=False))
                errors = [error_rate(model, xt, yt) for model in models]
                att_s, result = timed(device, lambda: pgd(models[0], xt, yt, EVAL_ATTACK))
            rates = success_rates(result.success.cpu(), result.correct.cpu())
            # The fp32-trained model attacked in this precision: the attack's share of a change in success.
            if name != "fp32" and "fp32_model" in out.get(mode, {}):
                with precision(name, device):
                    cross = pgd(out[mode]["fp32_model"], xt, yt, EVAL_ATTACK)
                cross_success = success_rates(cross.success.cpu(), cross.correct.cpu())["success"]
            else:
                cross_success = rates["success"]
            row = {"train_s": seconds, "test_error_mean": float(np.mean(errors)), "test_error_sd": float(np.std(errors)),
                   "test_errors": errors, "pgd_success": rates["success"], "pgd_success_any": rates["success_any"],
                   "pgd_s": att_s, "fp32_model_pgd_success": cross_success}
            out.setdefault(mode, {})[name] = row
            if name == "fp32":
                out[mode]["fp32_model"] = models[0]
            print(f"  {mode:12s} {name:8s} train {seconds:6.2f} s  test error {row['test_error_mean']:.4f} "
                  f"(sd {row['test_error_sd']:.4f} over {m} seeds)  PGD success {rates['success']:.4f} "
                  f"(fp32 model: {cross_success:.4f})  attack {att_s:.2f} s", flush=True)
        out.get(mode, {}).pop("fp32_model", None)
        results.add("precision", out)


def vaegan_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> dict:
    """A paper-width VAE-GAN on one class in each precision: seconds per image-epoch and decode differences."""
    x = data["train_images"][data["train_labels"] == 0]
    cfg = replace(PAPER_VAEGAN, epochs=1 if tiny else 3, channels=(8, 16, 32) if tiny else PAPER_VAEGAN.channels)
    out: dict[str, dict] = {}
    trained = {}
    z = torch.randn(500 if tiny else 2500, cfg.latent_dim, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)
    z = z.to(device)
    for name in PRECISIONS:
        if budget.left() < 40:
            print(f"  vaegan {name}: skipped, budget spent")
            continue
        with precision(name, device):
            train_vaegan(x[:200], replace(cfg, epochs=1), progress=False)  # warm-up
            seconds, (model, history) = timed(device, lambda: train_vaegan(x, cfg, progress=False))
        trained[name] = model
        row = {"s_per_image_epoch": seconds / (len(x) * cfg.epochs), "last_l1": history[-1]["l1"]}
        out[name] = row
        print(f"  vaegan {name:8s} {len(x) * cfg.epochs / seconds:10,.0f} image-epochs/s  last-epoch L1 "
              f"{row['last_l1']:.1f}  ({seconds:.2f} s, {len(x)} images x {cfg.epochs} epochs)", flush=True)
    if "fp32" in trained:
        with torch.no_grad():
            with precision("fp32", device):
                reference = trained["fp32"].decode(z)
            for name in PRECISIONS[1:]:
                with precision(name, device):
                    other = trained["fp32"].decode(z).float()
                diff = (other - reference).flatten(1)
                out.setdefault(f"decode_{name}", {}).update(
                    max_abs=float(diff.abs().max()), mean_l2=float(diff.norm(dim=1).mean()),
                    image_l2=float(reference.flatten(1).norm(dim=1).mean()))
                print(f"  decoding in {name} against fp32 (same fp32-trained weights): max |diff| "
                      f"{float(diff.abs().max()):.2e}, mean L2 {float(diff.norm(dim=1).mean()):.2e} (images' L2 "
                      f"{float(reference.flatten(1).norm(dim=1).mean()):.2f})", flush=True)
    results.add("vaegan", out)
    return trained


def attacks_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool,
                    vaegans: dict) -> None:
    """The evaluation attacks at the paper's sizes, on a normally trained model."""
    n_pgd, n_onm = (100, 200) if tiny else (1000, 2500)
    x, y = data["train_images"][: 2000 if tiny else 4000], data["train_labels"][: 2000 if tiny else 4000]
    model, _ = train_classifier(x, y, TrainConfig(epochs=1 if tiny else 5), progress=False)
    xt, yt = data["test_images"][:n_onm], data["test_labels"][:n_onm]
    decoders = paper_decoders(device) if "default" not in vaegans else ClassDecoders([vaegans["default"]] * 10)
    latents = decoders.encode_mean(xt, yt)
    glyphs = glyph_bank(data["train_images"], data["train_labels"], 100)
    ranges = PRESETS["hard"]
    gen = torch.Generator().manual_seed(1)
    codes = (ranges.low + (ranges.high - ranges.low) * torch.rand(n_onm, 6, generator=gen)).to(device)
    font = torch.randint(0, len(glyphs), (n_onm,), generator=gen).to(device)
    jobs = {
        "pgd": lambda: pgd(model, xt[:n_pgd], yt[:n_pgd], EVAL_ATTACK),
        "onmanifold_learned": lambda: learned_manifold_attack(model, decoders, latents, yt, EVAL_ATTACK)[0],
        "onmanifold_true": lambda: true_manifold_attack(model, glyphs, font, yt, codes, ranges, EVAL_ATTACK)[0],
    }
    out = {}
    for name, fn in jobs.items():
        if budget.left() < 20:
            print(f"  attack {name}: skipped, budget spent")
            continue
        fn()  # warm-up
        seconds, result = timed(device, fn)
        rate = success_rates(result.success.cpu(), result.correct.cpu())["success"]
        out[name] = {"s": seconds, "images": len(result.labels), "success": rate}
        print(f"  attack {name:20s} {seconds:6.2f} s for {len(result.labels)} images x 5 restarts x 40 Adam steps "
              f"(success {rate:.3f})", flush=True)
    results.add("attacks", out)


def starts_section(device: torch.device, results: Results, tiny: bool) -> None:
    """Seconds to draw one example's random start (keyed per example, all examples in one call), on the CPU and
    on the device, and whether the two draw the same starts."""
    n = 200 if tiny else 5000
    out = {}
    for name, shape in (("image", (1, 28, 28)), ("latent", (10,)), ("code", (6,))):
        draws = {}
        for where in ("cpu", device.type):
            index = torch.arange(n, device=where)
            restart_noise(index, 0, shape, 0, "distance_direction")  # warm-up
            seconds, draws[where] = timed(torch.device(where), lambda: restart_noise(index, 0, shape, 0,
                                                                                    "distance_direction"))
            out[f"{name}_{where}"] = seconds / n
        gap = float((draws["cpu"] - draws[device.type].cpu()).abs().max())
        out[f"{name}_max_difference"] = gap
        print(f"  random start of one {name} {shape}: {out[f'{name}_cpu'] * 1e6:.2f} us on the CPU, "
              f"{out[f'{name}_{device.type}'] * 1e6:.3f} us on {device.type} (batch {n}); largest difference "
              f"between the two {gap:.1e}", flush=True)
    results.add("starts", out)


def steps_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """Seconds per lock step of M stacked models (batch 100 each) in every adversarial mode, for the M that
    lock steps across N meet in the paper grid: the input of the estimate (benchmarks/paper_estimate.py)."""
    n = 100 if tiny else 500
    stacks = [1, 2] if tiny else [1, 5, 10, 20, 40, 65]
    made = adversaries(data, n, device)
    out: dict[str, dict] = {}
    x, y = data["train_images"][:n], data["train_labels"][:n]
    for mode in ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation"):
        adversary, attack = made[mode]
        row = {}
        for m in stacks:
            if budget.left() < 40:
                print(f"  {mode} M {m}: skipped, budget spent")
                continue
            cfgs = [TrainConfig(mode=mode, epochs=1, seed=s, attack=attack) for s in range(m)]
            train_stacked(x[:100], y[:100], cfgs, progress=False, adversary=adversary)  # warm-up: one step
            seconds, _ = timed(device, lambda: train_stacked(x, y, cfgs, progress=False, adversary=adversary))
            row[m] = seconds / (n // 100)
            print(f"  {mode:18s} M {m:3d}: {row[m] * 1e3:8.1f} ms per lock step, {row[m] / m * 1e4:8.2f} us per "
                  f"training image-epoch per model", flush=True)
        out[mode] = row
        results.add("steps", out)


def decoders_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """The ten class decoders run class by class (`per_class`, the workflow's) against as one grouped network
    (`grouped`): a decode pass, forward and backward (one iteration of a learned-manifold attack), for the 50
    attacked examples of each of M models, in operators launched (on CUDA also kernels) and seconds; and the
    learned-manifold lock step of M stacked models, in operators and seconds."""
    from speed import operator_launches  # a sibling script

    n = 200 if tiny else 500  # at least two lock steps: a step's launches are the difference of two runs
    stacks = [1, 2] if tiny else [1, 5, 65]
    x, y = data["train_images"][:n], data["train_labels"][:n]
    made = {layout: paper_decoders(device, layout) for layout in DECODER_LAYOUTS}
    out: dict[str, dict] = {"pass": {}, "step": {}}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for m in stacks:
        labels = data["train_labels"][: 50 * m]
        z = torch.randn(len(labels), PAPER_VAEGAN.latent_dim, generator=gen).to(device)
        for layout, decoders in made.items():
            def decode_pass(decoders=decoders) -> None:
                v = z.clone().requires_grad_(True)
                torch.autograd.grad(decoders.decode(v, labels).sum(), v)

            decode_pass()  # warm-up
            repeats = 3 if tiny else 20
            seconds, _ = timed(device, lambda: [decode_pass() for _ in range(repeats)])
            row = {"seconds": seconds / repeats, **operator_launches(device, decode_pass)}
            out["pass"][f"{layout}_M{m}"] = row
            print(f"  decode pass, {len(labels):5d} examples, {layout:9s}: {row['seconds'] * 1e3:8.2f} ms, "
                  + ", ".join(f"{row[k]} {k}" for k in row if k != "seconds"), flush=True)
    for m in stacks:
        for layout, decoders in made.items():
            if budget.left() < 40:
                print(f"  lock step M {m} {layout}: skipped, budget spent")
                continue
            adversary = learned_manifold_adversary(decoders, decoders.encode_mean(x, y))
            cfgs = [TrainConfig(mode="onmanifold_learned", epochs=1, seed=s, attack=TRAIN_ATTACK) for s in range(m)]

            def train(k: int, cfgs=cfgs, adversary=adversary) -> object:
                return train_stacked(x[:k], y[:k], cfgs, progress=False, adversary=adversary)

            train(100)  # warm-up: one step
            seconds, _ = timed(device, lambda: train(n))
            # One lock step's launches: a run of two steps less a run of one, so that set-up drops out.
            two, one = operator_launches(device, lambda: train(200)), operator_launches(device, lambda: train(100))
            row = {"seconds": seconds / (n // 100), **{k: two[k] - one[k] for k in two}}
            out["step"][f"{layout}_M{m}"] = row
            print(f"  learned-manifold lock step, M {m:2d}, {layout:9s}: {row['seconds'] * 1e3:8.1f} ms, "
                  + ", ".join(f"{row[k]} {k}" for k in row if k != "seconds"), flush=True)
    for kind, rows in out.items():
        for m in stacks:
            base, grouped = rows.get(f"per_class_M{m}"), rows.get(f"grouped_M{m}")
            if base and grouped:
                print(f"  {kind} at M {m}: grouped {base['seconds'] / grouped['seconds']:.2f}x as fast, "
                      f"{base['operators'] / grouped['operators']:.2f}x fewer operators")
    results.add("decoders", out)


def knobs_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """At M = 65: what cuDNN's algorithm search, non-deterministic kernels and bf16 autocast change per step."""
    n, m = (100, 2) if tiny else (500, 65)
    made = adversaries(data, n, device)
    x, y = data["train_images"][:n], data["train_labels"][:n]
    out: dict[str, dict] = {}
    for mode in ("adversarial", "onmanifold_learned"):
        adversary, attack = made[mode]
        cfgs = [TrainConfig(mode=mode, epochs=1, seed=s, attack=attack) for s in range(m)]
        for knob in ("baseline", "cudnn_benchmark", "nondeterministic", "bf16"):
            if budget.left() < 30:
                print(f"  {mode} {knob}: skipped, budget spent")
                continue
            torch.backends.cudnn.benchmark = knob == "cudnn_benchmark"
            torch.use_deterministic_algorithms(knob != "nondeterministic" and device.type == "cuda", warn_only=True)
            with precision("bf16" if knob == "bf16" else "default", device):
                train_stacked(x[:100], y[:100], cfgs, progress=False, adversary=adversary)
                seconds, _ = timed(device, lambda: train_stacked(x, y, cfgs, progress=False, adversary=adversary))
            out.setdefault(mode, {})[knob] = seconds / (n // 100)
            print(f"  {mode:18s} M {m} {knob:18s} {seconds / (n // 100) * 1e3:8.1f} ms per lock step", flush=True)
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(device.type == "cuda", warn_only=True)
        results.add("knobs", out)


def multi_n_section(data: dict, device: torch.device, budget: Budget, results: Results, tiny: bool) -> None:
    """Four N of five seeds each, 1 epoch: one job per N (five stacked models each) against all twenty in one
    lock step across N (`classifiers.lock_step: all_n`), measured."""
    ns = [50, 100, 150, 200] if tiny else [200, 400, 800, 1600]
    seeds = 2 if tiny else 5
    made = adversaries(data, max(ns), device)
    x, y = data["train_images"][: max(ns)], data["train_labels"][: max(ns)]
    out: dict[str, dict] = {}
    for mode in ("adversarial", "onmanifold_learned"):
        adversary, attack = made[mode]
        cfg = lambda s: TrainConfig(mode=mode, epochs=1, seed=s, attack=attack)  # noqa: E731
        if budget.left() < 60:
            print(f"  {mode}: skipped, budget spent")
            continue
        train_stacked(x[:100], y[:100], [cfg(s) for s in range(seeds)], progress=False, adversary=adversary)
        per_n, _ = timed(device, lambda: [train_stacked(x[:n], y[:n], [cfg(s) for s in range(seeds)],
                                                        progress=False, adversary=adversary) for n in ns])
        together, _ = timed(device, lambda: train_stacked(
            x, y, [cfg(s) for n in ns for s in range(seeds)], progress=False, adversary=adversary,
            n_train=[n for n in ns for _ in range(seeds)]))
        out[mode] = {"per_n_s": per_n, "all_n_s": together}
        print(f"  {mode:18s} N {ns} x {seeds} seeds, 1 epoch: one job per N {per_n:.2f} s, all in one lock step "
              f"{together:.2f} s: {per_n / together:.2f}x", flush=True)
    results.add("multi_n", out)


def main(argv: list[str] | None = None) -> None:
    global DEVICE, TINY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "out" / "gpu" / "fashion.npz")
    parser.add_argument("--prepare", action="store_true", help="write the data file from resources/fashion and stop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--only", nargs="*", default=["decoders", "starts", "steps", "multi_n", "knobs", "attacks"],
                        help="sections: decoders starts steps multi_n knobs attacks train precision vaegan")
    parser.add_argument("--tiny", action="store_true", help="every size shrunk: a smoke test on the CPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "out" / "gpu"))
                        / "gpu.json")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.data)
        return
    budget = Budget(args.budget_s)
    DEVICE, TINY = resolve_device(args.device), args.tiny
    configure_torch(args.threads, DEVICE)  # as the workflow's jobs: deterministic kernels on CUDA
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {DEVICE} ({name}); torch {torch.__version__}; budget {args.budget_s:.0f} s", flush=True)
    results = Results(args.out, {"device": name, "torch": torch.__version__, "tiny": args.tiny})
    data = load(args.data, DEVICE)
    vaegans: dict = {}
    for section in args.only:
        print(f"\n[{section}] ({budget.left():.0f} s left)", flush=True)
        if section == "starts":
            starts_section(DEVICE, results, args.tiny)
        elif section == "steps":
            steps_section(data, DEVICE, budget, results, args.tiny)
        elif section == "decoders":
            decoders_section(data, DEVICE, budget, results, args.tiny)
        elif section == "knobs":
            knobs_section(data, DEVICE, budget, results, args.tiny)
        elif section == "multi_n":
            multi_n_section(data, DEVICE, budget, results, args.tiny)
        elif section == "train":
            train_section(data, DEVICE, budget, results, args.tiny)
        elif section == "precision":
            precision_section(data, DEVICE, budget, results, args.tiny)
        elif section == "vaegan":
            vaegans = vaegan_section(data, DEVICE, budget, results, args.tiny)
        elif section == "attacks":
            attacks_section(data, DEVICE, budget, results, args.tiny, vaegans)
        else:
            sys.exit(f"unknown section '{section}'")
    print(f"\ndone, {budget.left():.0f} s of the budget left; results in {args.out}")


if __name__ == "__main__":
    main()
