"""GPU compute the paper grid needs: its work counted from a config, times measured costs per unit of work.

Training is counted in image-epochs (N x epochs per model); each attack job and each job's start-up as one unit.
The default costs were measured on one NVIDIA H200 with the package's own stages (FONTS, N=2000, 5 epochs,
batch 100; on-manifold attacks on 1000 images x 5 restarts): pass your own with the flags below.
Run: .venv/bin/python benchmarks/paper_estimate.py [--config config/paper.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
# Seconds per training image-epoch, per mode, on one H200 (training time / (2000 images x 5 epochs)).
TRAIN_S = {"normal": 0.77 / 1e4, "adversarial": 14.46 / 1e4, "onmanifold_true": 24.43 / 1e4,
           "onmanifold_learned": 74.84 / 1e4, "transformation": 24.41 / 1e4}
# Seconds per attack job: on-manifold, 1000 images x 5 restarts x 40 steps took about 1.0 s (true and learned
# manifold alike), scaled by the number of images; PGD is taken to cost the same per image (one classifier pass
# per step, no decoder: an upper bound).
ATTACK_S_PER_IMAGE = 1.0 / 1000
TRAIN_SIZE = {"emnist": 240_000, "fashion": 60_000}


def load_config(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"))  # fills in the schema's defaults
    return cfg


def estimate(cfg: dict, startup_s: float, vaegan_s: float) -> dict[str, float]:
    """GPU-seconds per stage of the grid in `cfg`."""
    cls = cfg["classifiers"]
    per_mode_images = sum(cls["n_train"]) * len(cls["seeds"]) * cls["epochs"]
    out: dict[str, float] = {}
    jobs = 0
    for dataset in cfg["datasets"]:
        modes = [m for m in cls["modes"] if m != "onmanifold_true" or dataset == "fonts"]
        runs = len(cls["n_train"]) * len(cls["seeds"]) * len(modes)
        for mode in modes:
            out[f"train {mode}"] = out.get(f"train {mode}", 0.0) + per_mode_images * TRAIN_S[mode]
        n_attacks = 3 if dataset == "fonts" else 2  # PGD, on-manifold (and the learned manifold on FONTS)
        images = cfg["pgd"]["n_test"] + (n_attacks - 1) * cfg["onmanifold"]["n_test"]
        out["attacks"] = out.get("attacks", 0.0) + runs * images * ATTACK_S_PER_IMAGE
        jobs += runs * (1 + n_attacks) + 10
        fonts = cfg["fonts"]
        size = (fonts["max_fonts"] * fonts["per_font_class_train"] * 10 if dataset == "fonts"
                else TRAIN_SIZE[dataset])
        out["vaegan"] = out.get("vaegan", 0.0) + size * cfg["vaegan"]["epochs"][dataset] * vaegan_s
    out["job start-up"] = jobs * startup_s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--startup-s", type=float, default=10.0,
                        help="seconds per job for snakemake, imports and CUDA initialization (assumed, not measured)")
    parser.add_argument("--vaegan-s", type=float, default=2e-5,
                        help="GPU-seconds per VAE-GAN training image-epoch (assumed: not measured on a GPU)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    stages = estimate(cfg, args.startup_s, args.vaegan_s)
    total = sum(stages.values())
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{name:28s} {seconds / 3600:8.1f} GPU-hours  {seconds / total:6.1%}")
    print(f"{'total':28s} {total / 3600:8.1f} GPU-hours")


if __name__ == "__main__":
    main()
