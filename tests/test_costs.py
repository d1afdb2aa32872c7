"""What each job asks a scheduler for: the cost model (manifold_robustness.costs), the fit of its rates to a
run's job benchmarks (benchmarks/costs.py) and the table of a plan's requests (benchmarks/requests.py)."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from manifold_robustness import costs

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fit_tool = load_script("costs")
requests_tool = load_script("requests")
SETTINGS = {"safety": 2.5, "memory_safety": 1.5, "retry_growth": 2.0, "min_runtime": 5}


def config(*files: str) -> dict:
    return fit_tool.run_config([ROOT / name for name in files])


def synthetic_rates() -> dict:
    """Round numbers on both devices, the GPU's with a lock-step table."""
    memory = {rule: {"base_mb": 500.0, "copies": 3} for rule in
              ("train_classifier", "attack_pgd", "attack_onmanifold", "train_vaegan", "train_judge", "distances",
               "fonts_data", "judge_onmanifold", "vaegan_quality")}
    cpu = {"reference": {"adversarial_fraction": 0.5, "training_steps": {m: 10 for m in costs.TRAINING_ATTACK},
                         "vaegan_channels": [16, 32, 64]},
           "batch_size": 100, "startup_s": 5.0, "eval_s": 1e-4,
           "train_s": {"normal": 1e-3, "adversarial": 4e-3, "onmanifold_true": 6e-3, "onmanifold_learned": 8e-3,
                       "transformation": 6e-3},
           "attack_s": {"pgd": 1e-4, "onmanifold_true": 3e-5, "onmanifold_learned": 2e-5},
           "judge_s": 1e-3, "vaegan_s": 1e-3, "project_s": 1e-4, "neighbour_s": 1e-8, "render_s": 1e-4,
           "fixed_s": {"judge_onmanifold": 0.5, "vaegan_quality": 4.0}, "memory": memory}
    cuda = copy.deepcopy(cpu)
    cuda["reference"] = {"adversarial_fraction": 0.5, "training_steps": {m: 40 for m in costs.TRAINING_ATTACK},
                         "vaegan_channels": [64, 128, 256]}
    cuda["train_step_s"] = {m: {"1": 0.01, "5": 0.02, "10": 0.03} for m in cpu["train_s"]}
    return {"cpu": cpu, "cuda": cuda}


def test_a_request_is_the_prediction_times_safety_grown_on_each_retry() -> None:
    cost = costs.Cost(seconds=600.0, mem_mb=1000.0)
    assert costs.request(cost, 1, SETTINGS) == (25, 1500)  # 10 min x 2.5; 1000 MB x 1.5
    assert costs.request(cost, 2, SETTINGS) == (50, 3000)
    assert costs.request(cost, 3, SETTINGS) == (100, 6000)
    assert costs.request(costs.Cost(1.0, 333.0), 1, SETTINGS) == (5, 500)  # the floor; memory rounded up
    assert costs.request(costs.Cost(1.0, 333.0), 2, SETTINGS) == (10, 1000)  # a job killed at the floor
    with pytest.raises(ValueError, match="attempt counts from 1"):
        costs.request(cost, 0, SETTINGS)


def test_training_cost_grows_with_n_seeds_and_attack_iterations() -> None:
    rates, cfg = synthetic_rates(), config("config/config.yaml")
    one = costs.train(rates, "cpu", cfg, "fashion", "adversarial", [1000])
    assert costs.train(rates, "cpu", cfg, "fashion", "adversarial", [4000]).seconds > one.seconds
    assert costs.train(rates, "cpu", cfg, "fashion", "adversarial", [1000] * 5).seconds > 4 * (one.seconds - 5.0)
    assert costs.train(rates, "cpu", cfg, "fashion", "normal", [1000]).seconds < one.seconds
    # The quick config's 10 iterations are the reference: 1 + 0.5 x 11 passes per image; the paper's 40: 21.5.
    assert costs.attack_passes(cfg, "adversarial", rates["cpu"]["reference"]) == pytest.approx(1.0)
    paper = config("config/config.yaml", "config/paper.yaml")
    assert costs.attack_passes(paper, "adversarial", rates["cpu"]["reference"]) == pytest.approx(21.5 / 6.5)
    assert costs.attack_passes(paper, "normal", rates["cpu"]["reference"]) == 1.0
    # The learned manifold's passes also go through the decoder, about 16 times dearer at the paper's width.
    assert costs.width([64, 128, 256]) / costs.width([16, 32, 64]) == pytest.approx(15.93, abs=0.01)
    assert costs.attack_passes(paper, "onmanifold_learned", rates["cpu"]["reference"]) > 40
    # Memory: the training subset and the test split, three copies, on the base.
    mem = costs.train(rates, "cpu", cfg, "fashion", "normal", [4000]).mem_mb
    assert mem == pytest.approx(500 + 3 * (4000 + 10_000) * costs.IMAGE_MB)


def test_stacked_gpu_training_is_one_lock_step() -> None:
    rates, cfg = synthetic_rates(), config("config/config.yaml", "config/paper.yaml")
    cfg["classifiers"]["engine"] = "auto"
    steps = 20 * 10  # 20 epochs of 10 batches of 100
    cost = costs.train(rates, "cuda", cfg, "fashion", "normal", [1000] * 5)
    evaluate = 1e-4 * 5 * (10_000 + 1000)
    assert cost.seconds == pytest.approx(5.0 + steps * 0.02 + evaluate)
    alone = costs.train(rates, "cuda", cfg, "fashion", "normal", [1000])
    assert cost.seconds < 5 * alone.seconds  # five in lock step cost less than five one after another
    # Models of several N in one lock step: M falls as the small ones finish.
    mixed = costs.train(rates, "cuda", cfg, "fashion", "normal", [1000, 2000])
    assert mixed.seconds == pytest.approx(5.0 + 200 * 0.0125 + 200 * 0.01 + 1e-4 * (20_000 + 3000))


def test_attack_and_dataset_jobs_count_their_work() -> None:
    rates, cfg = synthetic_rates(), config("config/config.yaml")
    pgd = costs.attack(rates, "cpu", cfg, "pgd", seeds=2)
    assert pgd.seconds == pytest.approx(5.0 + 2 * 500 * 5 * 40 * 1e-4)
    assert costs.attack(rates, "cpu", cfg, "pgd", seeds=4).seconds > pgd.seconds
    assert costs.attack(rates, "cpu", cfg, "onmanifold_true", 2).seconds == pytest.approx(5.0 + 2 * 150 * 5 * 40 * 3e-5)
    # FONTS from the pinned list: at most its 40 files, whatever max_fonts says.
    assert costs.split_size(cfg, "fonts") == (40 * 60 * 10, 40 * 10 * 10)
    # The quick VAE-GANs stop at their step budget.
    assert costs.vaegan(rates, "cpu", cfg, "fashion").seconds == pytest.approx(5.0 + 100 * 100 * 1e-3)  # 100 steps of 100 images
    assert costs.small(rates, "cpu", "vaegan_quality") == costs.Cost(9.0, 500.0)


def test_committed_rates_cover_every_job_of_the_paper_plan() -> None:
    """job_rates.json holds what the model reads on both devices: every job of the paper grid gets a finite,
    positive prediction, and the GPU's is the smaller for the paper's training."""
    rates, cfg = costs.load_rates(), config("config/config.yaml", "config/paper.yaml")
    seeds = len(cfg["classifiers"]["seeds"])
    for device in costs.DEVICES:
        for dataset in cfg["datasets"]:
            for mode in cfg["classifiers"]["modes"]:
                for n in cfg["classifiers"]["n_train"]:
                    cost = costs.train(rates, device, cfg, dataset, mode, [n] * seeds)
                    assert 0 < cost.seconds < math.inf and cost.mem_mb > 0
            for kind in costs.ATTACK_RATE:
                assert costs.attack(rates, device, cfg, kind, seeds).seconds > 0
            for predict in (costs.vaegan, costs.judge, costs.distances):
                assert predict(rates, device, cfg, dataset).seconds > 0
        assert costs.fonts_data(rates, device, cfg).seconds > 0
    # Rendering the paper's 1.12 million FONTS images never holds their 3.3 GB array: written chunk by chunk.
    assert costs.fonts_data(rates, "cpu", cfg).mem_mb < 2000
    big = [40_000] * seeds
    assert (costs.train(rates, "cuda", cfg, "fashion", "adversarial", big).seconds
            < costs.train(rates, "cpu", cfg, "fashion", "adversarial", big).seconds / 10)


def test_rates_without_a_device_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text('{"cpu": {}}')
    with pytest.raises(ValueError, match="no rates for \\['cuda'\\].*benchmarks/costs.py"):
        costs.load_rates(path)


# --- the fit to a run's job benchmarks, and the check of requests against use ---------------------------------

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def fake_run(root: Path, cfg: dict, rates: dict, slow: float = 1.0) -> None:
    """A run of the fashion-only quick config whose every job took exactly what `rates` predict on the CPU (the
    PGD job at N = 4000 `slow` times that), with Fashion-MNIST's split sizes in its data file."""
    bench = root / "results" / "benchmarks"
    (root / "results" / "data").mkdir(parents=True)
    with h5py.File(root / "results" / "data" / "fashion.h5", "w") as h5:
        h5["train/labels"] = np.zeros(60_000, dtype=np.int64)
        h5["test/labels"] = np.zeros(10_000, dtype=np.int64)

    def write(rel: str, cost: costs.Cost) -> None:
        path = bench / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"{cost.seconds}\t0\t{cost.mem_mb}\t1\t1\t1\t0\t0\t90\t{cost.seconds}\n")

    seeds = len(cfg["classifiers"]["seeds"])
    for mode in ("normal", "adversarial"):
        for n in cfg["classifiers"]["n_train"]:
            write(f"train_classifier/fashion/{mode}/N{n}.tsv", costs.train(rates, "cpu", cfg, "fashion", mode, [n] * seeds))
            pgd = costs.attack(rates, "cpu", cfg, "pgd", seeds)
            write(f"attack_pgd/fashion/{mode}/N{n}.tsv",
                  costs.Cost(pgd.seconds * (slow if n == 4000 else 1.0), pgd.mem_mb))
    write("train_vaegan/fashion/class0.tsv", costs.vaegan(rates, "cpu", cfg, "fashion"))
    write("judge_onmanifold/fashion/normal/N500.tsv", costs.small(rates, "cpu", "judge_onmanifold"))


def fashion_config(tmp_path: Path) -> list[Path]:
    extra = tmp_path / "fashion.yaml"
    extra.write_text("datasets: [fashion]\nclassifiers: {modes: [normal, adversarial]}\n")
    return [ROOT / "config" / "config.yaml", extra]


def test_the_fit_recovers_the_rates_a_run_was_made_with(tmp_path: Path) -> None:
    files = fashion_config(tmp_path)
    cfg, rates = fit_tool.run_config(files), synthetic_rates()
    fake_run(tmp_path, cfg, rates)
    fitted = fit_tool.fit([(tmp_path, files)])
    assert fitted["startup_s"] == pytest.approx(5.5)  # the shortest job: judging one setting (5 + 0.5 s)
    # Start-up taken as 5.5 s instead of 5 moves the rates a little; training's also holds its evaluation, which
    # the prediction adds again: at N = 500, 2.1 of 47 s, a rate 4% high, on the safe side.
    assert 4e-3 < fitted["train_s"]["adversarial"] < 4e-3 * 1.05
    assert fitted["attack_s"]["pgd"] == pytest.approx(1e-4, rel=0.03)
    assert fitted["memory"]["train_classifier"]["base_mb"] == pytest.approx(500.0)
    assert fitted["reference"]["training_steps"]["adversarial"] == 10


def test_the_check_passes_a_run_within_its_requests_and_fails_one_beyond(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    files = fashion_config(tmp_path / "cfg")
    cfg, rates = fit_tool.run_config(files), synthetic_rates()
    fake_run(tmp_path / "ok", cfg, rates)
    table = fit_tool.check(tmp_path / "ok", files, rates)
    assert (table["time_asked_over_used_min"] >= 1).all() and (table["memory_asked_over_used_min"] >= 1).all()
    assert table.loc["train_classifier", "time_used_over_predicted_max"] == pytest.approx(1.0)
    fake_run(tmp_path / "slow", cfg, rates, slow=20.0)  # one PGD job: 500 s, asked 5 min (the floor)
    table = fit_tool.check(tmp_path / "slow", files, rates)
    assert table.loc["attack_pgd", "time_asked_over_used_min"] < 1
    assert (table.drop("attack_pgd")["time_asked_over_used_min"] >= 1).all()


def test_a_plan_is_projected_at_what_a_run_used_over_its_predictions(tmp_path: Path) -> None:
    files = fashion_config(tmp_path)
    cfg, rates = fit_tool.run_config(files), costs.load_rates()
    fake_run(tmp_path / "run", cfg, rates, slow=4.0)  # the two PGD jobs at N = 4000 of six took 4 times theirs
    plan = pd.DataFrame([dict(rule="train_classifier", dataset="fashion", mode="normal", n=8000),
                         dict(rule="attack_pgd", dataset="fashion", mode="adversarial", n=8000),
                         dict(rule="distances", dataset="fashion", mode="", n=0),
                         dict(rule="metrics_table", dataset="", mode="", n=0)])
    table, used = fit_tool.project(tmp_path / "run", files, files, plan, rates)
    assert list(table.index) == ["attack_pgd", "distances", "train_classifier"]  # no prediction, no row
    assert table.loc["train_classifier", "used_over_predicted"] == pytest.approx(1.0)
    assert table.loc["attack_pgd", "used_over_predicted"] == pytest.approx((4 * 1 + 2 * 4.0) / 6)
    assert table.loc["distances", "used_over_predicted"] == 1.0  # not in the run: taken at its prediction
    assert used == pytest.approx(fit_tool.used_over_predicted(tmp_path / "run", cfg, rates)["used_s"].sum())
    seeds = len(cfg["classifiers"]["seeds"])
    train = costs.train(rates, "cpu", cfg, "fashion", "normal", [8000] * seeds)
    assert table.loc["train_classifier", "projected_s"] == pytest.approx(train.seconds)
    pgd = costs.attack(rates, "cpu", cfg, "pgd", seeds)
    assert table.loc["attack_pgd", "projected_s"] == pytest.approx(2 * pgd.seconds)


# --- the plan's requests --------------------------------------------------------------------------------------

DRY_RUN = """\
Building DAG of jobs...

rule train_classifier:
    input: results/data/fonts.h5
    wildcards: dataset=fonts, mode=normal, n=250
    priority: 250
    threads: 2
    resources: tmpdir=<TBD>, runtime=12, gpu=1, mem_mb=3100, mem=3.1 GB, mem_mib=2957

localrule metrics_table:
    input: a, b
    resources: tmpdir=<TBD>

rule attack_pgd:
    wildcards: dataset=fonts, mode=normal, n=250
    threads: 2
    resources: tmpdir=<TBD>, runtime=5, gpu=1, mem_mb=2600

[Mon Dec  7 03:40:51 2026] Group job model (jobs in lexicogr. order):

    [Mon Dec  7 03:40:51 2026]
    rule attack_pgd:
        jobid: 312
        wildcards: dataset=fonts, mode=normal, n=500
        resources: tmpdir=/tmp, mem_mb=4800, mem=4.8 GB, runtime=5, gpu=1
Shell command: None

    [Mon Dec  7 03:40:51 2026]
    rule train_classifier:
        jobid: 132
        wildcards: dataset=fonts, mode=normal, n=500
        resources: tmpdir=/tmp, mem_mb=4500, mem=4.5 GB, runtime=7, gpu=1
Shell command: None

[Mon Dec  7 03:40:51 2026] Group job model (jobs in lexicogr. order):

    [Mon Dec  7 03:40:51 2026]
    rule train_classifier:
        jobid: 133
        wildcards: dataset=fonts, mode=normal, n=1000
        resources: tmpdir=/tmp, mem_mb=4500, mem=4.5 GB, runtime=9, gpu=1
Shell command: None
"""


def test_a_dry_run_is_read_job_by_job() -> None:
    jobs = requests_tool.parse_plan(DRY_RUN)
    assert list(jobs["rule"]) == ["train_classifier", "metrics_table", "attack_pgd"] + [
        "attack_pgd", "train_classifier", "train_classifier"]
    first = jobs.iloc[0]
    assert (first["dataset"], first["mode"], first["n"], first["threads"], first["runtime"], first["mem_mb"],
            first["gpu"]) == ("fonts", "normal", 250, 2, 12, 3100, 1)
    # The indented members of a group job are read like the others, and each group is one submission.
    assert list(jobs["group"]) == [-1, -1, -1, 0, 0, 1]
    assert list(jobs["n"]) == [250, 0, 250, 500, 500, 1000] and list(jobs["runtime"])[3:] == [5, 7, 9]
    assert requests_tool.submissions(jobs) == 5
    assert "6 jobs, 5 asking for a GPU" in requests_tool.totals(jobs)
    assert "submitted as 5 Slurm jobs (2 groups of 3 jobs)" in requests_tool.totals(jobs)
    alone = jobs[jobs["group"] < 0]
    assert requests_tool.submissions(alone) == 3 and "submitted as" not in requests_tool.totals(alone)
    assert {"metrics_table", "fetch_fonts", "torchvision_data", "all"} <= requests_tool.local_rules()
    with pytest.raises(SystemExit, match="planned no jobs"):
        requests_tool.parse_plan("Building DAG of jobs...\nNothing to be done.\n")


@pytest.mark.workflow
def test_the_paper_plan_for_a_gpu_asks_every_device_rule_for_one(tmp_path: Path) -> None:
    jobs = requests_tool.plan(["--profile", str(ROOT / "slurm"), "--configfile", str(ROOT / "config" / "paper.yaml"),
                               "--config", "device=cuda", "--directory", str(tmp_path)])
    device_rules = {"train_classifier", "attack_pgd", "attack_pgd_sign", "attack_onmanifold",
                    "attack_onmanifold_learned", "train_vaegan", "vaegan_quality", "train_judge", "judge_onmanifold",
                    "distances", "distances_seed"}
    planned = jobs[jobs["rule"].isin(device_rules)]
    assert len(planned) > 600 and (planned["gpu"] == 1).all()
    assert (jobs["group"] < 0).all()  # grouped submission is off unless its block is uncommented
    assert (jobs[~jobs["rule"].isin(device_rules)]["gpu"] == 0).all()
    train = jobs[(jobs["rule"] == "train_classifier") & (jobs["dataset"] == "fonts") & (jobs["mode"] == "adversarial")]
    by_n = train.set_index("n")["runtime"].sort_index()
    assert by_n.is_monotonic_increasing and by_n.iloc[-1] > by_n.iloc[0]
    assert (jobs["runtime"][jobs["rule"].isin(device_rules)] >= 5).all()
    cpu = requests_tool.plan(["--profile", str(ROOT / "slurm"), "--configfile", str(ROOT / "config" / "paper.yaml"),
                              "--directory", str(tmp_path)])
    assert (cpu["gpu"] == 0).all()
    cpu_train = cpu[(cpu["rule"] == "train_classifier") & (cpu["dataset"] == "fonts") & (cpu["mode"] == "adversarial")]
    assert cpu_train["runtime"].max() > 10 * by_n.max()


@pytest.mark.workflow
def test_the_grouped_paper_plan_submits_a_setting_in_two_jobs(tmp_path: Path) -> None:
    """The profile's grouped-submission block: a setting's training with its L_inf attacks, its on-manifold
    attacks with their judge; the same jobs as without it, in fewer than half as many submissions."""
    args = ["--profile", str(ROOT / "slurm"), "--configfile", str(ROOT / "config" / "paper.yaml"), "--config",
            "device=cuda", "--directory", str(tmp_path)]
    grouped = requests_tool.grouped_submission()
    assert grouped[grouped.index("--resources") + 1] == "gpu=1"
    jobs = requests_tool.plan(args + grouped)
    members = jobs[jobs["group"] >= 0].groupby("group")["rule"].agg(lambda rules: ",".join(sorted(rules)))
    assert set(members) == {"attack_pgd,attack_pgd_sign,train_classifier",
                            "attack_onmanifold,judge_onmanifold",
                            "attack_onmanifold,attack_onmanifold_learned,judge_onmanifold"}
    alone = requests_tool.plan(args)
    assert len(jobs) == len(alone) and sorted(jobs["rule"]) == sorted(alone["rule"])
    assert requests_tool.submissions(jobs) < len(jobs) / 2 and requests_tool.submissions(alone) == len(alone)


def test_a_modes_own_grid_replaces_n_train_for_that_mode_alone() -> None:
    from manifold_robustness.grid import largest_n, n_grid

    cfg = {"classifiers": {"n_train": [500, 250], "n_train_per_mode": {"fonts": {"normal": [20000, 250]}}}}
    assert n_grid(cfg, "fonts", "normal") == [250, 20000]
    assert n_grid(cfg, "fonts", "adversarial") == [250, 500]
    assert n_grid(cfg, "fashion", "normal") == [250, 500]
    assert largest_n(cfg) == 20000
    assert largest_n({"classifiers": {"n_train": [500, 250]}}) == 500
