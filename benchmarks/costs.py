"""The rates behind every job's request (src/manifold_robustness/job_rates.json), and how well they predict.

fit RUN --configfile ... [--also RUN2 CONFIG ...]: the CPU rates, fitted to the job benchmarks of finished
    workflow runs (folders with results/benchmarks/, results/data/), given the config files each read, in order
    (config/config.yaml first). Each rate is the largest over the runs' jobs of that kind of (wall seconds -
    start-up) / work, the work counted from the config as manifold_robustness.costs counts it, in the first
    run's units; start-up is a run's shortest job. Memory: per kind a base and copies of the images a job holds,
    the least that cover every job's peak (at least 3 copies; FONTS rendering's from benchmarks/fonts_memory.py).
    The GPU rates come from the NVIDIA H200 measurements in benchmarks/measured/ (benchmarks/gpu.py, the paper's
    widths and attacks); what they do not measure (rendering, distances, fixed costs, memory) keeps the CPU's
    rate, an upper bound there, and GPU jobs get 2,000 MB more for the CUDA runtime. Writes job_rates.json.
check RUN --configfile ...: each job of a run against its prediction (used / predicted seconds and memory) and
    against its request (requested / used): none may be under 1, and the aim is no more than about 3.
project RUN --configfile ... --target ...: the job time of another config's plan on the machine that made RUN:
    each planned job's prediction times what RUN's jobs of that rule used over their predictions (1 for a rule
    RUN has not run), FONTS with the fonts RUN rendered; per rule, and the total against RUN's own job time.
Run: .venv/bin/python benchmarks/costs.py fit|check|project RUN --configfile config/config.yaml [more.yaml ...]
         [--target config/config.yaml config/decide.yaml]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import h5py
import pandas as pd
import yaml
from snakemake.utils import update_config, validate

from manifold_robustness import costs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from paper_estimate import load_measured  # noqa: E402 (a sibling script)
from stage_times import job_times  # noqa: E402

COPIES = 3  # copies of its images a job holds at its peak (read, converted, batched); an assumption, stated
# Rendering FONTS chunk by chunk holds no image array whole: its peak rose 69 MiB from 16,100 to 257,600 images
# (benchmarks/fonts_memory.py, README), 0.1 image's worth per image (labels, codes, fonts, the file's index).
RENDER_COPIES = 0.1
CUDA_RUNTIME_MB = 2000


def run_config(files: list[Path], sizes: dict[str, tuple[int, int]] | None = None) -> dict:
    """The config a run read: the files merged in order as snakemake merges --configfile, the schema's defaults
    filled in. `sizes` (train, test images per dataset) sets FONTS' font count to what the run rendered."""
    cfg: dict = {}
    for path in files:
        update_config(cfg, yaml.safe_load(path.read_text()))
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    if sizes and "fonts" in sizes:
        cfg["fonts"]["max_fonts"] = sizes["fonts"][0] // (cfg["fonts"]["per_font_class_train"] * 10)
    return cfg


def rendered_sizes(run: Path) -> dict[str, tuple[int, int]]:
    """Training and test images of each dataset file the run wrote."""
    out = {}
    for path in sorted((run / "results" / "data").glob("*.h5")):
        with h5py.File(path, "r") as h5:
            out[path.stem] = (len(h5["train"]["labels"]), len(h5["test"]["labels"]))
    return out


def attack_kind(rule: str, dataset: str) -> str:
    if rule in ("attack_pgd", "attack_pgd_sign"):
        return rule.removeprefix("attack_")
    if rule == "attack_onmanifold_learned" or dataset != "fonts":
        return "onmanifold_learned"
    return "onmanifold_true"


def job_work(cfg: dict, job: pd.Series) -> tuple[str, float, float] | None:
    """The rate a job measures, its work in that rate's units, and the images it holds; None for jobs whose
    cost the model does not predict (downloads, local rules)."""
    rule, dataset, mode, n = job["rule"], job["dataset"], job["mode"], int(job["n"])
    seeds = len(cfg["classifiers"]["seeds"])
    if dataset not in cfg["datasets"]:  # rules of no dataset (tables, figures, the report)
        return None
    train_size, test_size = costs.split_size(cfg, dataset)
    if rule == "train_classifier":
        return f"train_s.{mode}", seeds * cfg["classifiers"]["epochs"] * n, n + test_size
    if rule.startswith("attack_"):
        kind = attack_kind(rule, dataset)
        section = costs.attack_section(cfg, kind)
        return (f"attack_s.{costs.ATTACK_RATE[kind]}", seeds * section["n_test"] * section["restarts"] * section["steps"],
                section["n_test"] * section["restarts"])
    if rule == "train_vaegan":
        return "vaegan_s", *costs.vaegan_images(cfg, dataset)
    if rule == "train_judge":
        return "judge_s", cfg["judge"]["epochs"] * train_size, train_size + test_size
    if rule.startswith("distances"):
        d, examples = cfg["distances"], cfg["pgd"]["n_test"] + cfg["onmanifold"]["n_test"]
        if dataset == "fonts":
            return "project_s", examples * d["starts"] * d["steps"], examples
        return "neighbour_s", examples * train_size, train_size
    if rule == "fonts_data":
        return "render_s", train_size + test_size, train_size + test_size
    if rule in ("judge_onmanifold", "vaegan_quality"):
        return f"fixed_s.{rule}", 1, 0
    return None


def memory_rule(rule: str) -> str:
    return {"attack_pgd_sign": "attack_pgd", "attack_onmanifold_learned": "attack_onmanifold",
            "distances_seed": "distances"}.get(rule, rule)


def fit(runs: list[tuple[Path, list[Path]]]) -> dict:
    """The CPU rates of the runs (folder, config files; module docstring). Work is counted in the units of the
    first run's settings (its training attacks' iterations, its VAE-GANs' width), so runs of other settings
    measure the same rates. Memory per kind: a base and a number of copies of the images a job holds, the least
    that covers every job's peak (at least COPIES)."""
    ref_cfg = run_config(runs[0][1], rendered_sizes(runs[0][0]))
    cls = ref_cfg["classifiers"]
    ref = {"adversarial_fraction": cls["adversarial_fraction"],
           "training_steps": {m: cls[s]["steps"] for m, s in costs.TRAINING_ATTACK.items()},
           "vaegan_channels": list(ref_cfg["vaegan"]["channels"])}
    rates: dict = {}
    peaks: dict[str, list[tuple[float, float]]] = {}
    startups, n_jobs = [], 0
    for run, files in runs:
        cfg = run_config(files, rendered_sizes(run))
        jobs = job_times(run / "results" / "benchmarks")
        startup = float(jobs["wall_s"].min())
        startups.append(startup)
        n_jobs += len(jobs)
        wider = costs.width(cfg["vaegan"]["channels"]) / costs.width(ref["vaegan_channels"])
        for _, job in jobs.iterrows():
            work = job_work(cfg, job)
            if work is None:
                continue
            key, units, images = work
            if key.startswith("train_s."):
                units *= costs.attack_passes(cfg, job["mode"], ref)
            elif key in ("attack_s.onmanifold_learned", "vaegan_s"):
                units *= wider
            group, _, name = key.partition(".")
            target = rates.setdefault(group, {}) if name else rates
            target[name or group] = max(target.get(name or group, 0.0), max(job["wall_s"] - startup, 0.0) / units)
            peaks.setdefault(memory_rule(job["rule"]), []).append((job["max_rss_mb"], images * costs.IMAGE_MB))
    memory = {}
    for rule, points in peaks.items():
        # Copies from the jobs holding the most images (at least half the most), over the kind's smallest peak:
        # on jobs of few images the peak's noise would pass for many copies.
        least, most = min(rss for rss, _ in points), max(mb for _, mb in points)
        copies = RENDER_COPIES if rule == "fonts_data" else max(
            [COPIES] + [(rss - least) / mb for rss, mb in points if mb > 0 and mb >= most / 2])
        base = max(rss - copies * mb for rss, mb in points)
        memory[rule] = {"base_mb": round(base, 1), "copies": round(copies, 2)}
    rates["eval_s"] = rates["train_s"]["normal"] / 3  # a forward pass, against a training step's three
    described = "; ".join(f"{', '.join(str(f) for f in files)}" for _, files in runs)
    return {
        "source": f"fitted by benchmarks/costs.py to {n_jobs} job benchmarks of {len(runs)} run(s) ({described}); "
                  "the largest rate of each kind",
        "reference": ref, "batch_size": cls["batch_size"], "startup_s": round(min(startups), 2), **rates,
        "memory": memory,
    }


def gpu_rates(cpu: dict, measured: dict) -> dict:
    """The GPU's rates from the H200 measurements; the CPU's where the GPU was not measured."""
    # The measured attacks (load_measured: the learned manifold's through a trained VAE-GAN): the paper's 40
    # iterations and 5 restarts on PGD's 1000 and the on-manifold attacks' 2500 test images.
    per_image_step = {k: s / (measured["attack_images"][k] * 5 * 40) for k, s in measured["attacks"].items()}
    normal_m1 = measured["steps"]["normal"][1] / 100
    return {
        "source": "NVIDIA H200, benchmarks/measured/h200_gpu.json and h200_gpu2.json (benchmarks/gpu.py): lock-step "
                  "costs of M stacked models, the paper's attacks, a paper-width VAE-GAN, the median warm start-up; "
                  "rendering, distances, fixed costs and memory are the CPU's, plus 2,000 MB for the CUDA runtime",
        "reference": {"adversarial_fraction": 0.5, "training_steps": {m: 40 for m in costs.TRAINING_ATTACK},
                      "vaegan_channels": [64, 128, 256]},
        "batch_size": 100, "startup_s": round(measured["startup_s"], 2),
        "train_step_s": {mode: {str(m): s for m, s in row.items()} for mode, row in measured["steps"].items()},
        "train_s": {mode: row[1] / 100 for mode, row in measured["steps"].items()},
        "judge_s": normal_m1,
        "eval_s": normal_m1 / 3,
        "attack_s": per_image_step,
        "vaegan_s": measured["vaegan_s"],
        "project_s": cpu["project_s"], "neighbour_s": cpu["neighbour_s"], "render_s": cpu["render_s"],
        "fixed_s": cpu["fixed_s"],
        "memory": {rule: {**m, "base_mb": m["base_mb"] + CUDA_RUNTIME_MB} for rule, m in cpu["memory"].items()},
    }


def predict(rates: dict, cfg: dict, job: pd.Series) -> costs.Cost | None:
    """The cost model's prediction for one benchmarked job of a run (on the CPU)."""
    rule, dataset, mode, n = job["rule"], job["dataset"], job["mode"], int(job["n"])
    seeds = len(cfg["classifiers"]["seeds"])
    if rule == "train_classifier":
        return costs.train(rates, "cpu", cfg, dataset, mode, [n] * seeds)
    if rule.startswith("attack_"):
        return costs.attack(rates, "cpu", cfg, attack_kind(rule, dataset), seeds)
    simple = {"train_vaegan": costs.vaegan, "train_judge": costs.judge, "distances": costs.distances,
              "distances_seed": costs.distances}
    if rule in simple:
        return simple[rule](rates, "cpu", cfg, dataset)
    if rule == "fonts_data":
        return costs.fonts_data(rates, "cpu", cfg)
    if rule in ("judge_onmanifold", "vaegan_quality"):
        return costs.small(rates, "cpu", rule)
    return None


def predicted_jobs(run: Path, cfg: dict, rates: dict):
    """Each benchmarked job of a run whose cost the model predicts, with that prediction."""
    for _, job in job_times(run / "results" / "benchmarks").iterrows():
        cost = predict(rates, cfg, job)
        if cost is not None:
            yield job, cost


def check(run: Path, files: list[Path], rates: dict) -> pd.DataFrame:
    """Per rule: jobs, the longest, and the range over its jobs of used / predicted time and of requested / used
    time and memory (first tries, the config's `resources` factors)."""
    cfg = run_config(files, rendered_sizes(run))
    rows = []
    for job, cost in predicted_jobs(run, cfg, rates):
        minutes, mem = costs.request(cost, 1, cfg["resources"])
        rows.append(dict(rule=job["rule"], used_s=job["wall_s"], used_over_predicted=job["wall_s"] / cost.seconds,
                         time_asked=60 * minutes / job["wall_s"], memory_asked=mem / job["max_rss_mb"],
                         peak_mb=job["max_rss_mb"]))
    df = pd.DataFrame(rows)
    return df.groupby("rule").agg(
        jobs=("used_s", "size"), longest_s=("used_s", "max"), peak_mb=("peak_mb", "max"),
        time_used_over_predicted_min=("used_over_predicted", "min"),
        time_used_over_predicted_max=("used_over_predicted", "max"),
        time_asked_over_used_min=("time_asked", "min"), time_asked_over_used_max=("time_asked", "max"),
        memory_asked_over_used_min=("memory_asked", "min"), memory_asked_over_used_max=("memory_asked", "max"))


def used_over_predicted(run: Path, cfg: dict, rates: dict) -> pd.DataFrame:
    """Per rule of a run: its jobs' summed wall seconds, their summed predictions, and the one over the other."""
    rows = [dict(rule=job["rule"], used_s=job["wall_s"], predicted_s=cost.seconds)
            for job, cost in predicted_jobs(run, cfg, rates)]
    table = pd.DataFrame(rows).groupby("rule").sum()
    table["used_over_predicted"] = table["used_s"] / table["predicted_s"]
    return table


def project(run: Path, files: list[Path], target: list[Path], plan: pd.DataFrame,
            rates: dict) -> tuple[pd.DataFrame, float]:
    """Per rule of `plan` (a dry run's jobs under the `target` config files, benchmarks/requests.py): its jobs,
    their predicted seconds, RUN's used over predicted for the rule, and the projection (their product); and the
    wall seconds RUN's predicted jobs used, to compare the projection with."""
    sizes = rendered_sizes(run)
    run_cfg = run_config(files, sizes)
    measured = used_over_predicted(run, run_cfg, rates)
    cfg = run_config(target)
    if "fonts" in sizes:  # the fonts this machine has, as RUN rendered them
        cfg["fonts"]["max_fonts"] = run_cfg["fonts"]["max_fonts"]
    rows = []
    for _, job in plan.iterrows():
        cost = predict(rates, cfg, job)
        if cost is not None:
            rows.append(dict(rule=job["rule"], jobs=1, predicted_s=cost.seconds))
    table = pd.DataFrame(rows).groupby("rule").sum()
    table["used_over_predicted"] = measured["used_over_predicted"].reindex(table.index).fillna(1.0)
    table["projected_s"] = table["predicted_s"] * table["used_over_predicted"]
    return table, float(measured["used_s"].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("fit", "check", "project"))
    parser.add_argument("run", type=Path, help="the folder a workflow run wrote results/ in")
    parser.add_argument("--configfile", type=Path, nargs="+", default=[ROOT / "config" / "config.yaml"])
    parser.add_argument("--also", nargs="+", action="append", default=[], metavar=("RUN", "CONFIG"),
                        help="fit: another run and its config files (repeatable)")
    parser.add_argument("--rates", type=Path, default=costs.RATES)
    parser.add_argument("--target", type=Path, nargs="+", help="project: the config files of the plan to project")
    args = parser.parse_args(argv)
    if args.action == "project":
        # The sibling script benchmarks/requests.py reads the dry run's jobs; loaded by path, since the name
        # `requests` is the HTTP library's, which snakemake has already imported.
        spec = importlib.util.spec_from_file_location("plan_requests", ROOT / "benchmarks" / "requests.py")
        requests_tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(requests_tool)
        plan = requests_tool.plan
        if not args.target:
            parser.error("project needs --target CONFIG [CONFIG ...], the config files of the plan to project")
        table, used = project(args.run, args.configfile, args.target,
                              plan(["--configfile", *(str(f.resolve()) for f in args.target)]),
                              costs.load_rates(args.rates))
        print(table.to_markdown(floatfmt=".2f"))
        print(f"\nprojected job time {table['projected_s'].sum():,.0f} s against {used:,.0f} s measured in "
              f"{args.run}: {table['projected_s'].sum() / used:.2f} times")
        return
    if args.action == "fit":
        runs = [(args.run, args.configfile)] + [(Path(a[0]), [Path(f) for f in a[1:]]) for a in args.also]
        cpu = fit(runs)
        rates = {"cpu": cpu, "cuda": gpu_rates(cpu, load_measured())}
        args.rates.write_text(json.dumps(rates, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.rates}: start-up {cpu['startup_s']} s; " + ", ".join(
            f"{k} {v:.3g}" for k, v in sorted(cpu["train_s"].items())) + " s per training image-epoch")
        return
    table = check(args.run, args.configfile, costs.load_rates(args.rates))
    names = {c: c.replace("time_", "t_").replace("memory_", "mem_").replace("_over_", "/") for c in table}
    print(table.rename(columns=names).to_markdown(floatfmt=".2f"))
    print(f"\nunder their request (a ratio asked/used below 1): "
          f"{int((table['time_asked_over_used_min'] < 1).sum() + (table['memory_asked_over_used_min'] < 1).sum())} "
          "job kinds")


if __name__ == "__main__":
    main()
