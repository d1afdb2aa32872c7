"""End to end: snakemake on the tiny config in a temporary directory, data to Figs. 1, 3 and 4."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml

from manifold_robustness import datasets
from manifold_robustness.data import read_ranges
from manifold_robustness.models import load_classifier
from manifold_robustness.tables import COLUMNS
from manifold_robustness.training import MODES

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY = ROOT / "tests" / "config" / "tiny.yaml"

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, config: Path = TINY) -> subprocess.CompletedProcess:
    """Run snakemake from the repository's Snakefile with `workdir` as working directory."""
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    proc = snakemake(workdir, "--show-failed-logs")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


def test_run_produces_table_and_figures(finished_run: Path) -> None:
    cfg = tiny_config()
    df = pd.read_csv(finished_run / "results/tables/metrics.csv")
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    n_models = len(cfg["classifiers"]["modes"]) * len(cfg["classifiers"]["n_train"]) * len(cfg["classifiers"]["seeds"])
    assert len(df) == n_models
    assert set(df["mode"]) == set(MODES)
    rates = [f"{attack}_{kind}" for attack in ("pgd", "onmanifold", "onmanifold_learned") for kind in ("success",
                                                                                                      "success_any")]
    for col in ["test_error", *rates]:
        assert df[col].between(0, 1).all(), col
    for attack in ("pgd", "onmanifold", "onmanifold_learned"):
        assert (df[f"{attack}_success_any"] >= df[f"{attack}_success"] - 1e-9).all()
    assert set(df["onmanifold_manifold"]) == {"true manifold"}  # FONTS: the main on-manifold attack uses the true decoder
    for name in ("fig1_examples", "fig2_manifold_distance", "fig3_onmanifold_robustness", "fig4_regular_robustness"):
        for ext in ("pdf", "png"):
            assert (finished_run / f"results/figures/{name}.{ext}").stat().st_size > 1000, name
    quality = pd.read_csv(finished_run / "results/tables/vaegan_fonts.csv")
    assert list(quality["label"]) == list(range(10))
    assert quality["sample_accuracy"].between(0, 1).all() and (quality["reconstruction_error_test"] > 0).all()
    assert (finished_run / "results/figures/vaegan_samples_fonts.png").stat().st_size > 1000


def test_artifacts_follow_the_documented_layout(finished_run: Path) -> None:
    with h5py.File(finished_run / "results/data/fonts.h5") as h5:
        for split in ("train", "test"):
            assert h5[f"{split}/images"].dtype == np.float32 and h5[f"{split}/images"].shape[1:] == (1, 28, 28)
            assert h5[f"{split}/labels"].dtype == np.int64
            assert h5[f"{split}/codes"].shape[1:] == (6,)
            assert h5[f"{split}/font"].dtype == np.int64
        assert h5["glyphs/images"].shape[1:] == (10, 28, 28)
    run = finished_run / "results/attacks/fonts/normal/N150/seed0/pgd.h5"
    with h5py.File(run) as h5:
        n, restarts = h5["success"].shape
        assert n == 60 and restarts == 2
        adv = h5["adversarial"][()]
        assert adv.min() >= 0 and adv.max() <= 1
    log = (finished_run / "logs/train_classifier/fonts/adversarial/N300.log").read_text()  # one job per setting
    assert all(f"N=300 seed={seed}: test error" in log for seed in tiny_config()["classifiers"]["seeds"])
    low, high = read_ranges(finished_run / "results/data/fonts.h5").low, read_ranges(
        finished_run / "results/data/fonts.h5").high
    assert read_ranges(finished_run / "results/data/fonts.h5").convention == tiny_config()["fonts"]["geometry"]
    attacks = finished_run / "results/attacks/fonts/normal/N150/seed0"
    with h5py.File(attacks / "onmanifold.h5") as h5:
        assert h5.attrs["config.manifold"] == "true" and h5["success"].shape == (40, 2)
        codes = torch.from_numpy(h5["adversarial_latent"][()])
        assert ((codes >= low - 1e-6) & (codes <= high + 1e-6)).all()
        assert h5["adversarial"].shape == (40, 1, 28, 28)
    with h5py.File(attacks / "onmanifold_learned.h5") as h5:
        assert h5.attrs["config.manifold"] == "learned"
        assert np.abs(h5["adversarial_latent"][()]).max() <= 2.0
    for label in range(10):
        assert (finished_run / f"results/vaegan/fonts/class{label}.pt").exists()


def test_distances_separate_regular_from_on_manifold_examples(finished_run: Path) -> None:
    """FONTS: regular adversarial examples lie far from the true manifold, their projection almost the clean image
    (distance about the perturbation's norm); on-manifold ones lie on it; clean test images exactly on it."""
    with h5py.File(finished_run / "results/distances/fonts.h5") as h5:
        pgd_ok, onm_ok = h5["pgd/success"][()], h5["onmanifold/success"][()]
        pgd, onm = h5["pgd/distance_adversarial"][()][pgd_ok], h5["onmanifold/distance_adversarial"][()][onm_ok]
        ratio = h5["pgd/distance_to_perturbation"][()][pgd_ok]
        clean = h5["pgd/distance_clean"][()]
        every_pgd, every_norm = h5["pgd/distance_adversarial"][()], h5["pgd/perturbation_l2"][()]
        assert h5.attrs["manifold"] == "true" and h5.attrs["seconds"] > 0
    assert len(pgd) and len(onm)
    # Invariants: a clean FONTS image is the decoder's image of its own code, which is the projection's first
    # start, so its distance is 0; the same start bounds any perturbed image's distance by the perturbation's norm.
    assert np.abs(clean).max() < 1e-3
    assert (every_pgd <= every_norm + 1e-4).all() and (ratio <= 1.0 + 1e-4).all()
    # The outcome the figure shows, on this tiny run: regular examples far off the manifold, on-manifold ones on it.
    assert np.median(pgd) > 1.0 > 0.1 > np.median(onm)
    assert 0.5 < np.median(ratio)

def test_second_run_has_nothing_to_do(finished_run: Path) -> None:
    proc = snakemake(finished_run, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_fig4_target_redraws_only_the_figure(finished_run: Path) -> None:
    (finished_run / "results/figures/fig4_regular_robustness.pdf").unlink()
    proc = snakemake(finished_run, "fig4")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "plot_fig4" in out
    for upstream in ("train_classifier", "train_vaegan", "attack_pgd", "attack_onmanifold"):
        assert upstream not in out
    assert (finished_run / "results/figures/fig4_regular_robustness.pdf").exists()


def job_counts(out: str) -> dict[str, int]:
    """Planned jobs per rule, from the "Job stats" table snakemake prints."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in out else ""
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
            if rule != "total"}


def test_claims_report_judges_every_claim(finished_run: Path) -> None:
    """claims.json holds a verdict for every claim on FONTS (run) and says the other datasets were not run."""
    doc = json.loads((finished_run / "results/report/claims.json").read_text())
    assert doc["scale"] == "test" and "test scale" in doc["scale_note"]
    assert [c["id"] for c in doc["claims"]] == [1, 2, 3, 4]
    for claim in doc["claims"]:
        assert claim["verdicts"]["fonts"] in ("PASS", "FAIL", "INCONCLUSIVE"), claim
        assert claim["verdicts"]["emnist"] == claim["verdicts"]["fashion"] == "NOT RUN"
        for check in (c for c in claim["checks"] if c["dataset"] == "fonts"):
            assert check["threshold"] is not None and check["sources"]
    share = next(c for c in doc["claims"][0]["checks"] if c["dataset"] == "fonts")
    assert share["statistic"] == "offmanifold_share" and share["mean"] > 0.5  # regular examples off the manifold
    assert share["verdict"] == "INCONCLUSIVE"  # one seed gives no interval, and the default decides on it
    assert share["paper_value"] == pytest.approx(1.0)  # the paper's FONTS histogram lies wholly beyond 0.1
    for claim in doc["claims"]:  # the calibration: the paper's own numbers pass every claim it makes
        assert claim["paper_verdicts"]["fonts"] == claim["paper_verdicts"]["emnist"] == "PASS", claim["paper_verdicts"]
    md = (finished_run / "results/report/claims.md").read_text()
    assert md.count("## Claim") == 4 and "| fonts |" in md and "On the paper's own numbers" in md


def test_html_report_builds(finished_run: Path) -> None:
    proc = snakemake(finished_run, "--report", "results/report.html")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = (finished_run / "results/report.html").read_text(errors="replace")
    for name in ("fig1_examples", "fig2_manifold_distance", "fig3_onmanifold_robustness", "fig4_regular_robustness",
                 "metrics.csv", "claims.md", "vaegan_samples_fonts"):
        assert name in html, name


def test_a_single_figure_plans_only_what_it_plots(tmp_path: Path) -> None:
    """From scratch, fig3 needs models and on-manifold attacks, but no PGD, distances, other figures or claims."""
    proc = snakemake(tmp_path, "fig3", "--dry-run")
    counts = job_counts(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and counts["plot_fig3"] == 1 and counts["train_classifier"] == 10
    assert counts["attack_onmanifold"] == 10 and counts["metrics_table"] == 1
    for rule in ("attack_pgd", "distances", "plot_fig1", "plot_fig2", "plot_fig4", "claims", "vaegan_quality"):
        assert rule not in counts, rule


def test_plot_parameter_redraws_only_the_figure(finished_run: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg["figures"] = {**cfg["figures"], "onmanifold_success_column": "onmanifold_success_any"}
    changed = write_config(tmp_path / "plot.yaml", cfg)
    figure = finished_run / "results/figures/fig3_onmanifold_robustness.png"
    before = figure.read_bytes()
    try:
        proc = snakemake(finished_run, "fig3", config=changed)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert job_counts(out) == {"plot_fig3": 1, "fig3": 1}
        assert figure.read_bytes() != before
    finally:  # draw it back with the tiny config, for the tests that follow
        assert snakemake(finished_run, "fig3").returncode == 0


def test_attack_parameter_reruns_attacks_not_training(finished_run: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg["pgd"] = {**cfg["pgd"], "steps": 7}
    proc = snakemake(finished_run, "--dry-run", config=write_config(tmp_path / "attack.yaml", cfg))
    counts = job_counts(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and counts["attack_pgd"] == 10
    for rule in ("train_classifier", "train_vaegan", "attack_onmanifold", "attack_onmanifold_learned", "fonts_data"):
        assert rule not in counts, rule
    assert {"metrics_table", "plot_fig4", "distances", "claims"} <= set(counts)


def test_training_setting_retrains_without_rerendering_or_new_vaegans(finished_run: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg["classifiers"] = {**cfg["classifiers"], "epochs": 3}
    proc = snakemake(finished_run, "--dry-run", config=write_config(tmp_path / "train.yaml", cfg))
    counts = job_counts(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and counts["train_classifier"] == 10  # every setting of the tiny grid
    assert {"attack_pgd", "attack_onmanifold", "attack_onmanifold_learned", "metrics_table", "claims"} <= set(counts)
    for rule in ("fonts_data", "train_vaegan"):
        assert rule not in counts, rule


@pytest.mark.parametrize(("change", "trained"), [
    ({"n_train": [150, 300, 600]}, 5),  # a new N: its 5 settings, no other
    ({"n_train": [150]}, 0),  # a dropped N: nothing trains or attacks again
    ({"modes": ["normal", "adversarial", "onmanifold_true", "onmanifold_learned"]}, 0),
    ({"seeds": [0, 1]}, 10),  # a new seed: every setting job, whose unit of work is all its seeds
    ({"n_train_per_mode": {"fonts": {"normal": [150, 300, 600]}}}, 1),  # one mode's own grid: its new N alone
    ({"n_train_per_mode": {"fonts": {"adversarial": [300]}}}, 0),  # one mode without an N: nothing reruns
])
def test_a_grid_change_reruns_only_the_settings_it_changes(finished_run: Path, tmp_path: Path, change: dict,
                                                           trained: int) -> None:
    cfg = tiny_config()
    cfg["classifiers"] = {**cfg["classifiers"], **change}
    proc = snakemake(finished_run, "--dry-run", config=write_config(tmp_path / "grid.yaml", cfg))
    counts = job_counts(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert counts.get("train_classifier", 0) == trained
    assert counts.get("attack_pgd", 0) == trained
    for rule in ("fonts_data", "train_vaegan"):
        assert rule not in counts, rule
    assert "metrics_table" in counts  # the table holds the grid: it is rebuilt in every case


def test_lock_step_all_n_trains_each_mode_in_one_job(finished_run: Path, tmp_path: Path) -> None:
    """With lock_step all_n (and the stacked engine, here on the CPU), one job per (dataset, mode) trains both N
    of the tiny grid in one lock step and writes the same files as the per-setting jobs: each model's metrics
    name the models it trained with, and its test error is the per-setting job's, up to float rounding (the
    stacked engine's grouped kernels sum in another order; tests/test_stacked.py checks it in float64)."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir, symlinks=True)
    cfg = tiny_config()
    cfg["classifiers"] = {**cfg["classifiers"], "lock_step": "all_n", "engine": "stacked"}
    config = write_config(tmp_path / "all_n.yaml", cfg)
    proc = snakemake(workdir, "--forcerun", "train_classifier_all_n", "--until", "train_classifier_all_n",
                     "--show-failed-logs", config=config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert job_counts(proc.stdout + proc.stderr) == {"train_classifier_all_n": 5}
    for mode in MODES:
        for n in (150, 300):
            path = f"results/classifiers/fonts/{mode}/N{n}/seed0/metrics.json"
            new, old = (json.loads((root / path).read_text()) for root in (workdir, finished_run))
            assert new["n_train"] == n and new["engine"] == "stacked"
            assert new["trained_with_n"] == [150, 300] and new["trained_with_seeds"] == [0, 0]
            assert len(new["history"]) == old["epochs"] == 2
            assert abs(new["test_error"] - old["test_error"]) <= 0.1, (mode, n)


@pytest.mark.parametrize("setting", [{"per_font_class_test": 7}, {"geometry": "sampling"}])
def test_fonts_setting_rerenders_the_data(finished_run: Path, tmp_path: Path, setting: dict) -> None:
    cfg = tiny_config()
    assert cfg["fonts"]["per_font_class_test"] == 6 and cfg["fonts"]["geometry"] == "placement"  # the tiny run's
    cfg["fonts"] = {**cfg["fonts"], **setting}
    proc = snakemake(finished_run, "--dry-run", config=write_config(tmp_path / "fonts.yaml", cfg))
    counts = job_counts(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and counts["fonts_data"] == 1
    assert counts["train_vaegan"] == 10 and counts["train_classifier"] == 10  # everything downstream of the data


def test_key_order_in_a_config_file_reruns_nothing(finished_run: Path, tmp_path: Path) -> None:
    def reverse(value):
        return {k: reverse(value[k]) for k in reversed(list(value))} if isinstance(value, dict) else value

    cfg = reverse(tiny_config())
    assert list(cfg) == list(reversed(list(tiny_config())))  # the file really is written in another order
    proc = snakemake(finished_run, "--dry-run", config=ROOT / "tests" / "config" / "tiny.yaml")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    path = tmp_path / "reordered.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(finished_run, "--dry-run", config=path)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, job_counts(proc.stdout)


def interrupt(proc: subprocess.Popen, how: str) -> None:
    """Ctrl-C: SIGINT to snakemake's process group, as a terminal sends it; job-sigkill: SIGKILL to every job
    process snakemake started (as the OOM killer or a node failure would), snakemake itself left running."""
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()


def assert_records_whole(workdir: Path) -> None:
    for record in (workdir / "results/attacks").rglob("*.h5"):
        with h5py.File(record) as h5:
            assert h5["success"].shape[0] == h5["index"].shape[0] == h5["adversarial"].shape[0] > 0, record


@pytest.mark.parametrize("how", ["job-sigkill", "ctrl-c"])
def test_an_interrupted_run_resumes_with_plain_snakemake(finished_run: Path, tmp_path: Path, how: str) -> None:
    """Interrupt a run while an attack record is being written; the next plain `snakemake` finishes the run, and
    every record and model reads back whole."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir, symlinks=True)
    attacks = sorted((workdir / "results/attacks").glob("*/*/*/*"))
    caught = None
    for _ in range(5):
        # The state of a run that got as far as training and the on-manifold attacks: PGD and all after it to do.
        for done in [*(workdir / "results/attacks").rglob("pgd.h5"), *(workdir / "results").glob("*/*.csv")]:
            done.unlink()
        for later in ("distances", "figures", "report"):
            shutil.rmtree(workdir / "results" / later, ignore_errors=True)
        cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(TINY),
               "--cores", "2"]
        # A shell runs background commands with SIGINT ignored, and children inherit that: give snakemake the
        # default disposition a terminal's Ctrl-C meets.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while proc.poll() is None and caught is None:
            caught = next((p for d in attacks for p in d.glob(".pgd.h5.*.tmp")), None)
            time.sleep(0.001)
        if caught is not None:
            interrupt(proc, how)
            if proc.wait(timeout=120) != 0:
                break  # interrupted; a zero exit means the write and the run ended before the signal: try again
            caught = None
        proc.wait(timeout=600)
    assert caught is not None, "no run was interrupted while writing an attack record in 5 tries"
    assert_records_whole(workdir)  # right after the interruption: what carries an artifact's name is complete
    proc = snakemake(workdir, "--show-failed-logs")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout
    assert_records_whole(workdir)
    assert len(list((workdir / "results/attacks").rglob("pgd.h5"))) == 10
    for model in (workdir / "results/classifiers").rglob("model.pt"):
        load_classifier(model)
    df = pd.read_csv(workdir / "results/tables/metrics.csv")
    assert df["pgd_success"].notna().all() and len(df) == 10


def tiny_config() -> dict:
    """A fresh copy of the tiny configuration, to modify."""
    return yaml.safe_load(TINY.read_text())


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("keys", "value", "expected"), [
    (("pgd", "eps"), 2.0, ("['pgd']['eps']", "maximum of 1")),
    (("pgd", "epsilon"), 0.3, ("'epsilon' was unexpected",)),
    (("onmanifold", "eta"), 5.0, ("['onmanifold']['eta']", "maximum of 4")),
    (("classifiers", "onmanifold_attack", "eta"), -0.1, ("['eta']", "minimum of 0")),
    (("vaegan", "truncation"), 0.0, ("['vaegan']['truncation']", "less than or equal to the minimum of 0")),
    (("vaegan", "beta", "fonts"), 0.0, ("['beta']['fonts']", "less than or equal to the minimum of 0")),
    (("classifiers", "modes"), ["onmanifold"], ("'onmanifold' is not one of",)),
    (("fonts", "geometry"), "inverse", ("['fonts']['geometry']", "'inverse' is not one of ['sampling', 'placement', 'paper']")),
    (("classifiers", "n_train_per_mode", "fonts", "normal"), [0], ("['n_train_per_mode']['fonts']['normal'][0]",
                                                                   "less than the minimum of 1")),
    (("classifiers", "n_train_per_mode", "fonts", "onmanifold"), [150], ("'onmanifold' was unexpected",)),
    (("classifiers", "n_train_per_mode", "mnist"), {}, ("'mnist' was unexpected",)),
])
def test_bad_config_stops_before_any_job(tmp_path: Path, keys: tuple[str, ...], value, expected: tuple[str, ...],
                                         ) -> None:
    cfg = tiny_config()
    section = cfg
    for key in keys[:-1]:
        section = section.setdefault(key, {})
    section[keys[-1]] = value
    proc = snakemake(tmp_path, "--dry-run", config=write_config(tmp_path / "bad.yaml", cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for fragment in expected:
        assert fragment in out
    assert not (tmp_path / "results").exists()


def test_a_mode_grid_of_its_own_and_lock_step_all_n_stop_before_any_job(tmp_path: Path) -> None:
    """lock_step all_n trains every N of n_train in one job per mode, so it cannot honour a mode's own grid."""
    cfg = tiny_config()
    cfg["classifiers"] = {**cfg["classifiers"], "lock_step": "all_n",
                          "n_train_per_mode": {"fonts": {"normal": [150, 300, 600]}}}
    proc = snakemake(tmp_path, "--dry-run", config=write_config(tmp_path / "bad.yaml", cfg))
    assert proc.returncode != 0
    assert "drop classifiers.n_train_per_mode, or use lock_step: setting" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean() -> None:
    proc = subprocess.run([str(SNAKEMAKE), "--lint", "--configfile", str(TINY)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_snakefmt_is_clean() -> None:
    snakefmt = Path(sys.executable).with_name("snakefmt")
    proc = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow/rules"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fonts_from_a_pinned_archive(tmp_path: Path) -> None:
    """fonts.source: archive downloads (here from a local file:// URL), verifies sha256 and renders from it."""
    from manifold_robustness.fonts import matplotlib_font_dir, sha256_of

    archive = tmp_path / "fonts.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"):
            zf.write(matplotlib_font_dir() / name, f"fonts-main/ofl/{name}")
    cfg = tiny_config()
    cfg["fonts"] = {**cfg["fonts"], "source": "archive",
                    "archive": {"url": archive.as_uri(), "sha256": sha256_of(archive), "filename": "fonts.zip"}}
    config = write_config(tmp_path / "archive.yaml", cfg)
    workdir = tmp_path / "run"
    proc = snakemake(workdir, "results/data/fonts.h5", "--show-failed-logs", config=config)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (workdir / "resources/fonts/fonts.zip").exists()
    with h5py.File(workdir / "results/data/fonts.h5") as h5:
        names = [n.decode() for n in h5["glyphs/font_names"][()]]
    assert len(names) == 3 and all("resources/fonts/archive" in n for n in names)


def test_paper_grid_plans(tmp_path: Path) -> None:
    """The paper's grid builds its DAG for all three datasets: 13 N per mode, each job training (or attacking) the
    5 seeds of its setting, 5 modes on FONTS and 4 elsewhere (no true manifold), each model attacked by PGD and on
    its manifold, FONTS also on the learned one."""
    proc = snakemake(tmp_path, "--dry-run", config=ROOT / "config" / "paper.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE)}
    settings = 13 * (5 + 4 + 4)
    for rule in ("train_classifier", "attack_pgd", "attack_onmanifold"):
        assert counts[rule] == settings, rule
    assert counts["attack_onmanifold_learned"] == 13 * 5
    assert counts["fetch_fonts"] == 1 and counts["torchvision_data"] == 2 and counts["train_vaegan"] == 30
    # Downloads are local rules: they run on the submitting host (a login node with internet), never as jobs.
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", (ROOT / "Snakefile").read_text(), flags=re.MULTILINE)
    assert block and {"fetch_fonts", "torchvision_data"} <= set(re.findall(r"\w+", block.group(1)))
    # One commit of the font archive, its fonts in an order their own content fixes, and the list of those kept.
    fonts = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["fonts"]
    assert re.fullmatch(r"https://github.com/google/fonts/archive/[0-9a-f]{40}\.zip", fonts["archive"]["url"])
    assert fonts["order"] == "content" and counts["font_list"] == 1 and "results/data/fonts.sha256" in out
    for dataset in ("fonts", "emnist", "fashion"):
        assert f"results/classifiers/{dataset}/transformation/N40000/seed4/model.pt" in out
    assert "results/classifiers/emnist/onmanifold_true" not in out
    # In lock step across N: one training job per dataset and mode, the attacks as before.
    proc = snakemake(tmp_path, "--dry-run", "--config", "classifiers={'lock_step': 'all_n'}",
                     config=ROOT / "config" / "paper.yaml")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train_classifier_all_n"] == 5 + 4 + 4 and "train_classifier" not in counts
    assert counts["attack_pgd"] == settings


@pytest.mark.parametrize("dataset", ["emnist", "fashion"])
def test_torchvision_dataset_offline_fails_at_once_naming_files_and_folder(tmp_path: Path, dataset: str) -> None:
    """No files and no download: the data rule stops quickly, saying what to fetch and where to put it."""
    cfg = tiny_config()
    # Without the system folders too, as on a machine without Debian's dataset-fashion-mnist.
    cfg["datasets"], cfg["download"], cfg["system_datasets"] = [dataset], False, False
    proc = snakemake(tmp_path, f"results/data/{dataset}.h5", "--show-failed-logs",
                     config=write_config(tmp_path / "offline.yaml", cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    raw = "EMNIST/raw" if dataset == "emnist" else "FashionMNIST/raw"
    assert f"resources/{dataset}/{raw}" in out and "Files put there by hand are used without a download" in out
    assert ("emnist-digits-train-images-idx3-ubyte" if dataset == "emnist" else "train-images-idx3-ubyte") in out
    assert not (tmp_path / f"results/data/{dataset}.h5").exists()


DEBIAN_FASHION = datasets.DEBIAN_FASHION_FOLDER


@pytest.mark.skipif(not all((DEBIAN_FASHION / f"{f}.gz").is_file() for f in datasets.needed_files("fashion")),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist; "
                           "`make test` installs it where it runs as root with apt-get)")
def test_real_fashion_mnist_end_to_end(tmp_path: Path) -> None:
    """The genuine Fashion-MNIST, found offline in Debian's package with no configuration, through every stage to
    the table, the figures and a verdict on each claim."""
    cfg = tiny_config()
    cfg["datasets"], cfg["download"] = ["fashion"], False
    cfg["vaegan"]["epochs"], cfg["vaegan"]["max_steps"] = {"fashion": 1}, {"fashion": 4}
    proc = snakemake(tmp_path, "--show-failed-logs", config=write_config(tmp_path / "fashion.yaml", cfg))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with h5py.File(tmp_path / "results/data/fashion.h5") as h5:
        assert h5["train/images"].shape == (60_000, 1, 28, 28) and h5["test/images"].shape == (10_000, 1, 28, 28)
        assert np.bincount(h5["train/labels"][()]).tolist() == [6000] * 10
        assert np.bincount(h5["test/labels"][()]).tolist() == [1000] * 10
    log = (tmp_path / "logs/torchvision_data/fashion.log").read_text()
    assert str(DEBIAN_FASHION) in log and "content verified" in log
    assert not list((tmp_path / "resources").rglob("*.bad"))  # genuine data is never moved aside
    df = pd.read_csv(tmp_path / "results/tables/metrics.csv")
    assert set(df["dataset"]) == {"fashion"}
    assert set(df["mode"]) == set(MODES) - {"onmanifold_true"}  # no true manifold
    assert set(df["onmanifold_manifold"]) == {"learned manifold"}
    assert df["test_error"].between(0, 0.9).all()  # better than chance on real garments
    doc = json.loads((tmp_path / "results/report/claims.json").read_text())
    for claim in doc["claims"]:
        # Fig. 2 is not shown for Fashion-MNIST in the paper: claim 1 is judged there but labelled beyond the paper.
        verdict, _, beyond = claim["verdicts"]["fashion"].partition(" (")
        assert verdict in ("PASS", "FAIL", "INCONCLUSIVE") and (beyond == "beyond the paper)") == (claim["id"] == 1)
        assert claim["verdicts"]["fonts"] == "NOT RUN"
    for name in ("fig1_examples", "fig2_manifold_distance", "fig3_onmanifold_robustness", "fig4_regular_robustness",
                 "vaegan_samples_fashion"):
        assert (tmp_path / f"results/figures/{name}.png").stat().st_size > 1000, name


def test_every_rule_that_runs_on_the_device_asks_for_a_gpu_when_the_run_is_for_one(tmp_path: Path) -> None:
    """Every rule that passes the config's device to its script asks the scheduler for a GPU under `device=cuda`
    (a job that would find none fails at once), and none does under `device=cpu`."""
    rules_text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    blocks = re.split(r"^(?=rule |use rule )", rules_text, flags=re.MULTILINE)
    on_device = {re.match(r"(?:use )?rule (\w+)", b).group(1) for b in blocks
                 if b.startswith(("rule ", "use rule ")) and 'device=config["device"]' in b}
    for device, asked in (("cuda", "1"), ("cpu", "0")):
        proc = snakemake(tmp_path, "--dry-run", "--config", f"device={device}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", proc.stdout, flags=re.MULTILINE)
        gpus = {}
        for rule, resources in jobs:
            gpus.setdefault(rule, set()).add(dict(kv.split("=", 1) for kv in resources.split(", ")).get("gpu"))
        assert on_device <= set(gpus), on_device - set(gpus)
        assert {rule: gpus[rule] for rule in on_device} == dict.fromkeys(on_device, {asked}), device
