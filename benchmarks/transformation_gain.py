"""Does adversarial transformation training lower the test error against normal training, and with which
training attack? The paper's Fig. 4 shows it does on Fashion-MNIST (0.184 against 0.208 test error at
N = 1000, 0.139 against 0.164 at N = 5000, read from its figure).

Trains, for each N and seed, a normally trained classifier and one per transformation variant, on the same
first N training images of the study's fixed permutation, with the quick config's classifier settings
(`config/config.yaml` validated against the schema, then the overrides below), and prints per variant and N
the mean test error and the error reduction against normal training: its mean over seeds with a 95% t
interval of the paired per-seed differences.

Variants of the transformation attack inside training (eta 0.3 within the paper's Fashion-MNIST box):
- signed_abs: 5 signed steps of 0.15 (the quick config before relative steps: a step as wide as the box's
  half-width in translation and scale, so the iterate sits on the box's bounds after one or two steps);
- relative: 5 signed steps of 0.5 half-widths per parameter (2.5 / steps, Madry et al.'s rule per parameter);
- relative_paper: as relative, under the supplement's affine matrix (`geometry: paper`);
- paper_attack: the paper's attack (40 Adam iterations at lr 0.005, all run);
- random: no gradient step, only the uniform random start clipped to the box (augmentation with random
  transformations).

    .venv/bin/python benchmarks/transformation_gain.py --data results/data/fashion.h5 --n 1000 4000 \
        --seeds 0 1 2 3 4 --variants normal signed_abs relative --csv benchmarks/out/transformation_gain.csv
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from scipy import stats
from snakemake.utils import validate

from manifold_robustness.stages import train_setting

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict] = {
    "normal": {},
    "signed_abs": {"steps": 5, "step_size": 0.15, "optimizer": "sign", "relative_step": False},
    "relative": {"steps": 5, "step_size": 0.5, "optimizer": "sign", "relative_step": True},
    "relative_paper": {"steps": 5, "step_size": 0.5, "optimizer": "sign", "relative_step": True,
                       "geometry": "paper"},
    "paper_attack": {"steps": 40, "optimizer": "adam", "adam_lr": 0.005, "relative_step": False},
    "random": {"steps": 0, "start": "uniform"},
}


def quick_classifier_config() -> dict:
    """The `classifiers` section of config/config.yaml with the schema's defaults filled in."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(config, str(ROOT / "config/schema.yaml"))
    return config["classifiers"]


def train_variant(data: str, variant: str, n: int, seeds: list[int], base: dict, out: Path) -> list[dict]:
    """Train one variant's models of N images, one per seed, and return their metrics."""
    cls_cfg = copy.deepcopy(base)
    cls_cfg["transformation_attack"].update(VARIANTS[variant])
    mode = "normal" if variant == "normal" else "transformation"
    folder = out / variant / f"N{n}"
    paths = [str(folder / f"seed{s}" / "model.pt") for s in seeds]
    metrics = [str(folder / f"seed{s}" / "metrics.json") for s in seeds]
    return train_setting(data, paths, metrics, "fashion", mode, n, seeds, cls_cfg)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant and N: mean test error, and the paired error reduction against normal training."""
    normal = runs[runs.variant == "normal"].set_index(["n_train", "seed"]).test_error
    rows = []
    for (variant, n), group in runs[runs.variant != "normal"].groupby(["variant", "n_train"]):
        gain = (normal.loc[n].reindex(group.seed).to_numpy() - group.test_error.to_numpy())
        half = stats.t.ppf(0.975, len(gain) - 1) * gain.std(ddof=1) / len(gain) ** 0.5 if len(gain) > 1 else float("nan")
        rows.append({"variant": variant, "n_train": n, "seeds": len(gain),
                     "normal_error": normal.loc[n].mean(), "error": group.test_error.mean(),
                     "reduction": gain.mean(), "low": gain.mean() - half, "high": gain.mean() + half})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the study's Fashion-MNIST file (results/data/fashion.h5)")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["normal", "signed_abs", "relative"], choices=VARIANTS)
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the quick config's")
    parser.add_argument("--csv", help="also write every model's test error here")
    args = parser.parse_args()
    if "normal" not in args.variants:
        args.variants.insert(0, "normal")
    base = quick_classifier_config()
    if args.epochs:
        base["epochs"] = args.epochs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            for n in args.n:
                for m in train_variant(args.data, variant, n, args.seeds, base, Path(tmp)):
                    rows.append({"variant": variant, "n_train": n, "seed": m["seed"], "epochs": m["epochs"],
                                 "test_error": m["test_error"], "train_error": m["train_error"],
                                 "train_seconds": m["train_seconds"]})
                    print(rows[-1], flush=True)
    runs = pd.DataFrame(rows)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.csv, index=False)
    print(summarize(runs).to_string(index=False, float_format="%.4f"))


if __name__ == "__main__":
    main()
