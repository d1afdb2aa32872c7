"""Figures from synthetic but well-formed inputs: files are written, examples chosen by the rules, gains exact."""

from __future__ import annotations

from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from manifold_robustness import figures
from manifold_robustness.figures import (fig1_examples, fig3_onmanifold_robustness, select_examples,
                                         vaegan_sample_grid)

MODES = ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation")
N_TEST = 20


def metrics_frame() -> pd.DataFrame:
    """All modes, 2 seeds, 3 N, FONTS and EMNIST; error falls with N, on-manifold success follows test error."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("fonts", "emnist"):
        for m, mode in enumerate(MODES):
            for n in (250, 1000, 4000):
                for seed in (0, 1):
                    error = 0.4 * (250 / n) ** 0.5 + 0.01 * m + 0.01 * rng.random()
                    rows.append({"dataset": dataset, "mode": mode, "n_train": n, "seed": seed, "test_error": error,
                                 "pgd_success": 0.9, "pgd_success_any": 0.95,
                                 "onmanifold_success": min(1.0, 1.5 * error), "onmanifold_success_any": 1.0,
                                 "onmanifold_manifold": "true manifold" if dataset == "fonts" else "learned manifold",
                                 "onmanifold_learned_success": min(1.0, 1.2 * error),
                                 "onmanifold_learned_success_any": 1.0})
    return pd.DataFrame(rows)


def write_dataset(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("test/images", data=images)
        h5.create_dataset("test/labels", data=labels)


def write_record(path: Path, index: np.ndarray, labels: np.ndarray, clean_pred: np.ndarray, success: np.ndarray,
                 best: np.ndarray, manifold: str | None = None, seed: int = 0) -> None:
    """An attack record in the format of attack_io.save_attack (on-manifold extras when `manifold` is given)."""
    rng = np.random.default_rng(seed)
    n, restarts = success.shape
    pred = np.where(success, (labels[:, None] + 1) % 10, labels[:, None]).astype(np.int64)
    with h5py.File(path, "w") as h5:
        h5["index"], h5["label"], h5["clean_pred"] = index.astype(np.int64), labels, clean_pred
        h5["adversarial"] = rng.random((n, 1, 28, 28), dtype=np.float32)
        h5["success"], h5["best_restart"], h5["pred"] = success, best.astype(np.int64), pred
        h5["loss"] = rng.random((n, restarts), dtype=np.float32)
        if manifold is not None:
            h5["test_pred"] = clean_pred
            h5["adversarial_latent"] = rng.random((n, 4), dtype=np.float32)
            h5["clean_latent"] = rng.random((n, 4), dtype=np.float32)
            h5.attrs["config.manifold"] = manifold


def record(index, labels, clean_pred, success, best=None) -> dict:
    """An in-memory record for select_examples (one restart unless `success` is 2-D)."""
    success = np.asarray(success, bool)
    success = success[:, None] if success.ndim == 1 else success
    best = np.zeros(len(index), np.int64) if best is None else np.asarray(best)
    return {"index": np.asarray(index), "label": np.asarray(labels), "clean_pred": np.asarray(clean_pred),
            "success": success, "best_restart": best}


@pytest.fixture
def panels(tmp_path: Path) -> list[dict]:
    """FONTS with true and learned on-manifold records, EMNIST with a learned one; pgd/on-manifold subsets overlap."""
    rng = np.random.default_rng(1)
    out = []
    for dataset, manifolds in (("fonts", ("true", "learned")), ("emnist", ("learned",))):
        labels = rng.integers(0, 10, N_TEST).astype(np.int64)
        write_dataset(tmp_path / f"{dataset}.h5", rng.random((N_TEST, 1, 28, 28), dtype=np.float32), labels)
        panel = {"dataset": dataset, "data": str(tmp_path / f"{dataset}.h5"), "onmanifold_learned": None}
        subsets = {"pgd": np.arange(0, 16), "onmanifold": np.arange(3, 20), "onmanifold_learned": np.arange(2, 18)}
        names = ["pgd", "onmanifold", "onmanifold_learned"][:1 + len(manifolds)]
        for k, name in enumerate(names):
            index = subsets[name]
            success = rng.random((len(index), 2)) < 0.7
            path = tmp_path / f"{dataset}_{name}.h5"
            write_record(path, index, labels[index], labels[index].copy(), success, success.argmax(1),
                         None if name == "pgd" else manifolds[k - 1], seed=k)
            panel[name] = str(path)
        out.append(panel)
    return out


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_select_examples_keeps_common_correct_indices_and_prefers_successes() -> None:
    a = record([1, 2, 3, 4, 5, 6, 7], [0] * 7, [0, 0, 0, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 0])
    b = record([7, 6, 5, 4, 3, 2, 9], [0] * 7, [0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 1, 1, 1])
    # common {2..7}; 4 misclassified in a; all-success: 3, 6; then failures 2, 5, 7 in ascending order
    assert select_examples([a, b], 10).tolist() == [3, 6, 2, 5, 7]
    assert select_examples([a, b], 2).tolist() == [3, 6]
    assert select_examples([b, a], 10).tolist() == [3, 6, 2, 5, 7]


def test_select_examples_uses_the_best_restart() -> None:
    success = [[True, False], [False, True], [True, False]]
    a = record([0, 1, 2], [0, 0, 0], [0, 0, 0], success, best=[0, 0, 0])
    assert select_examples([a], 3).tolist() == [0, 2, 1]


def test_select_examples_rejects_inconsistent_labels() -> None:
    a = record([0, 1], [0, 1], [0, 1], [1, 1])
    b = record([0, 1], [0, 2], [0, 2], [1, 1])
    with pytest.raises(ValueError, match="disagrees on labels"):
        select_examples([a, b], 2)


def test_fig3_writes_pdf_and_png(tmp_path: Path) -> None:
    fig3_onmanifold_robustness(metrics_frame(), tmp_path / "f3.pdf", tmp_path / "f3.png")
    assert (tmp_path / "f3.pdf").stat().st_size > 0
    assert_png(tmp_path / "f3.png")


def test_fig3_draws_without_optional_modes(tmp_path: Path) -> None:
    df = metrics_frame()
    df = df[df["mode"].isin(["normal", "transformation"]) & (df["dataset"] == "emnist")]
    fig3_onmanifold_robustness(df, tmp_path / "f3.pdf", tmp_path / "f3.png", "onmanifold_success_any")
    assert_png(tmp_path / "f3.png")


DECIDE_N = (250, 500, 1000, 2000, 3000, 4000, 5000, 7500, 10000, 15000, 20000)


@pytest.mark.parametrize("sizes", [DECIDE_N, (500, 1000, 4000), (250, 500, 1000, 1500, 2000, 2500, 5000, 7500,
                                                                10000, 15000, 20000, 30000, 40000)])
def test_labelled_n_spaces_labels_and_keeps_both_ends(sizes) -> None:
    labelled = figures.labelled_n(sizes)
    assert labelled[0] == min(sizes) and labelled[-1] == max(sizes) and set(labelled) <= set(sizes)
    assert all(b >= figures.LABELLED_N_RATIO * a for a, b in zip(labelled, labelled[1:])), labelled


def test_fig3_ticks_every_n_and_labels_only_those_with_room(tmp_path: Path, monkeypatch) -> None:
    """On a grid with N 1.33x apart (the deciding study's), every N keeps a tick, but labels are spaced."""
    df = metrics_frame()
    df = pd.concat([df[df["n_train"] == 250].assign(n_train=n) for n in DECIDE_N], ignore_index=True)
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, *paths: drawn.append(fig))
    fig3_onmanifold_robustness(df, tmp_path / "f3.pdf", tmp_path / "f3.png")
    top = drawn[0].axes[0]
    major, minor = list(top.xaxis.get_majorticklocs()), list(top.xaxis.get_minorticklocs())
    assert sorted(major + minor) == list(DECIDE_N)
    assert [t.get_text() for t in top.xaxis.get_majorticklabels()] == [f"{n:,}" for n in figures.labelled_n(DECIDE_N)]
    assert len(major) < len(DECIDE_N)


def test_fig3_needs_normal_rows(tmp_path: Path) -> None:
    df = metrics_frame()
    with pytest.raises(ValueError, match="no 'normal' rows"):
        fig3_onmanifold_robustness(df[df["mode"] != "normal"], tmp_path / "f3.pdf", tmp_path / "f3.png")
    assert not (tmp_path / "f3.png").exists()


def test_fig1_writes_pdf_and_png(panels: list[dict], tmp_path: Path) -> None:
    fig1_examples(panels, tmp_path / "f1.pdf", tmp_path / "f1.png", n_examples=3)
    assert (tmp_path / "f1.pdf").stat().st_size > 0
    assert_png(tmp_path / "f1.png")


def test_fig1_rejects_a_record_without_the_manifold_attribute(panels: list[dict], tmp_path: Path) -> None:
    with h5py.File(panels[1]["onmanifold"], "a") as h5:
        del h5.attrs["config.manifold"]
    with pytest.raises(ValueError, match="config.manifold"):
        fig1_examples(panels, tmp_path / "f1.pdf", tmp_path / "f1.png", n_examples=3)


def test_fig1_rejects_a_dataset_file_with_other_labels(panels: list[dict], tmp_path: Path) -> None:
    with h5py.File(panels[0]["data"], "a") as h5:
        h5["test/labels"][...] = (h5["test/labels"][()] + 1) % 10
    with pytest.raises(ValueError, match="disagree"):
        fig1_examples(panels, tmp_path / "f1.pdf", tmp_path / "f1.png", n_examples=3)


def figure_texts(fig) -> set[str]:
    """Every axis label and text drawn in a figure."""
    return {t.get_text() for ax in fig.axes for t in (ax.xaxis.label, ax.yaxis.label, ax.title)} | {
        t.get_text() for t in fig.texts}


def test_fig1_names_the_classes(panels: list[dict], tmp_path: Path, monkeypatch) -> None:
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, *paths: drawn.append(fig))
    fig1_examples(panels, tmp_path / "f1.pdf", tmp_path / "f1.png", n_examples=3)
    texts = figure_texts(drawn[0])
    with h5py.File(panels[0]["data"]) as h5:
        letters = {"ABCDEFGHIJ"[label] for label in h5["test/labels"][()]}
    shown = {t for t in texts if len(t) == 1 and t.isalpha()}
    assert shown and shown <= letters, texts  # FONTS captions are letters of the test set, not numbers
    assert not any(t.startswith("label ") for t in texts)
    assert any(t.startswith("→ ") for t in texts)  # the class each adversarial example is taken for


def test_class_names() -> None:
    assert figures.class_name("fonts", 0) == "A" and figures.class_name("fonts", 9) == "J"
    assert figures.class_name("fashion", 9) == "Ankle boot" and figures.class_name("fashion", 0) == "T-shirt/top"
    assert figures.class_name("emnist", 7) == "7"
    assert figures.class_name("other", 3) == "3"
    assert all(len(names) == 10 for names in figures.CLASS_NAMES.values())


def test_vaegan_sample_grid_names_the_classes(tmp_path: Path, monkeypatch) -> None:
    drawn = []
    close = figures.plt.close
    monkeypatch.setattr(figures.plt, "close", lambda fig: (drawn.append(fig), close(fig)))
    samples = np.random.default_rng(0).random((10, 2, 1, 28, 28), dtype=np.float32)
    vaegan_sample_grid(samples, tmp_path / "grid.png", title="FASHION: VAE-GAN samples", dataset="fashion")
    assert set(figures.CLASS_NAMES["fashion"]) <= figure_texts(drawn[0])


def test_vaegan_sample_grid(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).random((3, 4, 1, 28, 28), dtype=np.float32)
    vaegan_sample_grid(samples, tmp_path / "grid.png", title="FONTS: VAE-GAN samples")
    assert_png(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="classes, samples"):
        vaegan_sample_grid(samples[0], tmp_path / "bad.png", title="bad")


def test_fig3_titles_name_the_judges_class_kept_share() -> None:
    from manifold_robustness.figures import _class_kept_note

    df = metrics_frame()
    df = df[df["dataset"] == df["dataset"].iloc[0]]
    assert _class_kept_note(df, "onmanifold_success") == ""  # no judge ran
    top = df["n_train"].max()
    df = df.assign(onmanifold_class_kept=np.where((df["mode"] == "normal") & (df["n_train"] == top), 0.5, 0.9))
    assert _class_kept_note(df, "onmanifold_success_any") == f"\nclass kept (judge): 0.50 at N = {top:,}"
    assert _class_kept_note(df, "onmanifold_learned_success") == ""  # the learned record was not judged
