"""Restart layout of PGD, measured side by side: restarts as separate batches vs. folded into one batch.

Trains a small classifier on freshly rendered FONTS, then attacks the same test images with both layouts
(same seed, so the same random starts and the same results) and prints times and their ratio.
Run: .venv/bin/python benchmarks/pgd_layout.py [--device cpu|cuda] [--n 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from manifold_robustness.attacks import AttackConfig, pgd, success_rates
from manifold_robustness.data import FontsSpec, make_fonts
from manifold_robustness.device import resolve_device
from manifold_robustness.fonts import build_glyph_bank, default_font_dirs, discover_font_files
from manifold_robustness.training import TrainConfig, train_classifier
from manifold_robustness.transformer import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.3,
                        help="a smaller eps keeps examples in the batch longer (a harder attack)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bank, _, _ = build_glyph_bank(discover_font_files(default_font_dirs(True, True, [])), 1000, 0)
    data = make_fonts(bank, FontsSpec(30, 10, PRESETS["moderate"], 0))
    x, y = (torch.from_numpy(data["train"][k]).to(device) for k in ("images", "labels"))
    model, _ = train_classifier(x, y, TrainConfig(epochs=10), progress=False)
    xt, yt = (torch.from_numpy(data["test"][k][: args.n]).to(device) for k in ("images", "labels"))
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{args.threads} CPU threads'})")
    times: dict[str, list[float]] = {}
    rates = {}
    for _ in range(args.repeats):
        for layout in ("sequential", "folded"):
            cfg = AttackConfig(eps=args.eps, layout=layout, batch_size=args.n)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = pgd(model, xt, yt, cfg)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.setdefault(layout, []).append(time.perf_counter() - start)
            rates[layout] = success_rates(result.success.cpu(), result.correct.cpu())
    for layout, ts in times.items():
        print(f"{layout:>10}: min {min(ts):.2f}s median {sorted(ts)[len(ts) // 2]:.2f}s  "
              f"success {rates[layout]['success']:.4f} any {rates[layout]['success_any']:.4f}")
    ratio = min(times["folded"]) / min(times["sequential"])
    print(f"folded / sequential time (min over {args.repeats}): {ratio:.2f}")


if __name__ == "__main__":
    main()
