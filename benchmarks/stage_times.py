"""Where a workflow run spent its time: the job benchmarks under results/benchmarks/, summed by stage.

Every rule that computes writes `results/benchmarks/<rule>/<wildcards>.tsv` (snakemake's `benchmark:`); this
sums their wall and CPU seconds per rule, and per training mode for the rules whose path names one. With
`--by-n`, what one job of each kind used instead: per rule, dataset, mode and N, the longest job's wall seconds
and the largest peak resident memory (MB), the measured side of what a cluster job should ask for.
Run: .venv/bin/python benchmarks/stage_times.py [results/benchmarks] [--by-mode | --by-n]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

MODES = ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation")


def job_times(root: Path) -> pd.DataFrame:
    """One row per benchmark file: its rule, the dataset, training mode and N its path names (if any; N 0 where
    none), wall and CPU seconds, peak resident memory (MB)."""
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        parts = path.relative_to(root).with_suffix("").parts
        mode = next((p for p in parts[1:] if p in MODES), "")
        n = next((int(p[1:]) for p in parts[1:] if re.fullmatch(r"N\d+", p)), 0)
        bench = pd.read_csv(path, sep="\t")
        rows.append(dict(rule=parts[0], dataset=parts[1] if len(parts) > 1 else "", mode=mode, n=n,
                         wall_s=float(bench["s"].sum()), cpu_s=float(bench["cpu_time"].sum()),
                         max_rss_mb=float(bench["max_rss"].max()), path=str(path)))
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first")
    return pd.DataFrame(rows)


def by_stage(jobs: pd.DataFrame, by_mode: bool) -> pd.DataFrame:
    """Jobs, wall and CPU seconds per stage, largest first, with each stage's share of the summed wall time."""
    keys = ["rule", "mode"] if by_mode else ["rule"]
    table = jobs.groupby(keys).agg(jobs=("path", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    table["share"] = table["wall_s"] / table["wall_s"].sum()
    return table.sort_values("wall_s", ascending=False)


def by_job_kind(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule, dataset, mode and N: how many jobs, the longest one's wall seconds, the largest peak memory."""
    return jobs.groupby(["rule", "dataset", "mode", "n"]).agg(
        jobs=("path", "size"), longest_s=("wall_s", "max"), max_rss_mb=("max_rss_mb", "max"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("results/benchmarks"))
    parser.add_argument("--by-mode", action="store_true", help="split training and attack rules by training mode")
    parser.add_argument("--by-n", action="store_true", help="the longest job and peak memory per rule, mode and N")
    args = parser.parse_args()
    if args.by_n:
        with pd.option_context("display.float_format", "{:.0f}".format, "display.width", 120,
                               "display.max_rows", None):
            print(by_job_kind(job_times(args.root)).to_string())
        return
    table = by_stage(job_times(args.root), args.by_mode)
    with pd.option_context("display.float_format", "{:.1f}".format, "display.width", 120):
        print(table.assign(share=table["share"].map("{:.1%}".format)).to_string())
    print(f"\nsum over {int(table['jobs'].sum())} jobs: {table['wall_s'].sum():.0f} s of job wall time "
          f"({table['cpu_s'].sum():.0f} CPU-s); jobs running in parallel overlap, so the run's wall time is less")


if __name__ == "__main__":
    main()
