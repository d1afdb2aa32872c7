"""What every job of a plan asks the scheduler for, read from snakemake's own dry run of that plan.

Runs `snakemake -n` with the given arguments (a profile, config files, --config ...) in the repository root,
reads each planned job's rule, wildcards and resources from its output, and prints per rule and dataset (with
--by-mode also per training mode, with --by-n also per N) the time (minutes), memory (MB) and GPUs one job asks
for, from the least to the most, then the totals: scheduler jobs, those asking for a GPU, and the hours reserved.
The local rules are left out. Nothing runs.
Run: .venv/bin/python benchmarks/requests.py [--by-mode | --by-n] --profile slurm --configfile config/paper.yaml [--config device=cuda]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^(?:local)?rule (\w+):$")
FIELD = re.compile(r"^\s+(wildcards|resources|threads): (.*)$")


def parse_plan(text: str) -> pd.DataFrame:
    """One row per job of a dry run's output: rule, dataset, mode, N, runtime (min), mem_mb, gpu (threads, which
    become --cpus-per-task, where the output shows them)."""
    jobs, job = [], None
    for line in text.splitlines():
        if (m := RULE.match(line)) is not None:
            job = {"rule": m.group(1), "dataset": "", "mode": "", "n": 0, "threads": 1, "runtime": 0, "mem_mb": 0,
                   "gpu": 0}
            jobs.append(job)
        elif job is not None and (m := FIELD.match(line)) is not None:
            key, value = m.groups()
            if key == "threads":
                job["threads"] = int(value)
                continue
            for item in value.split(", "):
                name, _, v = item.partition("=")
                if key == "wildcards" and name in ("dataset", "mode"):
                    job[name] = v
                elif key == "wildcards" and name == "n":
                    job["n"] = int(v)
                elif key == "resources" and name in ("runtime", "mem_mb", "gpu"):
                    job[name] = int(float(v))
        elif not line.strip():
            job = None
    if not jobs:
        raise SystemExit("the dry run planned no jobs (are the outputs already there?); its output:\n" + text[-2000:])
    return pd.DataFrame(jobs)


def span(values: pd.Series) -> str:
    return f"{values.min()}" if values.min() == values.max() else f"{values.min()}-{values.max()}"


def by_kind(jobs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys` (rule, dataset; mode; N): the jobs, and one job's request from the least to the most."""
    return jobs.groupby(keys).agg(
        jobs=("rule", "size"), runtime_min=("runtime", span), mem_mb=("mem_mb", span), gpus=("gpu", "max")
    ).reset_index()


def local_rules(snakefile: Path = ROOT / "Snakefile") -> set[str]:
    """The rules the Snakefile's `localrules:` runs on the submitting host, never as scheduler jobs."""
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", snakefile.read_text(), flags=re.MULTILINE)
    return set(re.findall(r"\w+", block.group(1))) | {"all"} if block else {"all"}


def totals(jobs: pd.DataFrame) -> str:
    gpu_jobs = jobs[jobs["gpu"] > 0]
    return (f"{len(jobs)} scheduler jobs, {len(gpu_jobs)} asking for a GPU; reserved: "
            f"{jobs['runtime'].sum() / 60:,.0f} job-hours, {(gpu_jobs['runtime'] * gpu_jobs['gpu']).sum() / 60:,.0f} "
            "of them GPU-hours")


def plan(argv: list[str]) -> pd.DataFrame:
    """The jobs `snakemake -n --forceall ARGV`, run in the repository root, plans (parse_plan)."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", *argv], cwd=ROOT,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"snakemake -n failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return parse_plan(run.stdout)


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    keys = ["rule", "dataset"] + ["mode"] * ("--by-mode" in argv or "--by-n" in argv) + ["n"] * ("--by-n" in argv)
    jobs = plan([a for a in argv if a not in ("--by-mode", "--by-n")])
    local = local_rules()
    print(f"Left out, run on the submitting host: {', '.join(sorted(set(jobs['rule']) & local))}.\n")
    jobs = jobs[~jobs["rule"].isin(local)]
    table = by_kind(jobs, keys)
    if "n" in keys:
        table["n"] = table["n"].map(lambda n: str(n) if n else "")
    print(table.to_markdown(index=False))
    print(f"\n{totals(jobs)}")


if __name__ == "__main__":
    main(sys.argv[1:])
