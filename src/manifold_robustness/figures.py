"""Figures drawn only from data files (metrics.csv, attack records, dataset files), so every point is traceable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import reduce

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

MODE_LABELS = {"normal": "normal training", "adversarial": "adversarial training"}  # Fig. 4
# Class names by label, as the datasets define them (Fashion-MNIST's are torchvision's FashionMNIST.classes).
CLASS_NAMES = {
    "fonts": tuple("ABCDEFGHIJ"),
    "emnist": tuple("0123456789"),
    "fashion": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"),
}


def class_name(dataset: str, label: int) -> str:
    """The name of class `label` of `dataset` (a letter, digit or garment); the number for unknown datasets."""
    names = CLASS_NAMES.get(dataset)
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


FIG3_MODES = {"normal": "normal training", "adversarial": "adversarial training",
              "onmanifold_true": "on-manifold adv. training (true)",
              "onmanifold_learned": "on-manifold adv. training (learned)",
              "transformation": "adv. transformation training"}
MODE_COLORS = dict(zip(FIG3_MODES, sns.color_palette("colorblind", len(FIG3_MODES))))
DATASET_TITLES = {"fonts": "FONTS", "emnist": "EMNIST", "fashion": "Fashion-MNIST"}


def dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


SUCCESS_LABELS = {"pgd_success": "PGD success rate (per restart)", "pgd_success_any": "PGD success rate (any restart)"}


def save_figure(fig: plt.Figure, pdf: str | os.PathLike, png: str | os.PathLike) -> None:
    """Save a figure as PDF and PNG, each atomically."""
    for path, fmt in ((pdf, "pdf"), (png, "png")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=200, bbox_inches="tight")
    plt.close(fig)


# --- drawing the paper's values beside this run's -----------------------------------------------------------------

PAPER_LINE = {"ls": (0, (4, 2)), "lw": 1.1, "marker": "x", "ms": 3.5}


def muted(color, amount: float = 0.45) -> tuple[float, float, float]:
    """A colour mixed with white, for the paper's values drawn beside this run's."""
    rgb = np.asarray(matplotlib.colors.to_rgb(color))
    return tuple(rgb + (1.0 - rgb) * amount)


def _n_range(data: pd.DataFrame) -> tuple[int, int]:
    """The N this run covers: the paper's values are drawn within it, so both share the axes."""
    return int(data["n_train"].min()), int(data["n_train"].max())


def _draw_paper(ax: plt.Axes, x: Sequence[float], y: Sequence[float], color, label: str) -> None:
    if len(x):
        ax.plot(x, y, color=muted(color), label=label, **PAPER_LINE)


def _scatter_by_n(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, sizes: Sequence[int], color, label: str) -> None:
    """One point per model, larger for larger N."""
    ax.scatter(data[x], data[y], s=data["n_train"].map(_marker_areas(sizes)), color=color, alpha=0.8, lw=0,
               label=label)


def _size_key(ax: plt.Axes, sizes: Sequence[int]) -> None:
    """Legend entries that say which marker size is which N."""
    for n, area in _marker_areas(sizes).items():
        ax.scatter([], [], s=area, color="0.45", lw=0, label=f"one model, N = {n:,}")


def _marker_areas(sizes: Sequence[int]) -> dict[int, float]:
    """Marker area per N, growing with its rank among the run's N."""
    return {n: 10 + 45 * i / max(len(sizes) - 1, 1) for i, n in enumerate(sizes)}


def _mean_line(ax: plt.Axes, stats: pd.DataFrame, color, label: str, **style) -> None:
    """Mean over seeds with a ± sd band."""
    ax.plot(stats["n_train"], stats["mean"], marker=style.pop("marker", "o"), ms=3, color=color, label=label, **style)
    ax.fill_between(stats["n_train"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color,
                    alpha=0.18, lw=0)


def legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], ncol: int = 2) -> None:
    """One legend for the whole figure, below the axes so that it covers no data; each label once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                   fontsize=6.5, frameon=False)


def fig4_regular_robustness(df: pd.DataFrame, pdf: str | os.PathLike, png: str | os.PathLike,
                            success_column: str = "pgd_success", datasets: list[str] | None = None,
                            paper: pd.DataFrame | None = None) -> None:
    """Fig. 4, one row per dataset: left, PGD success rate against test error for every model; right, test
    error against N, normal vs. adversarial training. The paper's means (`paper`, the reference table) are drawn
    dashed in lighter colours, within the N this run covers; its success rates are per (restart, image) pair, so
    they are drawn only beside `pgd_success`."""
    datasets = datasets or sorted(set(df["dataset"]))
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)
    fig, axes = plt.subplots(len(datasets), 2, figsize=(6.8, 2.6 * len(datasets)), squeeze=False)
    for (left, right), dataset in zip(axes, datasets):
        _fig4_row(left, right, df, success_column, dataset, paper)
    fig.tight_layout()
    legend_below(fig, axes.ravel(), ncol=3)
    save_figure(fig, pdf, png)


def _fig4_row(left: plt.Axes, right: plt.Axes, df: pd.DataFrame, success_column: str, dataset: str,
              paper: pd.DataFrame | None) -> None:
    """Fig. 4 for one dataset."""
    from .paper import paper_curve, paper_pairs  # the figure module stays importable without the comparison

    data = df[(df["dataset"] == dataset) & df["mode"].isin(list(MODE_LABELS))]
    if data.empty:
        raise ValueError(f"metrics table has no normal/adversarial rows for dataset '{dataset}'")
    sizes, n_range = sorted(data["n_train"].unique()), _n_range(data)
    for mode, label in MODE_LABELS.items():
        part = data[data["mode"] == mode]
        if part.empty:
            continue
        color = MODE_COLORS[mode]
        _scatter_by_n(left, part.dropna(subset=[success_column]), "test_error", success_column, sizes, color, label)
        _mean_line(right, _mean_sd(part, "test_error"), color, f"{label} (mean ± sd over seeds)")
        if paper is not None:
            if success_column == "pgd_success":
                pairs = paper_pairs(paper, dataset, "test_error", "pgd_success", mode, n_range)
                _draw_paper(left, pairs["test_error"], pairs["pgd_success"], color, f"paper: {label}")
            curve = paper_curve(paper, dataset, "test_error", mode, n_range)
            _draw_paper(right, curve["n_train"], curve["value"], color, f"paper: {label}")
    _size_key(left, sizes)
    left.set(xlabel="test error", ylabel=SUCCESS_LABELS.get(success_column, success_column), ylim=(-0.03, 1.03),
             title=f"{dataset_title(dataset)}: success rate vs. test error")
    right.set(ylabel="test error", title=f"{dataset_title(dataset)}: test error vs. N")
    _n_axis(right, sizes)
    right.set_xlabel("training images N")


# --- Fig. 1: examples of regular and on-manifold adversarial examples, drawn from the attack records -------------

RECORD_KEYS = ("index", "label", "clean_pred", "adversarial", "success", "best_restart")
MANIFOLDS = ("true", "learned")
DIFF_CMAP = LinearSegmentedColormap.from_list("diff", ["#2166ac", "#808080", "#b2182b"])  # 0 is mid-grey


def read_example_record(path: str | os.PathLike) -> dict:
    """Read the arrays Fig. 1 needs from one attack record, naming the file and key when one is absent."""
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in RECORD_KEYS if key not in h5]
            if missing:
                raise ValueError(f"attack record {path} lacks datasets {missing}; delete it and rerun its attack")
            record = {key: h5[key][()] for key in RECORD_KEYS}
            record["pred"] = h5["pred"][()] if "pred" in h5 else None
            manifold = h5.attrs.get("config.manifold")
    except OSError as err:
        raise ValueError(f"attack record {path} cannot be read ({err}); delete it and rerun its attack") from err
    record["manifold"] = manifold.decode() if isinstance(manifold, bytes) else manifold
    record["path"] = str(path)
    if record["adversarial"].shape[1:] != (1, 28, 28) or record["success"].ndim != 2:
        raise ValueError(f"attack record {path}: adversarial must be (n,1,28,28) and success (n,R)")
    return record


def read_test_rows(path: str | os.PathLike, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Test images and labels at `rows` (in the given order) of a dataset file, without importing torch."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)
    try:
        with h5py.File(path, "r") as h5:
            images, labels = h5["test/images"][rows[order]], h5["test/labels"][rows[order]]
    except (OSError, KeyError) as err:
        raise ValueError(f"dataset file {path} has no readable test split ({err}); delete it and rerun") from err
    inverse = np.argsort(order)
    return images[inverse], labels[inverse]


def best_restart_success(record: dict) -> np.ndarray:
    """Per example, whether the kept (best) restart fooled the model."""
    return record["success"][np.arange(len(record["index"])), record["best_restart"]].astype(bool)


def _positions(index: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of a record holding the test indices `wanted` (records are matched by index, not by row)."""
    lookup = {int(v): row for row, v in enumerate(index)}
    return np.array([lookup[int(v)] for v in wanted], dtype=np.int64)


def select_examples(records: Sequence[dict], n_examples: int) -> np.ndarray:
    """Test indices present in all records and correctly classified in all, best-restart successes first.

    Within each group (every attack succeeded / not) indices ascend, so the choice is deterministic.
    """
    if not records or n_examples < 1:
        raise ValueError("select_examples needs at least one record and n_examples >= 1")
    common = reduce(np.intersect1d, [np.asarray(r["index"]) for r in records])
    correct, succeeded = np.ones(len(common), bool), np.ones(len(common), bool)
    labels = None
    for record in records:
        rows = _positions(record["index"], common)
        if labels is not None and not np.array_equal(labels, record["label"][rows]):
            raise ValueError(f"attack record {record.get('path', '?')} disagrees on labels with the other records")
        labels = record["label"][rows]
        correct &= record["clean_pred"][rows] == labels
        succeeded &= best_restart_success(record)[rows]
    chosen = np.concatenate([common[correct & succeeded], common[correct & ~succeeded]])
    return chosen[:n_examples].astype(np.int64)


def _best_pred(record: dict, rows: np.ndarray) -> np.ndarray | None:
    """Prediction on the kept adversarial example, `pred[i, best_restart[i]]`, or None if not recorded."""
    if record["pred"] is None:
        return None
    return record["pred"][rows, record["best_restart"][rows]]


def _panel_records(panel: dict) -> dict[str, dict]:
    """A panel's records keyed by column: 'pgd' and the manifold ('true'/'learned') of each on-manifold record."""
    missing = [key for key in ("dataset", "data", "pgd", "onmanifold") if not panel.get(key)]
    if missing:
        raise ValueError(f"Fig. 1 panel {panel} lacks {missing}")
    records = {"pgd": read_example_record(panel["pgd"])}
    for key in ("onmanifold", "onmanifold_learned"):
        if panel.get(key) is None:
            continue
        record = read_example_record(panel[key])
        if record["manifold"] not in MANIFOLDS:
            raise ValueError(f"attack record {panel[key]} has config.manifold={record['manifold']!r}, "
                             f"expected one of {MANIFOLDS}")
        if record["manifold"] in records:
            raise ValueError(f"panel '{panel['dataset']}' has two on-manifold records on the "
                             f"{record['manifold']} manifold")
        records[record["manifold"]] = record
    return records


def _image_axis(ax: plt.Axes, image: np.ndarray, xlabel: str = "", cmap=None, vmin: float = 0.0,
                vmax: float = 1.0) -> None:
    """One small image without ticks or grid, with an optional caption below."""
    ax.imshow(image, cmap=cmap or "gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_xlabel(xlabel, fontsize=6, labelpad=1)


def _draw_example_row(axes: Sequence[plt.Axes], columns: list[str], image: np.ndarray, label: int,
                      records: dict[str, dict], index: int, dataset: str) -> None:
    """One example: test image, PGD adversarial, normalized difference, on-manifold adversarials; captions name
    the true class and the class each adversarial example is taken for."""
    cells = dict(zip(columns, axes))
    _image_axis(cells["test"], image[0], class_name(dataset, label))
    cells["test"].set_ylabel(f"test #{index}", fontsize=6)
    for name, record in records.items():
        rows = _positions(record["index"], np.array([index]))
        pred = _best_pred(record, rows)
        caption = "" if pred is None else f"→ {class_name(dataset, int(pred[0]))}"
        _image_axis(cells[name], record["adversarial"][rows[0], 0], caption)
    delta = records["pgd"]["adversarial"][_positions(records["pgd"]["index"], np.array([index]))[0], 0] - image[0]
    scale = float(np.abs(delta).max())
    _image_axis(cells["diff"], delta / scale if scale > 0 else delta, f"max|δ| {scale:.2f}", DIFF_CMAP, -1.0, 1.0)
    for name in columns:
        if name not in records and name not in ("test", "diff"):
            cells[name].set_axis_off()


FIG1_TITLES = {"test": "test image", "pgd": "PGD adversarial", "diff": "normalized\ndifference",
               "true": "on-manifold\n(true)", "learned": "on-manifold\n(learned)"}


def fig1_examples(panels: list[dict], pdf: str | os.PathLike, png: str | os.PathLike, n_examples: int = 5) -> None:
    """Fig. 1: per dataset, test images with their PGD and on-manifold adversarial examples from the records."""
    if not panels:
        raise ValueError("Fig. 1 needs at least one panel (dataset with its attack records)")
    blocks = []
    for panel in panels:
        records = _panel_records(panel)
        chosen = select_examples(list(records.values()), n_examples)
        if len(chosen) == 0:
            raise ValueError(f"no test image of '{panel['dataset']}' is in all of its attack records and correctly "
                             f"classified in all of them: {[r['path'] for r in records.values()]}")
        images, labels = read_test_rows(panel["data"], chosen)
        pgd_labels = records["pgd"]["label"][_positions(records["pgd"]["index"], chosen)]
        if not np.array_equal(labels, pgd_labels):
            raise ValueError(f"labels in {panel['data']} disagree with {panel['pgd']}: wrong dataset file?")
        blocks.append((panel["dataset"], records, chosen, images, labels))
    columns = ["test", "pgd", "diff"] + [m for m in MANIFOLDS if any(m in b[1] for b in blocks)]
    sns.set_theme(style="white", context="paper", font_scale=0.9)
    ratios = [h for b in blocks for h in [0.3] + [1.0] * len(b[2])][1:]  # a thin spacer row between datasets
    fig = plt.figure(figsize=(0.85 * len(columns) + 0.6, 0.95 * sum(ratios) + 0.4))
    grid = fig.add_gridspec(len(ratios), len(columns), height_ratios=ratios, hspace=0.35, wspace=0.1)
    start = 0
    for dataset, records, chosen, images, labels in blocks:
        axes = [[fig.add_subplot(grid[start + row, c]) for c in range(len(columns))] for row in range(len(chosen))]
        for row, index in enumerate(chosen):
            _draw_example_row(axes[row], columns, images[row], int(labels[row]), records, int(index), dataset)
        if start == 0:
            for ax, name in zip(axes[0], columns):
                ax.set_title(FIG1_TITLES[name], fontsize=7)
        top, bottom = axes[0][0].get_position(), axes[-1][0].get_position()
        fig.text(top.x0 - 0.6 / fig.get_figwidth(), (top.y1 + bottom.y0) / 2, dataset.upper(), rotation=90,
                 ha="center", va="center", fontsize=8, fontweight="bold")
        start += len(chosen) + 1
    save_figure(fig, pdf, png)


# --- Fig. 3: on-manifold robustness and generalization, drawn from the metrics table ------------------------------

ONMANIFOLD_SUCCESS_LABELS = {
    "onmanifold_success": "per (restart, image) pair", "onmanifold_success_any": "any restart",
    "onmanifold_learned_success": "learned manifold, per (restart, image) pair",
    "onmanifold_learned_success_any": "learned manifold, any restart"}
# The paper's success rates are per (restart, image) pair: only these columns are drawn beside its values.
PAPER_DEFINITION = ("onmanifold_success", "onmanifold_learned_success")
DATASET_ORDER = ("fonts", "emnist", "fashion")
def _require_normal(df: pd.DataFrame, what: str) -> None:
    """Raise if any dataset in `df` lacks normally trained models, which `what` is measured against."""
    datasets = sorted(set(df["dataset"]))
    lacking = [d for d in datasets if not ((df["dataset"] == d) & (df["mode"] == "normal")).any()]
    if not datasets or lacking:
        raise ValueError(f"metrics table has no 'normal' rows for dataset(s) {lacking or '(table is empty)'}; "
                         f"{what} needs normally trained models (modes present: {sorted(set(df['mode']))})")


def _mean_sd(data: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean and sample sd (0 for a single seed) of `column` over seeds, per N."""
    stats = data.dropna(subset=[column]).groupby("n_train")[column].agg(["mean", "std"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


# Neighbouring N labels on a log axis at column width need about a factor of 2 between them ("20,000" is as wide as
# the step from 10,000 to 20,000 in a panel spanning 250 to 20,000).
LABELLED_N_RATIO = 1.95


def labelled_n(sizes: Sequence[int]) -> list[int]:
    """The N that get a label: from the smallest up, each at least LABELLED_N_RATIO times the last labelled one,
    and the largest always (in place of the one before it where they would collide)."""
    sizes = sorted(sizes)
    labelled = sizes[:1]
    for n in sizes[1:]:
        if n >= LABELLED_N_RATIO * labelled[-1]:
            labelled.append(n)
    if sizes and labelled[-1] != sizes[-1]:
        if len(labelled) > 1 and sizes[-1] < LABELLED_N_RATIO * labelled[-1]:
            labelled.pop()
        labelled.append(sizes[-1])
    return labelled


def _n_axis(ax: plt.Axes, sizes: Sequence[int]) -> None:
    """Log x-axis with a tick at every N and a label where it has room (labelled_n); the others are minor ticks."""
    ax.set_xscale("log")
    major = labelled_n(sizes)
    ax.xaxis.set_major_locator(FixedLocator(major))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{n:,}" for n in major]))
    ax.xaxis.set_minor_locator(FixedLocator([n for n in sizes if n not in major]))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=6.5)
    ax.tick_params(axis="x", which="minor", length=2, bottom=True)


def _manifold_name(data: pd.DataFrame, success_column: str) -> str:
    """Which manifold the success column measures on, from the table's `onmanifold_manifold` column."""
    if success_column.startswith("onmanifold_learned"):
        return "learned manifold"
    if "onmanifold_manifold" in data:
        names = sorted(set(data["onmanifold_manifold"].dropna().astype(str)) - {""})
        if names:
            return "/".join(names)
    return "?"


def _paper_quantity(manifold: str) -> str | None:
    return {"true manifold": "onmanifold_true_success", "learned manifold": "onmanifold_learned_success"}.get(manifold)


def _draw_vs_n(ax: plt.Axes, data: pd.DataFrame, success_column: str, quantity: str | None,
               paper: pd.DataFrame | None, dataset: str) -> None:
    """Top row: test error of each mode, and the on-manifold success of normal training (black), against N."""
    from .paper import paper_curve

    n_range = _n_range(data)
    for mode, label in FIG3_MODES.items():
        stats = _mean_sd(data[data["mode"] == mode], "test_error")
        if stats.empty:
            continue
        _mean_line(ax, stats, MODE_COLORS[mode], f"{label}: test error")
        if paper is not None:
            curve = paper_curve(paper, dataset, "test_error", mode, n_range)
            _draw_paper(ax, curve["n_train"], curve["value"], MODE_COLORS[mode], f"paper: {label}")
    stats = _mean_sd(data[data["mode"] == "normal"], success_column)
    if not stats.empty:
        _mean_line(ax, stats, "black", "normal training: on-manifold success rate", marker="s")
        if paper is not None and quantity and success_column in PAPER_DEFINITION:
            curve = paper_curve(paper, dataset, quantity, "normal", n_range)
            _draw_paper(ax, curve["n_train"], curve["value"], "black", "paper: on-manifold success, normal training")
    ax.set(ylim=(-0.03, 1.03), ylabel="test error; on-manifold success\nrate of normal training (black)")
    _n_axis(ax, sorted(data["n_train"].unique()))
    ax.set_xlabel("training images N")


def _draw_success_vs_error(ax: plt.Axes, data: pd.DataFrame, success_column: str, quantity: str | None,
                           paper: pd.DataFrame | None, dataset: str) -> None:
    """Bottom row: on-manifold success rate against test error, one point per model (size by N)."""
    from .paper import paper_pairs

    points = data.dropna(subset=[success_column, "test_error"])
    ax.set(xlabel="test error", ylabel=f"on-manifold success rate\n({ONMANIFOLD_SUCCESS_LABELS.get(success_column, '')})",
           ylim=(-0.03, 1.03))
    if points.empty:
        ax.text(0.5, 0.5, f"no {success_column} measured", ha="center", va="center", transform=ax.transAxes)
        return
    sizes, n_range = sorted(points["n_train"].unique()), _n_range(data)
    for mode, label in FIG3_MODES.items():
        part = points[points["mode"] == mode]
        if part.empty:
            continue
        _scatter_by_n(ax, part, "test_error", success_column, sizes, MODE_COLORS[mode], label)
        if paper is not None and quantity and success_column in PAPER_DEFINITION:
            pairs = paper_pairs(paper, dataset, "test_error", quantity, mode, n_range)
            _draw_paper(ax, pairs["test_error"], pairs[quantity], MODE_COLORS[mode], f"paper: {label}")
    _size_key(ax, sizes)


def _class_kept_note(data: pd.DataFrame, success_column: str) -> str:
    """A title's second line: the share of successful on-manifold examples of normal training at the largest N
    that the dataset's judge still assigns their class (mean over seeds); empty where no judge ran."""
    column = success_column.split("_success")[0] + "_class_kept"
    normal = data[data["mode"] == "normal"]
    if column not in normal or normal[column].isna().all():
        return ""
    top = normal[normal["n_train"] == normal["n_train"].max()]
    return f"\nclass kept (judge): {top[column].mean():.2f} at N = {int(top['n_train'].iloc[0]):,}"


def fig3_onmanifold_robustness(df: pd.DataFrame, pdf: str | os.PathLike, png: str | os.PathLike,
                               success_column: str = "onmanifold_success", paper: pd.DataFrame | None = None) -> None:
    """Fig. 3 in the paper's layout, one column per dataset: top, test error of each training mode and the
    on-manifold success rate of normal training against N; bottom, on-manifold success rate against test error.
    The paper's means (`paper`, the reference table) are drawn dashed in lighter colours within this run's N."""
    for column in ("dataset", "mode", "n_train", "seed", "test_error", success_column):
        if column not in df:
            raise ValueError(f"metrics table lacks column '{column}' needed by Fig. 3")
    _require_normal(df, "Fig. 3")
    present = set(df["dataset"])
    datasets = [d for d in DATASET_ORDER if d in present] + sorted(present - set(DATASET_ORDER))
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.4 * len(datasets), 5.6), squeeze=False)
    for col, dataset in enumerate(datasets):
        data = df[df["dataset"] == dataset]
        manifold = _manifold_name(data, success_column)
        quantity = _paper_quantity(manifold)
        _draw_vs_n(axes[0, col], data, success_column, quantity, paper, dataset)
        _draw_success_vs_error(axes[1, col], data, success_column, quantity, paper, dataset)
        axes[0, col].set_title(f"{dataset_title(dataset)} (on-manifold: {manifold})" + _class_kept_note(data, success_column))
    fig.tight_layout()
    legend_below(fig, axes.ravel(), ncol=2)
    save_figure(fig, pdf, png)


# --- VAE-GAN sample grid ------------------------------------------------------------------------------------------

def vaegan_sample_grid(samples: np.ndarray, png: str | os.PathLike, title: str, dataset: str = "") -> None:
    """Grid of VAE-GAN samples (rows: classes, named as `dataset` names them; columns: samples) from a
    (K, S, 1, 28, 28) array; PNG only."""
    samples = np.asarray(samples)
    if samples.ndim != 5 or samples.shape[2:] != (1, 28, 28) or 0 in samples.shape[:2]:
        raise ValueError(f"VAE-GAN samples must be (classes, samples, 1, 28, 28), got {samples.shape}")
    n_classes, n_samples = samples.shape[:2]
    fig, axes = plt.subplots(n_classes, n_samples, figsize=(0.5 * n_samples + 0.4, 0.5 * n_classes + 0.5),
                             squeeze=False)
    for k in range(n_classes):
        for s in range(n_samples):
            _image_axis(axes[k, s], samples[k, s, 0])
        axes[k, 0].set_ylabel(class_name(dataset, k), fontsize=6, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.08, hspace=0.08, top=1.0 - 0.35 / fig.get_figheight())
    fig.suptitle(title, fontsize=8)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)


# --- Fig. 2: distance to the manifold -------------------------------------------------------------------------------

def read_distances(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Distances of successful regular and on-manifold adversarial examples, and of clean test images."""
    try:
        with h5py.File(path, "r") as h5:
            out = {name: h5[f"{name}/distance_adversarial"][()][h5[f"{name}/success"][()].astype(bool)]
                   for name in ("pgd", "onmanifold")}
            out["clean"] = h5["pgd/distance_clean"][()]
    except (OSError, KeyError) as err:
        raise ValueError(f"distance file {path} is incomplete ({err}); delete it and rerun its distances rule") from err
    return out


def fig2_manifold_distance(panels: list[dict], pdf: str | os.PathLike, png: str | os.PathLike,
                           paper: pd.DataFrame | None = None) -> None:
    """Fig. 2: normalized histograms of the L2 distance to the manifold, one panel per dataset: regular (PGD) vs.
    on-manifold adversarial examples (successful ones), with clean test images for reference. The paper's
    histograms of the same dataset (`paper`, its Fig. 2 data) are drawn dashed where it shows them."""
    from .paper import histogram_median, paper_histogram

    if not panels:
        raise ValueError("Fig. 2 needs at least one dataset with its distance file")
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), squeeze=False)
    labels = {"clean": "clean test images", "pgd": "regular (PGD) adversarial", "onmanifold": "on-manifold adversarial"}
    colors = {"clean": "grey", "pgd": "#d95f02", "onmanifold": "#1b9e77"}
    for ax, panel in zip(axes[0], panels):
        dist = read_distances(panel["path"])
        reference = paper_histogram(paper, panel["dataset"]) if paper is not None else {}
        upper = max([float(v.max()) for v in dist.values() if len(v)] + [float(x.max()) for x, _ in reference.values()]
                    + [1e-6])
        bins = np.linspace(0.0, upper, 40)
        heights = {}
        for name in ("clean", "pgd", "onmanifold"):
            values = dist[name]
            if name == "clean" and len(values) and not np.any(values):  # the paper's estimator: delta = 0
                ax.plot([], [], ls="none", label="clean test images: 0 by construction")
            elif len(values):
                counts, _, _ = ax.hist(values, bins=bins, density=True, alpha=0.45 if name != "clean" else 0.25,
                                       color=colors[name],
                                       label=f"{labels[name]} (n={len(values)}, median {np.median(values):.2f})")
                heights[name] = float(np.max(counts))
        for name, (x, density) in reference.items():
            ax.plot(x, density, color=muted(colors[name], 0.2), ls=(0, (4, 2)), lw=1.1,
                    label=f"paper: {labels[name]} (median {histogram_median(x, density):.2f})")
            heights[f"paper {name}"] = float(density.max())
        if paper is not None and not reference:
            ax.plot([], [], ls="none", label="paper: no histogram of this dataset")
        _cut_spikes(ax, heights)
        ax.set(xlabel="L2 distance to the manifold", ylabel="density", title=dataset_title(panel["dataset"]))
        # Below the axes: inside, it covered the tallest bars wherever they fell.
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.tight_layout()
    save_figure(fig, pdf, png)


def _cut_spikes(ax: plt.Axes, heights: dict[str, float]) -> None:
    """Where clean or on-manifold examples pile up in one bar many times taller than the regular examples'
    histogram (FONTS: both lie on the manifold, at 0), cut the y-axis above the regular ones and print the
    tallest bar's height, so the histograms the figure compares stay readable."""
    regular = max([h for k, h in heights.items() if "pgd" in k] + [0.0])
    tallest = max(heights.values(), default=0.0)
    if regular > 0 and tallest > 4 * regular:
        ax.set_ylim(0, 2.5 * regular)
        ax.text(0.98, 0.97, f"y-axis cut: the tallest bar reaches {tallest:.1f}", transform=ax.transAxes,
                ha="right", va="top", fontsize=6)
