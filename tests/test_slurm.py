"""Snakemake through a real Slurm: `snakemake --profile slurm` (the repository's slurm/config.v8+.yaml) on a
single-node cluster that tests/slurm/cluster.py starts on this machine, installing Debian's slurm-wlm and munge
(and for accounting slurmdbd and mariadb-server) where they are missing. Skipped, with the reason, where the
machine cannot run one (not root, no apt-get, ...)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config, validate

from manifold_robustness import costs

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY = ROOT / "tests" / "config" / "tiny.yaml"

pytestmark = pytest.mark.workflow


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


slurm_cluster = _load("slurm_test_cluster", ROOT / "tests" / "slurm" / "cluster.py")
# The profile with its grouped-submission block uncommented (benchmarks/requests.py reads the block).
grouped_profile = _load("plan_requests", ROOT / "benchmarks" / "requests.py").grouped_profile

# Job status checked 5 s after submission instead of 40; successful jobs' Slurm logs kept as evidence. Job
# status comes from sacct, the profile's (the plugin's) default, where the test cluster keeps accounting, else
# from squeue (profile_run).
TEST_OPTIONS = ("--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs")
# Rules of the tiny DAG that run as Slurm jobs, and localrules of the Snakefile, which run on the submitting host.
REMOTE = {"fonts_data", "train_vaegan", "vaegan_quality", "train_classifier", "attack_pgd", "attack_pgd_sign",
          "attack_onmanifold", "attack_onmanifold_learned", "distances", "train_judge", "judge_onmanifold"}
LOCAL = {"metrics_table", "claims", "plot_fig1", "plot_fig2", "plot_fig3", "plot_fig4", "all"}
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def test_profile_resolves_from_the_repository_root(monkeypatch) -> None:
    """`snakemake --profile slurm` typed in the repository root finds slurm/config.v8+.yaml (snakemake's own
    lookup), and the profile submits through the plugin with retries, leaving partition and account open."""
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(ROOT)
    _, path = get_profile_dir("slurm")
    assert path.resolve() == ROOT / "slurm" / "config.v8+.yaml"
    profile = yaml.safe_load(path.read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["show-failed-logs"] is True
    assert not {"slurm_partition", "slurm_account"} & set(profile["default-resources"])
    assert "slurm-status-command" not in profile  # the plugin's default, sacct, for clusters with accounting


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.Unavailable as e:
        pytest.skip(f"no Slurm cluster on this machine: {e}")
    pids = dict(running.pids)
    yield running
    slurm_cluster.stop(running)
    assert not [name for name, pid in pids.items() if slurm_cluster.alive(pid, name)]


def profile_run(cluster, workdir: Path, *args: str, timeout: int,
                grouped: bool = False) -> subprocess.CompletedProcess:
    """`snakemake --profile slurm` in `workdir`, where `slurm` is the repository's profile folder (grouped: a copy
    with its grouped-submission block uncommented). The plugin ignores SIGTERM while it waits on job status, hence
    SIGKILL at the timeout; the cluster's stop then cancels what it left in the queue."""
    if grouped:
        (workdir / "slurm").mkdir()
        (workdir / "slurm" / "config.v8+.yaml").write_text(grouped_profile())
    else:
        (workdir / "slurm").symlink_to(ROOT / "slurm", target_is_directory=True)
    status = [] if cluster.accounting else ["--slurm-status-command", "squeue"]
    cmd = ["timeout", "-s", "KILL", str(timeout), str(SNAKEMAKE), "--profile", "slurm", *TEST_OPTIONS, *status, *args]
    return subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=timeout + 60)


PROFILE_GROUPS = yaml.safe_load(grouped_profile())["groups"]


def submissions(out: str) -> list[tuple[str, str]]:
    """(rule, Slurm job id) of every submission, the rule read from the plugin's log path; for a group job,
    `group_<group>_<its rules, sorted, joined by _>` in place of the rule."""
    return [(name.group(1) or name.group(2), jobid) for jobid, log in SUBMITTED.findall(out)
            for name in [re.search(r"slurm_logs/(?:rule_(\w+)|(group_\w+))/", log)]]


def group_folder(group: str) -> str:
    """The name a group job of the profile's `group` goes by when all its rules are members."""
    return f"group_{group}_" + "_".join(sorted(rule for rule, g in PROFILE_GROUPS.items() if g == group))


def job_states(cluster) -> dict[str, str]:
    """Slurm job id -> state of every job the cluster has seen (MinJobAge keeps finished ones listed)."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T")
    return dict(line.split("|") for line in out.split())


def tiny_request(rule_cost, attempt: int = 1) -> tuple[int, int]:
    """Minutes and MB the `attempt`-th try of a job of the tiny config asks for, `rule_cost(rates, cfg)` its
    predicted cost."""
    cfg = tiny_config()
    return costs.request(rule_cost(costs.load_rates(), cfg), attempt, cfg["resources"])


def tiny_config() -> dict:
    """The config a run with the tiny config file sees: the defaults, the file on top, validated."""
    cfg: dict = {}
    for path in (ROOT / "config" / "config.yaml", TINY):
        update_config(cfg, yaml.safe_load(path.read_text()))
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    return cfg


# The most memory a job of the tiny config asks for (MB): `distances` or a training job.
MOST_MEMORY_ASKED = max(
    tiny_request(lambda rates, cfg: costs.distances(rates, "cpu", cfg, "fonts"))[1],
    tiny_request(lambda rates, cfg: costs.train(rates, "cpu", cfg, "fonts", "onmanifold_learned", [300]))[1],
    tiny_request(lambda rates, cfg: costs.judge(rates, "cpu", cfg, "fonts"))[1])


def fitting_memory(cluster) -> list[str]:
    """On a node with less memory than a rule asks for, ask for half the node instead (the tiny config needs far
    less): Slurm refuses a job that no node can hold."""
    if cluster.memory_mb >= MOST_MEMORY_ASKED:
        return []
    return ["--set-resources", *(f"{rule}:mem_mb={cluster.memory_mb // 2}" for rule in sorted(REMOTE))]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("slurm_workflow")
    report = ["--slurm-efficiency-report", "--slurm-efficiency-report-path", str(workdir / "efficiency")]
    proc = profile_run(cluster, workdir, "-s", str(ROOT / "Snakefile"), "--configfile", str(TINY),
                       *fitting_memory(cluster), *(report if cluster.accounting else []), timeout=780, grouped=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:] + slurm_cluster.logs(cluster)[-3000:]
    return workdir, out


def test_workflow_runs_through_slurm(cluster, slurm_run: tuple[Path, str]) -> None:
    """The tiny config runs to the end through the profile with its grouped submission turned on."""
    workdir, out = slurm_run
    assert re.search(r"Using profiles? slurm\b", out)
    jobs = submissions(out)
    ids = [jobid for _, jobid in jobs]
    assert len(ids) == len(set(ids))
    # Every rule that is not local runs as a Slurm job: alone, or in one of the profile's groups, one group job
    # per setting (dataset, mode, N) and group, holding every rule of its group.
    grid = yaml.safe_load(TINY.read_text())["classifiers"]
    settings = len(grid["modes"]) * len(grid["n_train"])
    names = [name for name, _ in jobs]
    assert {name for name in names if not name.startswith("group_")} == REMOTE - set(PROFILE_GROUPS)
    assert {name: names.count(name) for name in names if name.startswith("group_")} == {
        group_folder(group): settings for group in set(PROFILE_GROUPS.values())}
    assert not set(names) & LOCAL
    states = job_states(cluster)
    assert {states.get(jobid) for jobid in ids} == {"COMPLETED"}
    logs = {path.stem for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert logs == set(ids)
    table = pd.read_csv(workdir / "results/tables/metrics.csv")
    assert len(table) == len(grid["modes"]) * len(grid["n_train"]) * len(grid["seeds"])
    assert table["test_error"].between(0, 1).all()
    for name in ("fig1_examples", "fig2_manifold_distance", "fig3_onmanifold_robustness", "fig4_regular_robustness"):
        assert (workdir / f"results/figures/{name}.pdf").stat().st_size > 1000, name


def test_rule_resources_reach_sbatch(cluster, slurm_run: tuple[Path, str]) -> None:
    """The distances job asks for the runtime and memory the cost model predicts for it (at least the 5-minute
    floor) and one thread; with device cpu, no GPU."""
    _, out = slurm_run
    jobid = next(jobid for rule, jobid in submissions(out) if rule == "distances")
    job = dict(item.split("=", 1) for item in cluster.run("scontrol", "show", "job", "-o", jobid).split()
               if "=" in item)
    minutes, mem = tiny_request(lambda rates, cfg: costs.distances(rates, "cpu", cfg, "fonts"))
    assert minutes >= 5 and job["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00"
    assert job["NumCPUs"] == "1"
    asked = cluster.memory_mb // 2 if fitting_memory(cluster) else mem
    assert job["MinMemoryNode"] == f"{asked}M"
    assert "gres/gpu" not in job["TRES"]


def test_a_group_job_asks_for_what_its_members_ask(cluster, slurm_run: tuple[Path, str]) -> None:
    """A setting's training and its two L_inf attacks go as one Slurm job (the profile's group `model`): the
    attacks run side by side after the training (on the CPU, no GPU to take turns on), so it asks for the
    training's time plus the longer attack's, the more memory of the two stages and the attacks' threads
    together."""
    _, out = slurm_run
    if fitting_memory(cluster):
        pytest.skip("this node holds less than the tiny config's requests; the test run asked for half the node")
    cfg = tiny_config()
    grid = cfg["classifiers"]
    pgd, pgd_sign = (tiny_request(lambda rates, cfg, kind=kind: costs.attack(rates, "cpu", cfg, kind, 1))
                     for kind in ("pgd", "pgd_sign"))
    expected = set()
    for mode in grid["modes"]:
        for n in grid["n_train"]:
            train = tiny_request(lambda rates, cfg: costs.train(rates, "cpu", cfg, "fonts", mode, [n]))
            expected.add((train[0] + max(pgd[0], pgd_sign[0]), max(train[1], pgd[1] + pgd_sign[1])))
    asked = set()
    for name, jobid in submissions(out):
        if name == group_folder("model"):
            job = dict(item.split("=", 1) for item in cluster.run("scontrol", "show", "job", "-o", jobid).split()
                       if "=" in item)
            hours, minutes, _ = (int(part) for part in job["TimeLimit"].split(":"))
            asked.add((60 * hours + minutes, int(job["MinMemoryNode"].rstrip("M"))))
            # Both attacks run with the PGD section's threads (attack_pgd_sign is attack_pgd's rule reused).
            assert int(job["NumCPUs"]) == max(grid["threads"], 2 * cfg["pgd"]["threads"])
    assert asked and asked <= expected, (asked, expected)


def accounted(cluster, ids: list[str]) -> pd.DataFrame:
    """Per Slurm job, from sacct: state, time limit and elapsed time (s), memory asked and the largest resident
    set of its steps (MB)."""
    out = cluster.run("sacct", "-n", "-P", "--units=M", "-j", ",".join(ids),
                      "-o", "JobID,State,TimelimitRaw,ElapsedRaw,ReqMem,MaxRSS")
    rows = [line.split("|") for line in out.splitlines() if line]
    table = pd.DataFrame(rows, columns=["step", "state", "limit_min", "elapsed_s", "req_mem", "max_rss"])
    table["job"] = table["step"].str.split(".").str[0]
    megabytes = lambda col: pd.to_numeric(col.str.rstrip("M").replace("", "0"))  # noqa: E731
    table["req_mem"], table["max_rss"] = megabytes(table["req_mem"]), megabytes(table["max_rss"])
    jobs = table[table["step"] == table["job"]].set_index("job")[["state", "limit_min", "elapsed_s", "req_mem"]]
    jobs["max_rss"] = table.groupby("job")["max_rss"].max()
    return jobs.astype({"limit_min": int, "elapsed_s": int})


def test_accounting_shows_every_job_within_what_it_asked(cluster, slurm_run: tuple[Path, str]) -> None:
    """Where the cluster keeps accounting, sacct has every job of the run: completed, inside its time limit, its
    peak memory inside what it asked for (this cluster does not enforce memory, so only the record shows an
    excess); and the plugin's efficiency report, which reads sacct, names the jobs of the run."""
    if not cluster.accounting:
        pytest.skip(f"the test cluster keeps no accounting: {cluster.no_accounting}")
    workdir, out = slurm_run
    jobs = submissions(out)
    table = accounted(cluster, [jobid for _, jobid in jobs])
    assert sorted(table.index) == sorted(jobid for _, jobid in jobs)
    assert (table["state"] == "COMPLETED").all(), table
    assert (table["elapsed_s"] < 60 * table["limit_min"]).all(), table
    assert (table["max_rss"] > 0).all() and (table["max_rss"] <= table["req_mem"]).all(), table
    report = pd.read_csv(next((workdir / "efficiency").glob("efficiency_report_*.csv")))
    assert {"CPU Efficiency (%)", "Memory Usage (%)"} <= set(report.columns)
    assert set(report["MainJobID"].astype(str)) == set(table.index)


def test_cuda_config_asks_slurm_for_a_gpu(cluster, slurm_run: tuple[Path, str], tmp_path: Path) -> None:
    """With `device: cuda`, a training job asks for one GPU: sbatch gets --gpus=1 and, the test node having
    none, refuses the job; submitted alone (the profile's default), sbatch's reason reaches the user."""
    workdir, _ = slurm_run
    (tmp_path / "results" / "data").mkdir(parents=True)
    shutil.copy2(workdir / "results/data/fonts.h5", tmp_path / "results/data/fonts.h5")
    proc = profile_run(cluster, tmp_path, "results/classifiers/fonts/normal/N150/seed0/model.pt", "-s",
                       str(ROOT / "Snakefile"), "--configfile", str(TINY), "--config", "device=cuda", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    calls = re.findall(r"^\s*sbatch --.*$", out, flags=re.MULTILINE)
    assert len(calls) == 3, out[-3000:]  # the first try and the profile's two retries
    assert all("--gpus=1" in call and "rule_train_classifier" in call for call in calls)
    # Each try asks for the GPU's prediction, and each retry twice as much time and memory as the try before.
    asked = [(int(re.search(r" -t '?(\d+)", call).group(1)), int(re.search(r" --mem '?(\d+)", call).group(1)))
             for call in calls]
    gpu = [tiny_request(lambda rates, cfg: costs.train(rates, "cuda", cfg, "fonts", "normal", [150]), attempt)
           for attempt in (1, 2, 3)]
    assert asked == gpu and gpu[2][0] == 4 * gpu[0][0], calls
    assert "Invalid generic resource" in out


FAULTY = """\
rule all:
    input:
        "flaky.txt",
        "doomed.txt",


rule flaky:
    output:
        "flaky.txt",
    log:
        "logs/flaky.log",
    resources:
        runtime=5,
        mem_mb=100,
        attempt=lambda wildcards, attempt: attempt,
    shell:
        "echo attempt {resources.attempt} > {log}; test {resources.attempt} -ge 2; echo ok > {output}"


rule doomed:
    output:
        "doomed.txt",
    log:
        "logs/doomed.log",
    resources:
        runtime=5,
        mem_mb=100,
        attempt=lambda wildcards, attempt: attempt,
    shell:
        "echo doomed job, attempt {resources.attempt} > {log}; exit 3"
"""


def test_failed_job_is_retried_and_its_log_shown(cluster, tmp_path: Path) -> None:
    """The profile's retries: 2 submits a failed job again, twice; a job that fails every time stops the run
    with its log printed."""
    (tmp_path / "Snakefile").write_text(FAULTY)
    proc = profile_run(cluster, tmp_path, "--keep-going", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    jobs = submissions(out)
    states = job_states(cluster)
    flaky = [states[jobid] for rule, jobid in jobs if rule == "flaky"]
    doomed = [states[jobid] for rule, jobid in jobs if rule == "doomed"]
    assert flaky == ["FAILED", "COMPLETED"], out[-3000:]
    assert doomed == ["FAILED"] * 3, out[-3000:]
    assert (tmp_path / "flaky.txt").read_text() == "ok\n"
    assert "doomed job, attempt 3" in out
    assert not (tmp_path / "doomed.txt").exists()
