"""benchmarks/stage_times.py sums snakemake's job benchmarks by stage (and by training mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_times", ROOT / "benchmarks" / "stage_times.py")
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(root: Path, rel: str, seconds: float, cpu: float) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")


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


def test_no_benchmarks_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no benchmark files"):
        stage_times.job_times(tmp_path)
