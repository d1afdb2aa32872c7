r"""What every job of a plan asks the scheduler for, read from snakemake's own dry run of that plan.

Runs `snakemake -n` with the given arguments (a profile, config files, --config ...) in the repository root,
reads each planned job's rule, wildcards and resources from its output, and prints per rule and dataset (with
--by-mode also per training mode, with --by-n also per N) the time (minutes), memory (MB) and GPUs one job asks
for, from the least to the most, then the totals: the jobs, those asking for a GPU, the hours reserved, and the
submissions Slurm gets where the profile groups jobs (a group of jobs is one submission, asking for what its
members ask: snakemake sums their time where they take turns, as on one GPU). The local rules are left out.
Nothing runs. With --grouped, the plan of the profile's grouped submission (its commented block, between
`# BEGIN grouped submission` and `# END grouped submission`), whose command-line form it prints first.
Run: .venv/bin/python benchmarks/requests.py [--by-mode | --by-n] [--grouped] --profile slurm \
         --configfile config/paper.yaml [--config device=cuda]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "config.v8+.yaml"
RULE = re.compile(r"^(\s*)(?:local)?rule (\w+):$")
GROUP = re.compile(r"Group job (\w+) \(jobs in lexicogr\. order\):$")
FIELD = re.compile(r"^\s+(wildcards|resources|threads): (.*)$")


def parse_plan(text: str) -> pd.DataFrame:
    """One row per job of a dry run's output: rule, dataset, mode, N, runtime (min), mem_mb, gpu (threads, which
    become --cpus-per-task, where the output shows them), and group: the number of the group job it is a member of
    (the dry run lists a group's members indented under its heading), -1 for a job submitted alone."""
    jobs, job, groups = [], None, 0
    for line in text.splitlines():
        if GROUP.search(line) is not None:
            groups += 1
        elif (m := RULE.match(line)) is not None:
            job = {"rule": m.group(2), "dataset": "", "mode": "", "n": 0, "threads": 1, "runtime": 0, "mem_mb": 0,
                   "gpu": 0, "group": groups - 1 if m.group(1) else -1}
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


def submissions(jobs: pd.DataFrame) -> int:
    """Slurm jobs submitted for the plan: one per group job, one per job outside a group."""
    return int((jobs["group"] < 0).sum() + jobs.loc[jobs["group"] >= 0, "group"].nunique())


def totals(jobs: pd.DataFrame) -> str:
    gpu_jobs = jobs[jobs["gpu"] > 0]
    grouped = jobs["group"] >= 0
    as_submitted = (f"; submitted as {submissions(jobs)} Slurm jobs ({jobs.loc[grouped, 'group'].nunique()} groups "
                    f"of {grouped.sum()} jobs)" if grouped.any() else "")
    return (f"{len(jobs)} jobs, {len(gpu_jobs)} asking for a GPU; reserved: "
            f"{jobs['runtime'].sum() / 60:,.0f} job-hours, {(gpu_jobs['runtime'] * gpu_jobs['gpu']).sum() / 60:,.0f} "
            f"of them GPU-hours{as_submitted}")


GROUPED = re.compile(r"^# BEGIN grouped submission\n(.*?)^# END grouped submission$", flags=re.MULTILINE | re.DOTALL)


def grouped_profile(profile: Path = PROFILE) -> str:
    """The profile's text with its grouped-submission block uncommented, as a user who turns it on has it."""
    text = profile.read_text()
    if GROUPED.search(text) is None:
        raise SystemExit(f"{profile} has no block between '# BEGIN grouped submission' and '# END grouped submission'")
    return GROUPED.sub(lambda block: re.sub(r"^# ?", "", block.group(1), flags=re.MULTILINE), text)


def grouped_submission(profile: Path = PROFILE) -> list[str]:
    """The keys the grouped-submission block adds to the profile, as command-line arguments (--groups
    RULE=GROUP ..., --resources ..., --set-resource-scopes ...)."""
    keys, plain = yaml.safe_load(grouped_profile(profile)), yaml.safe_load(profile.read_text())
    added = {key: value for key, value in keys.items() if key not in plain}
    return [arg for key, values in added.items() for arg in (f"--{key}", *(f"{k}={v}" for k, v in values.items()))]


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
    grouped = grouped_submission() if "--grouped" in argv else []
    if grouped:
        print(f"Grouped submission: {' '.join(grouped)}\n")
    jobs = plan([a for a in argv if a not in ("--by-mode", "--by-n", "--grouped")] + grouped)
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
