"""benchmarks/stage_times.py sums snakemake's job benchmarks by stage (and by training mode);
benchmarks/paper_estimate.py counts the paper grid's FLOPs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_times", ROOT / "benchmarks" / "stage_times.py")
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(root: Path, rel: str, seconds: float, cpu: float, rss: float = 1.0) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_sums_by_rule_and_by_mode(tmp_path: Path) -> None:
    bench(tmp_path, "train_classifier/fonts/normal/N500/seed0.tsv", 2.0, 1.5)
    bench(tmp_path, "train_classifier/fonts/adversarial/N500/seed0.tsv", 10.0, 9.0)
    bench(tmp_path, "train_classifier/fonts/adversarial/N500/seed1.tsv", 12.0, 11.0)
    bench(tmp_path, "distances/fonts.tsv", 6.0, 5.0)
    jobs = stage_times.job_times(tmp_path)
    table = stage_times.by_stage(jobs, by_mode=False)
    assert list(table.index) == ["train_classifier", "distances"]
    assert table.loc["train_classifier", "wall_s"] == pytest.approx(24.0)
    assert table.loc["train_classifier", "cpu_s"] == pytest.approx(21.5)
    assert table.loc["distances", "jobs"] == 1 and table["share"].sum() == pytest.approx(1.0)
    modes = stage_times.by_stage(jobs, by_mode=True)
    assert modes.loc[("train_classifier", "adversarial"), "wall_s"] == pytest.approx(22.0)
    assert modes.loc[("distances", ""), "jobs"] == 1


def test_per_job_kind_the_longest_job_and_the_largest_memory(tmp_path: Path) -> None:
    bench(tmp_path, "train_classifier/fonts/adversarial/N500.tsv", 10.0, 9.0, rss=700)
    bench(tmp_path, "train_classifier/fonts/adversarial/N4000.tsv", 80.0, 79.0, rss=900)
    bench(tmp_path, "attack_pgd/fonts/adversarial/N500/seed0.tsv", 3.0, 2.0, rss=500)
    bench(tmp_path, "attack_pgd/fonts/adversarial/N500/seed1.tsv", 5.0, 4.0, rss=450)
    bench(tmp_path, "distances/fashion.tsv", 6.0, 5.0, rss=1200)
    table = stage_times.by_job_kind(stage_times.job_times(tmp_path))
    assert table.loc[("train_classifier", "fonts", "adversarial", 4000), "longest_s"] == 80.0
    pgd = table.loc[("attack_pgd", "fonts", "adversarial", 500)]
    assert (pgd["jobs"], pgd["longest_s"], pgd["max_rss_mb"]) == (2, 5.0, 500.0)
    assert table.loc[("distances", "fashion", "", 0), "max_rss_mb"] == 1200.0


def test_no_benchmarks_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no benchmark files"):
        stage_times.job_times(tmp_path)


def test_paper_estimate_counts_flops_by_hand():
    spec = importlib.util.spec_from_file_location("paper_estimate", ROOT / "benchmarks" / "paper_estimate.py")
    paper_estimate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper_estimate)
    from manifold_robustness.models import build_classifier

    # 4x4 stride-2 convs: 14x14x16 outputs of 1x4x4 inputs, 7x7x32 of 16x4x4, 3x3x64 of 32x4x4; then 576->100->10.
    macs = 14 * 14 * 16 * 16 + 7 * 7 * 32 * 256 + 3 * 3 * 64 * 512 + 576 * 100 + 100 * 10
    assert paper_estimate.forward_flops(build_classifier(), torch.zeros(1, 1, 28, 28)) == 2 * macs
    # A transposed conv: every one of the 7x7x8 inputs feeds 4x4 outputs of each of 3 channels.
    up = torch.nn.ConvTranspose2d(8, 3, kernel_size=4, stride=2, padding=1)
    assert paper_estimate.forward_flops(up, torch.zeros(1, 8, 7, 7)) == 2 * 7 * 7 * 8 * 3 * 16
    # The plan's decoder-bound stages shrink when the decoders run faster; nothing else changes.
    cfg = paper_estimate.load_config(ROOT / "config" / "paper.yaml")
    slow, fast = paper_estimate.plan(cfg), paper_estimate.plan(cfg, decoder_speedup=4.0)
    assert fast["train normal"] == slow["train normal"] and fast["train adversarial"] == slow["train adversarial"]
    assert fast["train onmanifold_learned"] < slow["train onmanifold_learned"] and fast["vaegan"] == slow["vaegan"] / 4
    # Lock steps: at each step the models not yet done run together, at the measured cost of that many.
    costs = {1: 1.0, 5: 2.0, 10: 4.0}
    assert paper_estimate.step_cost(costs, 3) == pytest.approx(1.5) and paper_estimate.step_cost(costs, 20) == 8.0
    assert paper_estimate.lock_step_seconds(costs, [3, 1]) == pytest.approx(1.25 + 2 * 1.0)
    with pytest.raises(ValueError, match="no measured step cost to interpolate for M = 0"):
        paper_estimate.step_cost(costs, 0)
    # From the measured costs: sequential >= one job per setting >= lock step across N; attacks and VAE-GANs the
    # same in all three; start-ups fewer with one training job per dataset and mode.
    measured = paper_estimate.load_measured()
    tables = {layout: paper_estimate.measured_estimate(cfg, measured, layout) for layout in paper_estimate.LAYOUTS}
    for mode in ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation"):
        key = f"train {mode}"
        assert tables["sequential"][key] >= tables["setting"][key] >= tables["all_n"][key] > 0, mode
    for key in ("attacks", "vaegan"):
        assert tables["sequential"][key] == tables["setting"][key] == tables["all_n"][key]
    saved_jobs = (169 - 13) * measured["startup_s"]  # 169 per-setting training jobs against 13
    assert tables["setting"]["job start-up"] - tables["all_n"]["job start-up"] == pytest.approx(saved_jobs)
    # One job per setting with its 5 seeds stacked: each N's 5 models share every step.
    steps = {n: 20 * -(-n // 100) for n in cfg["classifiers"]["n_train"]}
    normal = 3 * sum(s * paper_estimate.step_cost(measured["steps"]["normal"], 5) for s in steps.values())  # 3 datasets
    assert tables["setting"]["train normal"] == pytest.approx(normal)
