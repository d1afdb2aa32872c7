"""What one job of the workflow costs, and what it asks a scheduler for.

Seconds and peak memory of each job are predicted from the work it does (images x epochs x attack iterations,
counted from the config) at per-unit rates that a benchmark measured: `job_rates.json` beside this module, made
by `benchmarks/costs.py` (the CPU rates fitted to the job benchmarks of a workflow run, the GPU rates taken from
the NVIDIA H200 measurements in benchmarks/measured/). A job's request is its prediction times a safety factor,
grown on each retry; `request` turns a prediction into Slurm's minutes and megabytes.

Plain Python (no torch), so that the workflow can import it when it builds its plan.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

RATES = Path(__file__).with_name("job_rates.json")
DEVICES = ("cpu", "cuda")
IMAGE_MB = 28 * 28 * 4 / 2**20  # one float32 image
# Training and test images of the datasets whose size the config does not set.
SPLIT_SIZE = {"emnist": (240_000, 40_000), "fashion": (60_000, 10_000)}
# Which rate each attack job uses: PGD (both step rules) through the classifier, on-manifold attacks through the
# transformer (true manifold) or a class VAE-GAN's decoder (learned manifold).
ATTACK_RATE = {"pgd": "pgd", "pgd_sign": "pgd", "onmanifold_true": "onmanifold_true",
               "onmanifold_learned": "onmanifold_learned"}
# The config section that holds the attack each training mode uses (here, so that the workflow reads it without
# torch; manifold_robustness.stages uses the same).
TRAINING_ATTACK = {"adversarial": "adversarial_attack", "onmanifold_true": "onmanifold_attack",
                   "onmanifold_learned": "onmanifold_attack", "transformation": "transformation_attack"}


@dataclass(frozen=True)
class Cost:
    """A job's predicted wall seconds and peak resident memory (MB) on the device its rates are for."""

    seconds: float
    mem_mb: float


def load_rates(path: str | Path = RATES) -> dict:
    """The per-unit rates of each device (`job_rates.json`): see benchmarks/costs.py for how each was measured."""
    rates = json.loads(Path(path).read_text())
    missing = [d for d in DEVICES if d not in rates]
    if missing:
        raise ValueError(f"{path} has no rates for {missing}; rerun benchmarks/costs.py to write them")
    return rates


def split_size(cfg: dict, dataset: str) -> tuple[int, int]:
    """Training and test images of `dataset` (FONTS: as many as the config renders at most)."""
    if dataset == "fonts":
        f = cfg["fonts"]
        fonts = f["max_fonts"]
        if f["source"] == "pinned":  # at most the pinned list's files
            listed = Path(__file__).with_name("font_sets") / f"{f['pinned']}.sha256"
            fonts = min(fonts, sum(1 for line in listed.read_text().splitlines() if line.strip()))
        return fonts * f["per_font_class_train"] * 10, fonts * f["per_font_class_test"] * 10
    return SPLIT_SIZE[dataset]


def width(channels) -> float:
    """Relative cost of a VAE-GAN of these channel widths: the products of adjacent widths that its
    convolutions multiply (the paper's (64, 128, 256) costs about 16 times the quick (16, 32, 64))."""
    c = [1, *channels]
    return float(sum(a * b for a, b in zip(c, c[1:])))


def attack_passes(cfg: dict, mode: str, ref: dict) -> float:
    """How much more a training image-epoch of `mode` costs under `cfg` than under the reference settings the
    rates were measured with: 1 for normal training, else the ratio of classifier passes per image (one
    training pass plus, for the adversarial share of each batch, one per attack iteration and one for the
    result), the attack part scaled by the decoder's width on the learned manifold."""
    if mode == "normal":
        return 1.0

    def passes(frac: float, steps: int, decoder: float) -> float:
        return 1.0 + frac * (steps + 1) * decoder

    cls = cfg["classifiers"]
    decoder = width(cfg["vaegan"]["channels"]) / width(ref["vaegan_channels"]) if mode == "onmanifold_learned" else 1.0
    return (passes(cls["adversarial_fraction"], cls[TRAINING_ATTACK[mode]]["steps"], decoder)
            / passes(ref["adversarial_fraction"], ref["training_steps"][mode], 1.0))


def step_cost(costs: dict[int, float], m: int) -> float:
    """Seconds of one lock step of m stacked models: linear between the measured M, beyond the largest along
    the last segment."""
    ms = sorted(costs)
    if m in costs:
        return costs[m]
    if len(ms) < 2 or m < ms[0]:
        raise ValueError(f"no measured step cost to interpolate for M = {m} (measured: {ms})")
    lo, hi = (ms[-2], ms[-1]) if m > ms[-1] else (max(k for k in ms if k < m), min(k for k in ms if k > m))
    return costs[lo] + (costs[hi] - costs[lo]) * (m - lo) / (hi - lo)


def lock_step_seconds(costs: dict[int, float], totals: list[int]) -> float:
    """Seconds to train models needing `totals` steps each in one lock step: at step t, the models whose total
    exceeds t run together."""
    seconds, done = 0.0, 0
    for end in sorted(set(totals)):
        seconds += (end - done) * step_cost(costs, sum(t >= end for t in totals))
        done = end
    return seconds


def model_steps(cls: dict, n: int) -> int:
    """Optimizer steps of one model trained on n images (the last, smaller batch of an epoch counts whole)."""
    return cls["epochs"] * math.ceil(n / cls["batch_size"])


def memory(rate: dict, images: float) -> float:
    """Peak memory (MB) of a job that holds `images` float32 images: the job kind's base (the process, torch,
    its networks) plus `copies` copies of the images."""
    return rate["base_mb"] + rate["copies"] * images * IMAGE_MB


def train(rates: dict, device: str, cfg: dict, dataset: str, mode: str, n_models: list[int]) -> Cost:
    """A training job: the models of one setting (or of every N, `lock_step: all_n`), one N per model.

    CPU: one model after another at the measured seconds per image-epoch. GPU (stacked engine): the measured
    seconds of one lock step of M models, M falling as the small N finish. Both then measure every model's test
    and training error."""
    r, cls = rates[device], cfg["classifiers"]
    train_size, test_size = split_size(cfg, dataset)
    scale = attack_passes(cfg, mode, r["reference"])
    if device == "cuda" and cls["engine"] in ("auto", "stacked"):
        steps = {int(m): s * scale for m, s in r["train_step_s"][mode].items()}
        fit = lock_step_seconds(steps, [model_steps(cls, n) for n in n_models]) * cls["batch_size"] / r["batch_size"]
    else:
        fit = sum(cls["epochs"] * n for n in n_models) * r["train_s"][mode] * scale
    evaluate = r["eval_s"] * sum(test_size + n for n in n_models)
    return Cost(r["startup_s"] + fit + evaluate,
                memory(r["memory"]["train_classifier"], min(max(n_models), train_size) + test_size))


def attack_section(cfg: dict, kind: str) -> dict:
    """The config settings of an attack of `kind`: pgd, pgd_sign (`pgd` overridden by `pgd_sign`), or an
    on-manifold attack (`onmanifold`)."""
    if kind == "pgd_sign":
        return {**cfg["pgd"], **cfg["pgd_sign"]}
    return cfg["pgd" if kind == "pgd" else "onmanifold"]


def vaegan_images(cfg: dict, dataset: str) -> tuple[int, int]:
    """Images one class's VAE-GAN trains on (steps x batch: its epochs, or its step budget `max_steps` where that
    is smaller) and the images of its class it holds (a tenth of the training split)."""
    v = cfg["vaegan"]
    per_class = split_size(cfg, dataset)[0] // 10
    steps = v["epochs"][dataset] * math.ceil(per_class / v["batch_size"])
    if v["max_steps"].get(dataset, 0):
        steps = min(steps, v["max_steps"][dataset])
    return steps * v["batch_size"], per_class


def attack(rates: dict, device: str, cfg: dict, kind: str, seeds: int) -> Cost:
    """An attack job on the models of one setting's seeds: `kind` pgd, pgd_sign (config `pgd` and `pgd_sign`),
    onmanifold_true or onmanifold_learned (config `onmanifold`), every iteration of every restart counted (the
    rate is fitted to models where most attacks run to the end)."""
    r = rates[device]
    section = attack_section(cfg, kind)
    per_model = section["n_test"] * section["restarts"] * section["steps"] * r["attack_s"][ATTACK_RATE[kind]]
    if kind == "onmanifold_learned":
        per_model *= width(cfg["vaegan"]["channels"]) / width(r["reference"]["vaegan_channels"])
    rule = "attack_pgd" if kind.startswith("pgd") else "attack_onmanifold"
    return Cost(r["startup_s"] + seeds * per_model, memory(r["memory"][rule], section["n_test"] * section["restarts"]))


def vaegan(rates: dict, device: str, cfg: dict, dataset: str) -> Cost:
    """One class's VAE-GAN: its share (a tenth) of the training images for the config's epochs, or its step budget
    (`max_steps`) where that is smaller."""
    r = rates[device]
    trained, per_class = vaegan_images(cfg, dataset)
    seconds = trained * r["vaegan_s"] * width(cfg["vaegan"]["channels"]) / width(r["reference"]["vaegan_channels"])
    return Cost(r["startup_s"] + seconds, memory(r["memory"]["train_vaegan"], per_class))


def judge(rates: dict, device: str, cfg: dict, dataset: str) -> Cost:
    """The judge: the paper's classifier trained normally on every training image, then evaluated on the test
    split."""
    r = rates[device]
    train_size, test_size = split_size(cfg, dataset)
    seconds = cfg["judge"]["epochs"] * train_size * r["judge_s"] + r["eval_s"] * (train_size + test_size)
    return Cost(r["startup_s"] + seconds, memory(r["memory"]["train_judge"], train_size + test_size))


def distances(rates: dict, device: str, cfg: dict, dataset: str) -> Cost:
    """Distances to the manifold of one model's adversarial examples (PGD's and the on-manifold attack's): on
    FONTS each projected onto the true manifold (starts x steps of the transformer), elsewhere compared with
    its nearest training images (every training image per example, all of them held)."""
    r, d = rates[device], cfg["distances"]
    train_size, _ = split_size(cfg, dataset)
    examples = cfg["pgd"]["n_test"] + cfg["onmanifold"]["n_test"]
    if dataset == "fonts":  # the examples and the glyph bank only
        return Cost(r["startup_s"] + examples * d["starts"] * d["steps"] * r["project_s"],
                    memory(r["memory"]["distances"], examples))
    return Cost(r["startup_s"] + examples * train_size * r["neighbour_s"],
                memory(r["memory"]["distances"], train_size))


def fonts_data(rates: dict, device: str, cfg: dict) -> Cost:
    """Rendering FONTS: every training and test image drawn once; written chunk by chunk, so its memory is the
    kind's base (the glyph bank, one chunk) and a small share per image (its labels and codes), never the
    image array."""
    r = rates["cpu"]  # rendering runs on the CPU whatever the device
    images = sum(split_size(cfg, "fonts"))
    return Cost(r["startup_s"] + images * r["render_s"], memory(r["memory"]["fonts_data"], images))


def small(rates: dict, device: str, rule: str) -> Cost:
    """A job whose cost does not grow with the grid (judging a setting's examples, the VAE-GAN samples): the
    largest measured."""
    r = rates[device]
    return Cost(r["startup_s"] + r["fixed_s"][rule], r["memory"][rule]["base_mb"])


def request(cost: Cost, attempt: int, settings: dict) -> tuple[int, int]:
    """Slurm's runtime (minutes) and mem_mb for a job of this cost on its `attempt`-th try (1 first): the
    prediction times `safety` (`memory_safety`), runtime at least `min_runtime` minutes, times `retry_growth` per
    earlier try (so that a job killed at the floor asks for more too), memory rounded up to 100 MB."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    grow = settings["retry_growth"] ** (attempt - 1)
    minutes = math.ceil(max(settings["min_runtime"], cost.seconds * settings["safety"] / 60) * grow)
    mem = math.ceil(cost.mem_mb * settings["memory_safety"] * grow / 100) * 100
    return int(minutes), int(mem)
