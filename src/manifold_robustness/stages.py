"""One entry point per workflow stage. Each takes plain paths and config dicts (as Snakemake holds them) and
knows nothing of Snakemake, so the tests run exactly what the workflow runs."""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .attack_io import save_attack
from .attacks import AttackConfig, pgd
from .data import FontsSpec, evaluation_subset, make_fonts, read_split, split_size, training_subset, write_dataset
from .device import configure_torch, resolve_device
from .fonts import build_glyph_bank, default_font_dirs, discover_font_files, extract_fonts, fetch_archive
from .io import write_json
from .models import load_classifier, save_classifier
from .training import TrainConfig, error_rate, train_classifier
from .transformer import PRESETS

log = logging.getLogger(__name__)


def log_to(path: str | os.PathLike) -> None:
    """Send stderr (tracebacks, tqdm, logging) to the job's log file, line-buffered."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 (lives as long as the job)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def attack_config(section: dict, **overrides) -> AttackConfig:
    """Build an AttackConfig from a config section, ignoring keys that are not attack settings."""
    names = {f.name for f in fields(AttackConfig)}
    return AttackConfig(**{**{k: v for k, v in section.items() if k in names}, **overrides})


def fetch_fonts(archive_cfg: dict, archive_path: str, out_dir: str) -> None:
    """Download (or reuse) the pinned font archive and extract its font files into `out_dir`."""
    if not archive_cfg["url"]:
        raise ValueError("fonts.source is 'archive' but fonts.archive.url is empty; set the archive's URL")
    digest = fetch_archive(archive_cfg["url"], archive_path, archive_cfg["sha256"])
    files = extract_fonts(archive_path, out_dir)
    log.info("archive %s (sha256 %s): %d font files extracted to %s", archive_path, digest, len(files), out_dir)


def build_fonts(fonts_cfg: dict, out: str, archive_dir: str | None = None) -> None:
    """Find fonts, build the glyph bank, render both FONTS splits, and write `results/data/fonts.h5`."""
    if fonts_cfg["source"] == "archive":
        dirs = [archive_dir] + list(fonts_cfg["extra_dirs"])
    else:
        dirs = default_font_dirs(fonts_cfg["include_matplotlib"], fonts_cfg["include_system"], fonts_cfg["extra_dirs"])
    paths = discover_font_files(dirs)
    log.info("looked in %s: %d font files", dirs, len(paths))
    bank, kept, verdicts = build_glyph_bank(paths, fonts_cfg["max_fonts"], fonts_cfg["shuffle_seed"],
                                            fonts_cfg["min_recognized"], point_size=fonts_cfg["point_size"],
                                            searched=tuple(str(d) for d in dirs))
    for v in verdicts:
        if not v.kept:
            log.info("dropped %s: %s", v.path, v.reason)
    log.info("kept %d fonts: %s", len(kept), ", ".join(p.name for p in kept))
    spec = FontsSpec(fonts_cfg["per_font_class_train"], fonts_cfg["per_font_class_test"],
                     PRESETS[fonts_cfg["ranges"]], fonts_cfg["seed"])
    splits = make_fonts(bank, spec)
    r = spec.ranges
    write_dataset(out, splits, bank, [str(p) for p in kept], attrs={
        "dataset": "fonts", "ranges": fonts_cfg["ranges"], "ranges_low": r.low.numpy(), "ranges_high": r.high.numpy(),
        "seed": spec.seed, "n_fonts": len(kept), "letters": "ABCDEFGHIJ"})
    log.info("wrote %s: %d train, %d test images", out, len(splits["train"]["labels"]), len(splits["test"]["labels"]))


def load_tensors(data_path: str, split: str, device: torch.device,
                 rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split (or of `rows` of it) on `device`."""
    data = read_split(data_path, split, rows)
    return torch.from_numpy(data["images"]).to(device), torch.from_numpy(data["labels"]).to(device)


def train(data_path: str, model_path: str, metrics_path: str, dataset: str, mode: str, n_train: int, seed: int,
          cls_cfg: dict, device_name: str = "auto", threads: int = 1) -> dict:
    """Train one classifier on the first `n_train` images of the fixed permutation; write model and metrics."""
    device = resolve_device(device_name)
    configure_torch(threads, device)
    subset = training_subset(split_size(data_path, "train"), n_train, cls_cfg["subset_seed"])
    images, labels = load_tensors(data_path, "train", device, rows=subset)
    cfg = TrainConfig(mode=mode, epochs=cls_cfg["epochs"], batch_size=cls_cfg["batch_size"], lr=cls_cfg["lr"],
                      lr_decay=cls_cfg["lr_decay"], weight_decay=cls_cfg["weight_decay"], seed=seed,
                      adversarial_fraction=cls_cfg["adversarial_fraction"],
                      attack=attack_config(cls_cfg.get("adversarial_attack", {})))
    start = time.perf_counter()
    model, history = train_classifier(images, labels, cfg)
    seconds = time.perf_counter() - start
    test_images, test_labels = load_tensors(data_path, "test", device)
    metrics = {
        "dataset": dataset, "mode": mode, "n_train": n_train, "seed": seed, "epochs": cfg.epochs,
        "test_error": error_rate(model, test_images, test_labels),
        "train_error": error_rate(model, images, labels),
        "n_test": len(test_labels), "train_seconds": seconds, "history": history,
        "config": {k: v for k, v in cls_cfg.items() if mode == "adversarial" or k != "adversarial_attack"},
        "device": str(device), "threads": threads, "torch": torch.__version__, "package": __version__,
        "python": platform.python_version(),
    }
    save_classifier(model, model_path)
    write_json(metrics_path, metrics)
    log.info("%s %s N=%d seed=%d: test error %.4f (%.1fs)", dataset, mode, n_train, seed, metrics["test_error"], seconds)
    return metrics


def attack_pgd(data_path: str, model_path: str, out: str, pgd_cfg: dict, device_name: str = "auto",
               threads: int = 1) -> dict:
    """Attack the fixed evaluation subset of the test set with L_inf PGD and write the per-example record."""
    device = resolve_device(device_name)
    configure_torch(threads, device)
    subset = evaluation_subset(split_size(data_path, "test"), pgd_cfg["n_test"], pgd_cfg["seed"])
    images, labels = load_tensors(data_path, "test", device, rows=subset)
    cfg = attack_config(pgd_cfg, early_stop=True)
    model = load_classifier(model_path, device)
    start = time.perf_counter()
    result = pgd(model, images, labels, cfg, indices=torch.from_numpy(subset), progress=True)
    seconds = time.perf_counter() - start
    rates = save_attack(out, result, subset, cfg, attrs={"seconds": seconds, "device": str(device),
                                                          "model": str(model_path)})
    log.info("PGD on %d images in %.1fs: %s", len(subset), seconds, rates)
    return rates


def make_table(metrics_paths: list[str], pgd_paths: list[str], out: str) -> None:
    """Join every model's metrics with its PGD record into `results/tables/metrics.csv`."""
    from .tables import metrics_row, metrics_table, write_table  # pandas: only this stage needs it

    if len(metrics_paths) != len(pgd_paths):
        raise ValueError("every classifier needs exactly one PGD record")
    rows = [metrics_row(m, {"pgd": p}) for m, p in zip(metrics_paths, pgd_paths)]
    df = metrics_table(rows)
    write_table(df, out)


def plot_fig4(table: str, pdf: str, png: str, success_column: str) -> None:
    """Draw Fig. 4 from the metrics table."""
    import pandas as pd

    from .figures import fig4_regular_robustness  # matplotlib and seaborn: only figure stages need them

    fig4_regular_robustness(pd.read_csv(table), pdf, png, success_column, dataset="fonts")
