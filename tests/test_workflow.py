"""End to end: snakemake on the tiny config in a temporary directory, data to Figs. 1, 3 and 4."""

from __future__ import annotations

import re
import subprocess
import zipfile
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from manifold_robustness.data import read_ranges
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
    assert (finished_run / "logs/train_classifier/fonts/adversarial/N300/seed0.log").read_text()
    low, high = read_ranges(finished_run / "results/data/fonts.h5").low, read_ranges(
        finished_run / "results/data/fonts.h5").high
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
        assert h5.attrs["manifold"] == "true" and h5.attrs["seconds"] > 0
    assert len(pgd) and len(onm)
    assert np.median(pgd) > 1.0 > 0.1 > np.median(onm)
    assert 0.5 < np.median(ratio) <= 1.0 + 1e-6
    assert np.abs(clean).max() < 1e-3

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
    """The paper's grid builds its DAG for all three datasets: 13 N x 5 seeds per mode, 5 modes on FONTS and 4
    elsewhere (no true manifold), each model attacked by PGD and on its manifold, FONTS also on the learned one."""
    proc = snakemake(tmp_path, "--dry-run", config=ROOT / "config" / "paper.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE)}
    models = 13 * 5 * (5 + 4 + 4)
    for rule in ("train_classifier", "attack_pgd", "attack_onmanifold"):
        assert counts[rule] == models, rule
    assert counts["attack_onmanifold_learned"] == 13 * 5 * 5
    assert counts["fetch_fonts"] == 1 and counts["torchvision_data"] == 2 and counts["train_vaegan"] == 30
    for dataset in ("fonts", "emnist", "fashion"):
        assert f"results/classifiers/{dataset}/transformation/N40000/seed4/model.pt" in out
    assert "results/classifiers/emnist/onmanifold_true" not in out


@pytest.mark.parametrize("dataset", ["emnist", "fashion"])
def test_torchvision_dataset_offline_fails_at_once_naming_files_and_folder(tmp_path: Path, dataset: str) -> None:
    """No files and no download: the data rule stops quickly, saying what to fetch and where to put it."""
    cfg = tiny_config()
    cfg["datasets"], cfg["download"] = [dataset], False
    proc = snakemake(tmp_path, f"results/data/{dataset}.h5", "--show-failed-logs",
                     config=write_config(tmp_path / "offline.yaml", cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    raw = "EMNIST/raw" if dataset == "emnist" else "FashionMNIST/raw"
    assert f"resources/{dataset}/{raw}" in out and "Files put there by hand are used without a download" in out
    assert ("emnist-digits-train-images-idx3-ubyte" if dataset == "emnist" else "train-images-idx3-ubyte") in out
    assert not (tmp_path / f"results/data/{dataset}.h5").exists()
