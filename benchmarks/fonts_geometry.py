"""FONTS under the two code conventions (`fonts.geometry`): glyph extents, and the test error of normal training.

Renders FONTS from the quick config's pinned font set (`--system`: every usable font on this machine instead; 60
and 10 images per font and letter) with the same sampled codes under `placement` and `sampling`, for the `hard` and `moderate`
ranges, and reports (a) the rendered glyphs' bounding boxes in pixels (rows and columns with ink above half
intensity) and the share of images with ink on the canvas border (cut off), and (b) the test error of the study's
classifier trained normally (first N of the fixed permutation, the quick config's optimization settings) on each.
Run: .venv/bin/python benchmarks/fonts_geometry.py [--n 1000] [--epochs 10] [--seeds 0 1] [--ranges hard] [--system]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from manifold_robustness.data import FontsSpec, make_fonts, training_subset
from manifold_robustness.fonts import (build_glyph_bank, default_font_dirs, discover_font_files, font_set_manifest,
                                      pinned_font_files)
from manifold_robustness.training import TrainConfig, error_rate, train_classifier
from manifold_robustness.transformer import CONVENTIONS, PRESETS


def extents(images: np.ndarray) -> dict[str, float]:
    """Bounding-box height and width (pixels above half intensity) and the share of images inked at the border."""
    ink = images[:, 0] > 0.5
    height, width = ink.any(2).sum(1), ink.any(1).sum(1)
    border = images[:, 0].copy()
    border[:, 1:-1, 1:-1] = 0
    q = np.percentile(height, [10, 50, 90])
    return {"height_mean": height.mean(), "height_p10": q[0], "height_median": q[1], "height_p90": q[2],
            "width_mean": width.mean(), "cut": (border.reshape(len(border), -1).max(1) > 0.5).mean()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--ranges", default="hard", choices=sorted(PRESETS), help="the ranges training runs on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pinned", default="matplotlib-3.11.2", help="the font set (fonts.pinned)")
    parser.add_argument("--system", action="store_true", help="every usable font found instead of the pinned set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dirs = default_font_dirs(True, True, [])
    files = discover_font_files(dirs) if args.system else pinned_font_files(font_set_manifest(args.pinned), dirs)
    bank, kept, _ = build_glyph_bank(files, 1000, 0)
    print(f"{len(kept)} fonts; {args.threads} CPU thread(s)")
    identity = extents(bank.reshape(-1, 1, 28, 28))
    print(f"glyph bank (identity code): height mean {identity['height_mean']:.1f} px, "
          f"width mean {identity['width_mean']:.1f} px")
    data = {}
    print("ranges    geometry   split  height mean [p10 median p90]  width mean  cut off")
    for preset in ("hard", "moderate"):
        for convention in CONVENTIONS:
            splits = make_fonts(bank, FontsSpec(60, 10, replace(PRESETS[preset], convention=convention), seed=0))
            data[preset, convention] = splits
            e = extents(splits["train"]["images"])
            print(f"{preset:9} {convention:10} train  {e['height_mean']:5.1f} [{e['height_p10']:4.0f} "
                  f"{e['height_median']:4.0f} {e['height_p90']:4.0f}]      {e['width_mean']:5.1f}     "
                  f"{e['cut']:.3f}")
    print(f"normal training on {args.ranges}: N = {args.n}, {args.epochs} epochs")
    for convention in CONVENTIONS:
        splits = data[args.ranges, convention]
        rows = training_subset(len(splits["train"]["labels"]), args.n, subset_seed=0)
        x, y = (torch.from_numpy(splits["train"][k][rows]) for k in ("images", "labels"))
        xt, yt = (torch.from_numpy(splits["test"][k]) for k in ("images", "labels"))
        errors = []
        for seed in args.seeds:
            start = time.perf_counter()
            model, _ = train_classifier(x, y, TrainConfig(epochs=args.epochs, seed=seed), progress=False)
            errors.append(error_rate(model, xt, yt))
            print(f"  {convention:10} seed {seed}: test error {errors[-1]:.4f} on {len(yt)} images "
                  f"({time.perf_counter() - start:.0f} s)")
        print(f"  {convention:10} mean test error {np.mean(errors):.4f}")


if __name__ == "__main__":
    main()
