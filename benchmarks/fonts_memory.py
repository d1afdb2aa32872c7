"""Peak memory of writing FONTS: rendered into the file a chunk at a time (`write_fonts`, what `fonts_data` runs)
against rendered in memory and then written (`make_fonts` + `write_dataset`, what it ran before).

Each size and way runs in a fresh process (peak resident memory of that process, from the kernel's own count, minus
that of the same process just before rendering: imports, the glyph bank). The glyph bank is the quick config's
pinned font set (23 fonts), or, with `--system`, every usable font on this machine (apt-get install fonts-noto-core
fonts-dejavu ... for hundreds); sizes are images per font and letter in the training split (the test split has a
sixth of them).
Run: .venv/bin/python benchmarks/fonts_memory.py [--per-font-class 60 240 960] [--system]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from manifold_robustness.data import FontsSpec, make_fonts, write_dataset, write_fonts
from manifold_robustness.transformer import PRESETS
bank = np.load(sys.argv[1])
per, way, out = int(sys.argv[2]), sys.argv[3], sys.argv[4]
spec = FontsSpec(per, max(1, per // 6), PRESETS["hard"], seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if way == "chunked":
    write_fonts(out, bank, spec, ["f"] * len(bank))
else:
    write_dataset(out, make_fonts(bank, spec), bank, ["f"] * len(bank))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seconds = time.perf_counter() - start
print(json.dumps({"rise_mib": (peak - before) / 1024, "peak_mib": peak / 1024, "seconds": seconds}))
"""


def glyph_bank(system: bool):
    from manifold_robustness.fonts import (build_glyph_bank, default_font_dirs, discover_font_files,
                                          font_set_manifest, pinned_font_files)

    dirs = default_font_dirs(True, True, [])
    paths = (discover_font_files(dirs) if system
             else pinned_font_files(font_set_manifest("matplotlib-3.11.2"), dirs))
    return build_glyph_bank(paths, max_fonts=100000, shuffle_seed=0)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-font-class", type=int, nargs="+", default=[60, 240, 960])
    parser.add_argument("--system", action="store_true")
    args = parser.parse_args()
    import numpy as np

    bank = glyph_bank(args.system)
    print(f"{len(bank)} fonts")
    print("| images (train + test) | training images, GiB as float32 | way | peak rise, MiB | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "bank.npy", bank)
        for per in args.per_font_class:
            n = len(bank) * 10 * (per + max(1, per // 6))
            for way in ("in memory", "chunked"):
                out = Path(tmp) / "fonts.h5"
                proc = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "bank.npy"), str(per),
                                       way.replace("in memory", "memory"), str(out)],
                                      capture_output=True, text=True, check=True)
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                gib = len(bank) * 10 * per * 784 * 4 / 2**30
                print(f"| {n:,} | {gib:.2f} | {way} | {result['rise_mib']:.0f} | {result['seconds']:.1f} |")
                out.unlink()
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
