"""Snakemake through a real Slurm: `snakemake --profile slurm` (the repository's slurm/config.v8+.yaml) on a
single-node cluster that tests/slurm/cluster.py starts on this machine, installing Debian's slurm-wlm and munge
where they are missing. Skipped, with the reason, where the machine cannot run one (not root, no apt-get, ...)."""

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


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("slurm_test_cluster", ROOT / "tests" / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


slurm_cluster = _load_cluster_module()

# The test cluster keeps no accounting, so job status comes from squeue (the profile keeps the plugin's sacct
# default for real clusters), checked 5 s after submission instead of 40; successful jobs' Slurm logs are kept
# as evidence.
TEST_OPTIONS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
                "--slurm-keep-successful-logs")
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


def profile_run(cluster, workdir: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`snakemake --profile slurm` in `workdir`, where `slurm` is the repository's profile folder. The plugin
    ignores SIGTERM while it waits on job status, hence SIGKILL at the timeout; the cluster's stop then cancels
    what it left in the queue."""
    (workdir / "slurm").symlink_to(ROOT / "slurm", target_is_directory=True)
    cmd = ["timeout", "-s", "KILL", str(timeout), str(SNAKEMAKE), "--profile", "slurm", *TEST_OPTIONS, *args]
    return subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=timeout + 60)


def submissions(out: str) -> list[tuple[str, str]]:
    """(rule, Slurm job id) of every submission, the rule read from the plugin's log path."""
    return [(re.search(r"/rule_(\w+)/", log).group(1), jobid) for jobid, log in SUBMITTED.findall(out)]


def job_states(cluster) -> dict[str, str]:
    """Slurm job id -> state of every job the cluster has seen (MinJobAge keeps finished ones listed)."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T")
    return dict(line.split("|") for line in out.split())


def tiny_request(rule_cost, attempt: int = 1) -> tuple[int, int]:
    """Minutes and MB the `attempt`-th try of a job of the tiny config asks for, `rule_cost(rates, cfg)` its
    predicted cost."""
    cfg: dict = {}
    for path in (ROOT / "config" / "config.yaml", TINY):
        update_config(cfg, yaml.safe_load(path.read_text()))
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    return costs.request(rule_cost(costs.load_rates(), cfg), attempt, cfg["resources"])


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
    proc = profile_run(cluster, workdir, "-s", str(ROOT / "Snakefile"), "--configfile", str(TINY),
                       *fitting_memory(cluster), timeout=780)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:] + slurm_cluster.logs(cluster)[-3000:]
    return workdir, out


def test_workflow_runs_through_slurm(cluster, slurm_run: tuple[Path, str]) -> None:
    workdir, out = slurm_run
    assert re.search(r"Using profiles? slurm\b", out)
    jobs = submissions(out)
    ids = [jobid for _, jobid in jobs]
    assert len(ids) == len(set(ids)) >= 50
    assert {rule for rule, _ in jobs} >= REMOTE and not {rule for rule, _ in jobs} & LOCAL
    states = job_states(cluster)
    assert {states.get(jobid) for jobid in ids} == {"COMPLETED"}
    logs = {path.stem for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert logs == set(ids)
    grid = yaml.safe_load(TINY.read_text())["classifiers"]
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


def test_cuda_config_asks_slurm_for_a_gpu(cluster, slurm_run: tuple[Path, str], tmp_path: Path) -> None:
    """With `device: cuda`, a training job asks for one GPU: sbatch gets --gpus=1 and, the test node having
    none, refuses the job."""
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
