"""The paper's published numbers (reference/paper/) beside a run: the comparison table, its per-figure summary,
and the settings in which the run differs from the paper.

Each quantity of the reference is matched with the metrics-table column that measures it here:

| paper quantity | this run |
|---|---|
| test_error | `test_error` |
| pgd_success | `pgd_success` (per (restart, image) pair, the paper's definition) |
| onmanifold_true_success | `onmanifold_success` where `onmanifold_manifold` is the true manifold (FONTS) |
| onmanifold_learned_success | `onmanifold_learned_success` (FONTS), `onmanifold_success` on the learned manifold |

A row of the comparison exists only where both have a value for the same (dataset, quantity, method, N): no
value of the paper is interpolated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .claims import FAIL, INCONCLUSIVE, PASS, _join, mean_ci, signed_text

REFERENCE_COLUMNS = ("dataset", "quantity", "method", "n_train", "value", "shown_in_paper", "paper_figure", "source")
DISTANCE_COLUMNS = ("dataset", "quantity", "network", "method", "x_name", "x", "y", "source")
KEYS = ["dataset", "quantity", "method", "n_train"]
# What each figure of the paper shows, for the summaries; keys are the reference's `paper_figure` values.
FIGURE_TITLES = {
    "fig3 (top) / fig4 (right)": "Figs. 3 (top) and 4 (right): test error",
    "fig3 (bottom)": "Fig. 3: on-manifold success rate",
    "fig4 (left)": "Fig. 4 (left): PGD success rate",
}


def _read(path: str | os.PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"the paper's {what} {path} cannot be read ({err}); restore it from the repository "
                         "(git checkout -- reference/paper)") from err
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"the paper's {what} {path} lacks columns {missing}; restore it from the repository "
                         "(git checkout -- reference/paper)")
    return df


def read_reference(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's plotted means per (dataset, quantity, method, N): reference/paper/paper_reference.csv."""
    return _read(path, REFERENCE_COLUMNS, "reference table")


def read_paper_distances(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's Fig. 2 histograms and ResNet curve: reference/paper/paper_distances_and_resnet.csv."""
    return _read(path, DISTANCE_COLUMNS, "distance histograms")


def run_values(metrics: pd.DataFrame) -> pd.DataFrame:
    """This run's values in the reference's terms: one row per (dataset, quantity, method, N, seed)."""
    base = metrics[["dataset", "mode", "n_train", "seed"]].rename(columns={"mode": "method"})
    parts = [base.assign(quantity=q, value=metrics[q]) for q in ("test_error", "pgd_success") if q in metrics]
    quantity = pd.Series(None, index=metrics.index, dtype=object)
    if "onmanifold_success" in metrics:
        manifold = metrics.get("onmanifold_manifold", pd.Series("", index=metrics.index)).fillna("").astype(str)
        quantity = manifold.map({"true manifold": "onmanifold_true_success",
                                 "learned manifold": "onmanifold_learned_success"})
        parts.append(base.assign(quantity=quantity, value=metrics["onmanifold_success"]))
    if "onmanifold_learned_success" in metrics:
        # A record of its own only where the main on-manifold record is not already the learned manifold's (on
        # datasets without a true manifold both columns hold that one record: counted once).
        own = quantity != "onmanifold_learned_success"
        parts.append(base[own].assign(quantity="onmanifold_learned_success",
                                      value=metrics.loc[own, "onmanifold_learned_success"]))
    long = pd.concat(parts, ignore_index=True) if parts else base.assign(quantity=None, value=np.nan)
    long = long.dropna(subset=["quantity", "value"])[KEYS + ["seed", "value"]].reset_index(drop=True)
    twice = long[long.duplicated(KEYS + ["seed"], keep=False)]
    if len(twice):
        raise ValueError(f"metrics give more than one value per (dataset, quantity, method, N, seed): "
                         f"{twice.head(4).to_dict('records')}; each model must appear once in metrics.csv")
    return long


def comparison_table(metrics: pd.DataFrame, reference: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, quantity, method, N) that the paper and this run both have: the paper's value, this
    run's mean and t interval over seeds (none from one seed), and the difference run - paper."""
    long = run_values(metrics)
    rows = []
    for key, group in long.groupby(KEYS, sort=True):
        mean, ci = mean_ci(group["value"].tolist(), confidence)
        rows.append({**dict(zip(KEYS, key)), "run_mean": mean, "run_ci_low": ci[0] if ci else np.nan,
                     "run_ci_high": ci[1] if ci else np.nan, "n_seeds": len(group)})
    run = pd.DataFrame(rows, columns=KEYS + ["run_mean", "run_ci_low", "run_ci_high", "n_seeds"])
    paper = reference.rename(columns={"value": "paper_value", "source": "paper_source"})
    table = run.merge(paper[KEYS + ["paper_value", "paper_figure", "shown_in_paper", "paper_source"]], on=KEYS)
    table["difference"] = table["run_mean"] - table["paper_value"]
    inside = (table["paper_value"] >= table["run_ci_low"]) & (table["paper_value"] <= table["run_ci_high"])
    table["paper_in_ci"] = inside.astype(object).where(table["run_ci_low"].notna(), np.nan)  # one seed: no interval
    columns = KEYS + ["paper_value", "run_mean", "run_ci_low", "run_ci_high", "n_seeds", "difference", "paper_in_ci",
                      "paper_figure", "shown_in_paper", "paper_source"]
    return table[columns].sort_values(KEYS).reset_index(drop=True)


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per figure of the paper and dataset: how many values are compared, the median and largest absolute
    difference, the median signed difference (run - paper), and how many paper values lie in the run's interval."""
    rows = []
    for (figure, dataset), group in table.groupby(["paper_figure", "dataset"], sort=True):
        diff = group["difference"].to_numpy(dtype=float)
        judged = group["paper_in_ci"].dropna()
        rows.append({"figure": FIGURE_TITLES.get(figure, figure), "dataset": dataset, "values": len(group),
                     "median_abs_difference": float(np.median(np.abs(diff))),
                     "max_abs_difference": float(np.max(np.abs(diff))),
                     "median_difference": float(np.median(diff)),
                     "paper_in_ci": int(judged.astype(bool).sum()), "with_ci": len(judged)})
    summary = pd.DataFrame(rows, columns=["figure", "dataset", "values", "median_abs_difference",
                                          "max_abs_difference", "median_difference", "paper_in_ci", "with_ci"])
    order = {title: i for i, title in enumerate(FIGURE_TITLES.values())}  # the order the paper shows them in
    return summary.sort_values(["figure", "dataset"], key=lambda c: c.map(order) if c.name == "figure" else c,
                               kind="stable").reset_index(drop=True)


def paper_histogram(distances: pd.DataFrame, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The paper's Fig. 2 histograms of `dataset` as (bin centres, density): 'pgd' (regular adversarial examples)
    and 'onmanifold', where the paper shows them. The reference stores each bin's share of the examples, so the
    density is the share over the bin width."""
    out = {}
    rows = distances[(distances["dataset"] == dataset) & (distances["quantity"] == "density")]
    for method, name in (("regular_adversarial", "pgd"), ("onmanifold_adversarial", "onmanifold")):
        part = rows[rows["method"] == method].sort_values("x")
        if len(part) >= 2:
            x, share = part["x"].to_numpy(float), part["y"].to_numpy(float)
            out[name] = (x, share / np.median(np.diff(x)))
    return out


def histogram_median(x: np.ndarray, density: np.ndarray) -> float:
    """The median of a histogram given by equally wide bins (centres `x`) and density, linear within a bin."""
    half = np.median(np.diff(x)) / 2
    edges = np.concatenate([[x[0] - half], x + half])
    cumulative = np.concatenate([[0.0], np.cumsum(density)])
    return float(np.interp(0.5, cumulative / cumulative[-1], edges))


def paper_curve(reference: pd.DataFrame, dataset: str, quantity: str, method: str,
                n_range: tuple[int, int] | None = None) -> pd.DataFrame:
    """The paper's values of one quantity and method against N (within `n_range` if given), sorted by N."""
    part = reference[(reference["dataset"] == dataset) & (reference["quantity"] == quantity)
                     & (reference["method"] == method)]
    if n_range is not None:
        part = part[part["n_train"].between(*n_range)]
    return part[["n_train", "value"]].sort_values("n_train").reset_index(drop=True)


def paper_pairs(reference: pd.DataFrame, dataset: str, x: str, y: str, method: str,
                n_range: tuple[int, int] | None = None) -> pd.DataFrame:
    """The paper's (x, y) pairs of one method at every N where it has both quantities, sorted by N."""
    xs = paper_curve(reference, dataset, x, method, n_range).rename(columns={"value": x})
    ys = paper_curve(reference, dataset, y, method, n_range).rename(columns={"value": y})
    return xs.merge(ys, on="n_train").sort_values("n_train").reset_index(drop=True)


# --- settings in which a run differs from the paper ---------------------------------------------------------------

def _attack_text(section: Mapping) -> str:
    step = (f"Adam lr {section.get('adam_lr')}" if section.get("optimizer") == "adam"
            else f"signed steps of {section.get('step_size')}")
    if section.get("relative_step"):
        step += " box half-widths"
    start = section.get("start", "uniform")
    restarts = section.get("restarts", 1)
    return f"{section.get('steps')} iterations, {step}, {_count(restarts, 'restart')}, start {start}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


PAPER_SETTINGS = {
    "fonts": "1000 Google Fonts",
    "FONTS ranges": "hard (translation ±0.2, shear ±0.5, scale [0.75, 1.15], rotation ±π/2)",
    "FONTS geometry": "paper (the matrix the supplement prints) or sampling (the original generator's "
                      "convention: R Sh s as affine_grid's sampling matrix)",
    "training images N": "250 to 40000 (13 values)",
    "seeds": "5 models per N",
    "classifier epochs": "20",
    "PGD evaluation": "40 iterations, Adam lr 0.005, 5 restarts, start distance_direction, 1000 test images",
    "on-manifold evaluation": "40 iterations, Adam lr 0.005, 5 restarts, start distance_direction, 2500 test images",
    "learned-manifold latent box": "data_range (the implementation behind the published numbers; the text says "
                                   "[-2, 2]^10, the prior's box)",
    "attack inside adversarial training": "40 iterations, Adam lr 0.005, one restart, start distance_direction, "
                                          "no early stop",
    "attack inside transformation training": "40 iterations, Adam lr 0.005, one restart, start "
                                             "distance_direction, no early stop; the supplement's matrix",
    "VAE-GANs": "channels 64/128/256; 10 / 30 / 60 epochs (FONTS / EMNIST / Fashion-MNIST)",
}


def _grid_text(ns: Sequence[int]) -> str:
    return f"{', '.join(str(n) for n in sorted(ns))} ({len(ns)} values)"


def settings_beside_paper(cfg: Mapping, n_fonts: int | None = None, font_set: str | None = None) -> list[dict]:
    """The run's value of each setting in PAPER_SETTINGS, and whether it is the paper's; `font_set` (from
    `data.read_font_set`) names the fonts and their digest."""
    cls, pgd, onm, vae = cfg["classifiers"], cfg["pgd"], cfg["onmanifold"], cfg["vaegan"]
    fonts, datasets = cfg.get("fonts", {}), list(cfg.get("datasets", vae["epochs"]))
    train, steps = cls["adversarial_attack"], vae.get("max_steps", {})
    transformation = cls.get("transformation_attack", {})
    run = {
        "fonts": font_set or (f"{n_fonts} fonts ({fonts.get('source')})" if n_fonts else f"source {fonts.get('source')}"),
        "FONTS ranges": str(fonts.get("ranges")),
        "FONTS geometry": str(fonts.get("geometry")),
        "learned-manifold latent box": str(onm.get("latent_box")),
        "training images N": _grid_text(cls['n_train']) + "".join(
            f"; {d} {m} training: {_grid_text(ns)}" for d, grids in cls.get("n_train_per_mode", {}).items()
            for m, ns in grids.items()),
        "seeds": f"{_count(len(cls['seeds']), 'model')} per N",
        "classifier epochs": str(cls["epochs"]),
        "PGD evaluation": f"{_attack_text(pgd)}, {pgd['n_test']} test images",
        "on-manifold evaluation": f"{_attack_text(onm)}, {onm['n_test']} test images",
        "attack inside adversarial training": _attack_text({**train, "restarts": 1}),
        "attack inside transformation training": f"{_attack_text({**transformation, 'restarts': 1})}; geometry "
                                                 f"{transformation.get('geometry')}",
        "VAE-GANs": f"channels {'/'.join(str(c) for c in vae['channels'])}; epochs "
                    + ", ".join(f"{d} {vae['epochs'][d]}" for d in datasets)
                    + (f"; at most {', '.join(f'{d} {steps[d]}' for d in datasets if steps.get(d))} steps"
                       if any(steps.get(d) for d in datasets) else ""),
    }
    same = {
        "fonts": bool(n_fonts) and n_fonts >= 1000 and fonts.get("source") == "archive",
        "FONTS ranges": fonts.get("ranges") == "hard",
        "FONTS geometry": fonts.get("geometry") in ("sampling", "paper"),
        "learned-manifold latent box": onm.get("latent_box") == "data_range",
        "training images N": len(cls["n_train"]) >= 13,
        "seeds": len(cls["seeds"]) >= 5,
        "classifier epochs": cls["epochs"] == 20,
        "PGD evaluation": _is_paper_attack(pgd) and pgd["n_test"] >= 1000,
        "on-manifold evaluation": _is_paper_attack(onm) and onm["n_test"] >= 2500,
        "attack inside adversarial training": _is_paper_attack(train, restarts=1),
        "attack inside transformation training": _is_paper_attack(transformation, restarts=1)
        and transformation.get("geometry") == "paper",
        "VAE-GANs": list(vae["channels"]) == [64, 128, 256] and not any(steps.get(d) for d in datasets),
    }
    return [{"setting": k, "paper": PAPER_SETTINGS[k], "run": run[k], "as_paper": same[k]} for k in PAPER_SETTINGS]


def _is_paper_attack(section: Mapping, restarts: int = 5) -> bool:
    """The paper's attack: 40 Adam iterations at lr 0.005 from the distance-and-direction start."""
    return (section.get("optimizer") == "adam" and section.get("adam_lr", 0.005) == 0.005
            and not section.get("relative_step")
            and section.get("start") == "distance_direction" and section.get("steps") == 40
            and section.get("restarts", restarts) == restarts)


def comparison_markdown(summary: pd.DataFrame, settings: Sequence[dict]) -> list[str]:
    """Markdown lines: the per-figure summary of the paper comparison and the settings beside the paper's."""
    lines = ["## Beside the paper's numbers", "",
             "Every value this run and the paper both have (same dataset, quantity, method and N) is in "
             "`results/tables/paper_comparison.csv`; per figure (difference = this run − the paper):", "",
             "| figure | dataset | values | median abs. difference | largest abs. difference | median difference | "
             "paper value in the run's interval |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        inside = f"{row.paper_in_ci} of {row.with_ci}" if row.with_ci else "– (one seed)"
        lines.append(f"| {row.figure} | {row.dataset} | {row.values} | {row.median_abs_difference:.3f} | "
                     f"{row.max_abs_difference:.3f} | {signed_text(row.median_difference)} | {inside} |")
    if summary.empty:
        lines = lines[:-2] + ["No value of this run has a counterpart in the paper (same dataset, quantity, method "
                              "and N)."]
    lines += ["", "Settings of this run beside the paper's (the paper's text):", "",
              "| setting | paper | this run | |", "|---|---|---|---|"]
    lines += [f"| {s['setting']} | {s['paper']} | {s['run']} | {'same' if s['as_paper'] else 'differs'} |"
              for s in settings]
    return lines + [""]


# --- the calibration: the paper's own numbers judged as if they were a run of this study -------------------------

TRAINED_METHODS = ("normal", "adversarial", "onmanifold_true", "onmanifold_learned", "transformation")
# An N grid: one for every dataset and mode, or a function of (dataset, mode) giving each its own.
Grid = Sequence[int] | Callable[[str, str], Sequence[int]]


def paper_as_run(reference: pd.DataFrame, n_grid: Grid | None = None) -> pd.DataFrame:
    """The paper's means as a metrics table of one pseudo-seed (0): one row per (dataset, method, N) of the
    methods this study trains, in the run's columns (on FONTS `onmanifold_success` is the true manifold's), at
    the N of `n_grid` (one grid, or a function of dataset and mode giving each its own) where given.
    The paper publishes no per-model values, so no interval over seeds exists for it."""
    ref = reference[reference["method"].isin(TRAINED_METHODS)]
    if n_grid is not None:
        grid_of = n_grid if callable(n_grid) else lambda dataset, mode: n_grid
        ref = ref[[n in grid_of(d, m) for d, m, n in zip(ref["dataset"], ref["method"], ref["n_train"])]]
    columns = ["dataset", "mode", "n_train", "seed", "test_error", "pgd_success", "onmanifold_success",
               "onmanifold_manifold", "onmanifold_learned_success"]
    if ref.empty:  # a grid the paper never trained (the tiny test run's): nothing to compare
        return pd.DataFrame(columns=columns)
    wide = ref.pivot_table(index=["dataset", "method", "n_train"], columns="quantity", values="value").reset_index()
    wide = wide.rename(columns={"method": "mode"}).assign(seed=0)
    true = wide["dataset"] == "fonts"
    learned = wide.get("onmanifold_learned_success", pd.Series(np.nan, index=wide.index))
    wide["onmanifold_success"] = np.where(true, wide.get("onmanifold_true_success", np.nan), learned)
    wide["onmanifold_manifold"] = np.where(true, "true manifold", "learned manifold")
    wide["onmanifold_learned_success"] = np.where(true, learned, np.nan)
    return wide.dropna(subset=["test_error"]).reset_index(drop=True)[columns]


def paper_distance_summaries(distances: pd.DataFrame, offmanifold_distance: float) -> dict[str, dict[int, dict]]:
    """Claim 1's summaries of the paper's Fig. 2 histograms (FONTS: regular examples on the true manifold; EMNIST:
    regular and on-manifold examples on the approximated one). The paper gives no perturbation norms and no
    clean images' distances, so those stay unknown."""
    out = {}
    for dataset, manifold in (("fonts", "true"), ("emnist", "local linear")):
        hist = paper_histogram(distances, dataset)
        if "pgd" not in hist:
            continue
        x, density = hist["pgd"]
        share = density / density.sum()
        onm = hist.get("onmanifold")
        out[dataset] = {0: {"manifold": manifold, "regular_median": histogram_median(x, density),
                            "onmanifold_median": histogram_median(*onm) if onm else np.nan,
                            "clean_median": np.nan, "n_regular": len(x), "n_onmanifold": len(onm[0]) if onm else 0,
                            "regular_share_off": float(share[x > offmanifold_distance].sum()),
                            "over_perturbation_median": np.nan,
                            "source": "reference/paper/paper_distances_and_resnet.csv"}}
    return out


def calibrate(reference: pd.DataFrame, distances: pd.DataFrame, cfg: Mapping,
              n_grid: Grid | None = None, datasets: Sequence[str] = ("fonts", "emnist", "fashion")) -> list:
    """The claims judged on the paper's published numbers with the run's statistics and thresholds, on every
    dataset (or those given). With a single pseudo-seed there is no interval, so the verdicts are decided on the
    value itself."""
    from .claims import judge

    claims_cfg = {**cfg["claims"], "decide_on": "mean"}
    paper_cfg = {**cfg, "claims": claims_cfg, "datasets": list(datasets)}
    summaries = paper_distance_summaries(distances, claims_cfg["offmanifold_distance"])
    return judge(paper_as_run(reference, n_grid), summaries, paper_cfg, "reference/paper/paper_reference.csv")


def paper_reach(reference: pd.DataFrame, distances: pd.DataFrame, cfg: Mapping, key: tuple) -> int | None:
    """The smallest largest-N of the paper's own grid (its N values up to it) on which the paper's own numbers
    pass the check `key` = (claim, dataset, statistic); None where even its whole grid does not."""
    grid = sorted(int(n) for n in reference.loc[reference["dataset"] == key[1], "n_train"].unique())
    for largest in grid:
        found = [ch for ch in calibrate(reference, distances, cfg, [n for n in grid if n <= largest], [key[1]])
                 if (ch.claim, ch.dataset, ch.statistic) == key]
        if found and found[0].verdict == PASS:
            return largest
    return None


def attach_paper_values(checks: Sequence, paper_checks: Sequence, on_run_grid: Sequence = (),
                        reach=None) -> None:
    """Give each of the run's checks the paper's value and verdict of the same statistic, and, where given, the
    paper's value on the run's own N grid (what the run's grid can resolve of the paper's curves).

    A check that the paper's own numbers pass on the paper's grid but not on the run's cannot decide on the run's
    grid either, whatever else already holds it back: its verdict becomes INCONCLUSIVE, saying so, and what would
    decide it is a grid reaching as far as the paper's own numbers need (`reach(key)`: that largest N, or None)."""
    paper = {(ch.claim, ch.dataset, ch.statistic): ch for ch in paper_checks}
    grid = {(ch.claim, ch.dataset, ch.statistic): ch for ch in on_run_grid}
    for check in checks:
        key = (check.claim, check.dataset, check.statistic)
        if key in paper and paper[key].per_seed:
            check.paper_value, check.paper_verdict = paper[key].mean, paper[key].verdict
        if key in grid and grid[key].per_seed:
            check.reference["paper_on_this_grid"] = f"{grid[key].mean:.3f} ({grid[key].verdict})"
            if (check.paper_verdict == PASS and grid[key].verdict != PASS and not check.beyond_paper
                    and check.verdict in (PASS, FAIL, INCONCLUSIVE)):
                guard = (f"the paper's own numbers give {grid[key].mean:.3f} ({grid[key].verdict}) on "
                         "this run's N grid, so the grid cannot decide this check")
                check.undecidable = _join(check.undecidable, guard)
                check.verdict, check.reason = INCONCLUSIVE, _join(check.reason, guard)
                largest = reach(key) if reach else None
                check.to_decide = (f"an N grid holding the paper's own N values up to N = {largest:,}, the least of "
                                   "its grids on which its own numbers pass it" if largest else
                                   "an N grid on which the paper's own numbers decide it, as the paper's "
                                   "(config/paper.yaml)")
