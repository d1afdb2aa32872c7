"""The verdict on each of the paper's four claims, per dataset, from the metrics table and the distance files.

Every statistic is computed once per seed, then summarized by its mean and a t confidence interval over seeds;
a threshold from the config decides PASS or FAIL. Each check names the files it was computed from.
"""

from __future__ import annotations

import json
import math
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import h5py
import numpy as np
import pandas as pd
from scipy import stats

from .grid import largest_n
from .io import atomic_path

PAPER_DATASETS = ("fonts", "emnist", "fashion")
PASS, FAIL, INCONCLUSIVE, NOT_RUN = "PASS", "FAIL", "INCONCLUSIVE", "NOT RUN"

CLAIMS = {
    1: dict(title="Regular adversarial examples leave the manifold", figure="Fig. 2",
            paper="Regular adversarial examples clearly exhibit non-zero distance to the manifold; their projections "
                  "are almost always the original test images, so they leave the manifold in an almost orthogonal "
                  "direction."),
    2: dict(title="On-manifold adversarial examples exist", figure="Figs. 1 and 2",
            paper="Adversarial examples constrained to the (true or VAE-GAN approximated) manifold exist and are "
                  "found by attacking the latent code of a class-specific decoder."),
    3: dict(title="On-manifold robustness is essentially generalization", figure="Fig. 3",
            paper="Better generalization (more training images) also reduces on-manifold success rate; on-manifold "
                  "adversarial training (true manifold) and adversarial transformation training boost "
                  "generalization, especially for few training images."),
    4: dict(title="Regular robustness does not depend on generalization", figure="Fig. 4",
            paper="Except for adversarial training, success rate is hardly influenced by test error; adversarial "
                  "training requires roughly twice the amount of training data to reach the same accuracy as "
                  "normal training."),
}


@dataclass
class Check:
    """One statistic of one claim on one dataset: per-seed values, their summary and the verdict."""

    claim: int
    dataset: str
    statistic: str
    description: str
    op: str  # ">=", ">" or "within" (|value| <= threshold)
    threshold: float
    per_seed: dict[int, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    reason: str = ""
    undecidable: str = ""  # why the data cannot decide (saturated success, a grid too coarse): INCONCLUSIVE
    beyond_paper: str = ""  # why the paper does not make this claim for the dataset: judged, but labelled so
    # False where the statistic can say nothing about the claim on this data (success saturated at its ceiling):
    # reported INCONCLUSIVE, but left out of the claim's verdict, which its other checks decide.
    counts: bool = True
    to_decide: str = ""  # for an INCONCLUSIVE check: what would decide it, and the command that runs that
    paper_value: float = math.nan  # the same statistic on the paper's published numbers (calibration)
    paper_verdict: str = ""
    n_seeds: int = 0
    mean: float = math.nan
    ci: tuple[float, float] | None = None
    verdict: str = NOT_RUN


def mean_ci(values: Sequence[float], confidence: float) -> tuple[float, tuple[float, float] | None]:
    """Mean and two-sided t confidence interval over seeds; no interval from a single seed."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, None
    if len(x) == 1:
        return float(x[0]), None
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), (float(x.mean() - half), float(x.mean() + half))


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "within": lambda v, t: abs(v) <= t,
}


# The config that decides every claim the paper makes for FONTS and Fashion-MNIST (5 seeds, N points 2x apart).
DECIDING_RUN = "`make run CONFIG=config/decide.yaml`"
DECIDING_SEEDS = 5
MOST_SEEDS = 50


def _margin(mean: float, op: str, threshold: float) -> float:
    """How far a mean lies from its threshold (from the band's edge, for "within")."""
    return abs(abs(mean) - threshold) if op == "within" else abs(mean - threshold)


def seeds_to_decide(values: Sequence[float], op: str, threshold: float, confidence: float,
                    most: int = MOST_SEEDS) -> int | None:
    """The fewest seeds whose t interval, at this mean and per-seed spread, would lie on one side of the threshold
    (inside or outside the band for "within"); None where even `most` would not (or the spread is zero)."""
    x = np.asarray(values, dtype=float)
    margin, sd = _margin(float(x.mean()), op, threshold), float(x.std(ddof=1))
    if sd == 0 or margin == 0:
        return None
    return next((n for n in range(2, most + 1)
                 if stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) < margin), None)


def seeds_hint(values: Sequence[float], op: str, threshold: float, confidence: float) -> str:
    """What would decide a check whose interval crosses its threshold, from its seeds' spread."""
    x = np.asarray(values, dtype=float)
    n, spread = seeds_to_decide(x, op, threshold, confidence), f"sd {_fmt(float(x.std(ddof=1)))} over {len(x)} seeds"
    if n is None:
        return (f"more than {MOST_SEEDS} seeds at this spread ({spread}, the mean "
                f"{_fmt(_margin(float(x.mean()), op, threshold))} from the threshold): seeds alone will not decide it")
    where = (f"{DECIDING_RUN} runs {DECIDING_SEEDS}" if n <= DECIDING_SEEDS
             else f"more than {DECIDING_RUN}'s {DECIDING_SEEDS}: set `classifiers.seeds`")
    return f"about {n} seeds at this spread ({spread}): {where}"


def decide(check: Check, confidence: float, decide_on: str) -> Check:
    """Summarize the per-seed values of `check` and set its verdict (see the schema's `claims.decide_on`)."""
    values = [v for v in check.per_seed.values() if np.isfinite(v)]
    check.n_seeds = len(values)
    check.mean, check.ci = mean_ci(values, confidence)
    if not values:
        # Nothing measured: the models or files were not made (NOT RUN); measured but undefined: INCONCLUSIVE.
        check.verdict = INCONCLUSIVE if check.per_seed else NOT_RUN
        if check.per_seed:
            check.reason = _join(check.reason, "undefined (NaN) on every seed")
        return check
    passes = _OPS[check.op]
    check.verdict = PASS if passes(check.mean, check.threshold) else FAIL
    if check.undecidable:
        check.verdict, check.reason = INCONCLUSIVE, _join(check.reason, check.undecidable)
        return check
    if decide_on == "ci":
        if check.ci is None:
            check.verdict, check.reason = INCONCLUSIVE, _join(check.reason, "one seed gives no confidence interval")
            check.to_decide = f"2 or more seeds (`classifiers.seeds`; {DECIDING_RUN} runs {DECIDING_SEEDS})"
        else:
            lo, hi = check.ci
            if check.op == "within":
                inside, outside = max(abs(lo), abs(hi)) <= check.threshold, lo > check.threshold or hi < -check.threshold
            else:
                inside, outside = passes(lo, check.threshold), not passes(hi, check.threshold)
            check.verdict = PASS if inside else FAIL if outside else INCONCLUSIVE
            if check.verdict == INCONCLUSIVE:
                check.to_decide = seeds_hint(values, check.op, check.threshold, confidence)
    return check


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --- Claims 1 and 2: distances to the manifold, on-manifold success -------------------------------------------


def distance_summary(path: str | os.PathLike, offmanifold_distance: float) -> dict:
    """What claim 1 reads from one distances file: the manifold, medians of the successful regular and on-manifold
    examples' distances and of the clean images', the share of successful regular examples farther than
    `offmanifold_distance`, and their median distance over their perturbation's L2 norm."""
    with h5py.File(path, "r") as h5:
        ok = {a: h5[f"{a}/success"][()].astype(bool) for a in ("pgd", "onmanifold")}
        regular = h5["pgd/distance_adversarial"][()][ok["pgd"]]
        onmanifold = h5["onmanifold/distance_adversarial"][()][ok["onmanifold"]]
        ratio = h5["pgd/distance_to_perturbation"][()][ok["pgd"]]
        onm_ratio = (h5["onmanifold/distance_to_perturbation"][()][ok["onmanifold"]]
                     if "onmanifold/distance_to_perturbation" in h5 else np.array([]))
        clean = h5["pgd/distance_clean"][()] if "pgd/distance_clean" in h5 else np.array([])
        manifold = str(h5.attrs["manifold"])
    median = lambda x: float(np.median(x)) if len(x) else math.nan  # noqa: E731
    return {"manifold": manifold, "regular_median": median(regular), "onmanifold_median": median(onmanifold),
            "clean_median": median(clean), "n_regular": int(len(regular)), "n_onmanifold": int(len(onmanifold)),
            "regular_share_off": float(np.mean(regular > offmanifold_distance)) if len(regular) else math.nan,
            "over_perturbation_median": median(ratio), "onmanifold_over_perturbation_median": median(onm_ratio),
            "source": str(path)}


def offmanifold_check(dataset: str, summaries: Mapping[int, dict], cfg: Mapping) -> Check:
    """Claim 1 per seed. On a true manifold (FONTS), the share of successful regular examples farther from it than
    `offmanifold_distance`: a ratio to on-manifold examples would divide by the projection's residual. On an
    approximated manifold, their median distance over that of successful on-manifold examples, the
    approximation's own floor. The other quantities are reported beside."""
    true = any(s["manifold"] == "true" for s in summaries.values())
    if true:
        check = Check(1, dataset, "offmanifold_share",
                      f"share of successful regular (PGD) examples farther than {cfg['offmanifold_distance']} (L2) "
                      "from the true manifold (normal training, largest N)", ">=", cfg["offmanifold_share_min"])
    else:
        check = Check(1, dataset, "distance_ratio",
                      "median distance to the approximated manifold of successful regular (PGD) examples / that of "
                      "successful on-manifold examples (normal training, largest N)", ">=",
                      cfg["distance_ratio_min"])
    for seed, summary in sorted(summaries.items()):
        check.sources.append(summary["source"])
        check.reference.setdefault("manifold", summary["manifold"])
        missing = summary["n_regular"] == 0 or (not true and summary["n_onmanifold"] == 0)
        if missing:
            check.per_seed[seed] = math.nan
            check.reason = _join(check.reason, f"seed {seed}: no successful example to measure")
            continue
        check.per_seed[seed] = (summary["regular_share_off"] if true
                                else summary["regular_median"] / max(summary["onmanifold_median"], 1e-6))
    for key in ("regular_median", "onmanifold_median", "clean_median", "over_perturbation_median",
                "onmanifold_over_perturbation_median"):
        values = [s.get(key, math.nan) for s in summaries.values()]  # the paper's histograms give no ratios
        check.reference[f"median_{key.replace('_median', '')}"] = _nanmean(values)
    return check


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _rows(df: pd.DataFrame, dataset: str, mode: str) -> pd.DataFrame:
    return df[(df["dataset"] == dataset) & (df["mode"] == mode)]


def onmanifold_exists_check(df: pd.DataFrame, dataset: str, column: str, threshold: float, source: str) -> Check:
    """Claim 2: on-manifold success rate of the normally trained models with the largest N, per seed."""
    check = Check(2, dataset, column, f"on-manifold success rate ({column}) under normal training at the largest N",
                  ">=", threshold, sources=[source])
    normal = _rows(df, dataset, "normal")
    if normal.empty:
        check.reason = "no normally trained model"
        return check
    top = normal[normal["n_train"] == normal["n_train"].max()]
    check.per_seed = {int(r.seed): float(getattr(r, column)) for r in top.itertuples()}
    check.reference = {"n_train": int(top["n_train"].iloc[0]),
                       "manifold": str(top["onmanifold_manifold"].iloc[0]) if "onmanifold_manifold" in top else ""}
    learned = column.replace("onmanifold", "onmanifold_learned", 1)
    if learned in top and top[learned].notna().any():
        check.reference[f"mean_{learned}"] = float(top[learned].mean())
    for kept in ("onmanifold_class_kept", "onmanifold_learned_class_kept"):  # the judge's, where it ran
        if kept in top and top[kept].notna().any():
            check.reference[f"mean_{kept}"] = float(top[kept].mean())
    return check


# --- Claim 3: on-manifold robustness and generalization -----------------------------------------------------


def rank_correlation_check(df: pd.DataFrame, dataset: str, column: str, modes: Sequence[str], threshold: float,
                           source: str) -> Check:
    """Claim 3: per seed, Spearman correlation of on-manifold success with test error over the chosen modes' models."""
    rows = df[(df["dataset"] == dataset) & df["mode"].isin(list(modes))].dropna(subset=[column, "test_error"])
    present = sorted(set(rows["mode"]))
    check = Check(3, dataset, "spearman_onmanifold_success_vs_test_error",
                  f"Spearman rank correlation of {column} with test error over the models of a seed "
                  f"(modes: {', '.join(present) or 'none'}; every N)", ">=", threshold, sources=[source])
    for seed, group in rows.groupby("seed"):
        if len(group) < 3 or group[column].nunique() < 2 or group["test_error"].nunique() < 2:
            check.per_seed[int(seed)] = math.nan
            check.reason = _join(check.reason, f"seed {seed}: fewer than 3 models or no spread to rank")
            continue
        check.per_seed[int(seed)] = float(stats.spearmanr(group[column], group["test_error"]).statistic)
    check.reference = {"models_per_seed": int(rows.groupby("seed").size().max()) if len(rows) else 0}
    if rows.empty:
        check.reason = f"no model of the modes {', '.join(modes)}"
    return check


def error_reduction(df: pd.DataFrame, dataset: str, mode: str) -> dict[int, float]:
    """Per seed: test error of normal training minus that of `mode`, averaged over the N both were trained on."""
    normal = _rows(df, dataset, "normal").set_index(["seed", "n_train"])["test_error"]
    other = _rows(df, dataset, mode).set_index(["seed", "n_train"])["test_error"]
    gain = (normal - other).dropna()
    return {int(seed): float(g.mean()) for seed, g in gain.groupby(level="seed")}


def error_reduction_check(df: pd.DataFrame, dataset: str, mode: str, threshold: float, source: str) -> Check:
    """Claim 3: the judged mode lowers normal training's test error; the other modes' gains are reported beside."""
    check = Check(3, dataset, f"test_error_reduction[{mode}]",
                  f"test error of normal training minus that of {mode} training, averaged over N", ">", threshold,
                  sources=[source])
    check.per_seed = error_reduction(df, dataset, mode)
    if not check.per_seed:
        check.reason = f"no {mode} and normal models with a common N and seed"
    for other in ("onmanifold_true", "onmanifold_learned", "transformation"):
        gains = error_reduction(df, dataset, other)
        if other != mode and gains:
            check.reference[f"mean_test_error_reduction[{other}]"] = float(np.mean(list(gains.values())))
    return check


# --- Claim 4: regular robustness and generalization -------------------------------------------------------------


def success_change(df: pd.DataFrame, dataset: str, mode: str, column: str) -> dict[int, float]:
    """Per seed: the change of the regular success rate that test error explains over the mode's models (N
    varies): least-squares slope times the range of their test errors, in success-rate units."""
    changes = {}
    for seed, g in _rows(df, dataset, mode).dropna(subset=[column, "test_error"]).groupby("seed"):
        if g["test_error"].nunique() >= 2:
            slope = float(np.polyfit(g["test_error"], g[column], 1)[0])
            changes[int(seed)] = slope * float(g["test_error"].max() - g["test_error"].min())
    return changes


def saturated_seeds(df: pd.DataFrame, dataset: str, column: str, level: float) -> list[int]:
    """The seeds whose normally trained models all have `column` >= `level`: on such a seed success is at its
    ceiling and carries no information on how it depends on test error."""
    normal = _rows(df, dataset, "normal").dropna(subset=[column])
    return sorted(int(seed) for seed, g in normal.groupby("seed") if (g[column] >= level).all())


def _saturated(df: pd.DataFrame, dataset: str, column: str, level: float) -> str:
    """Why the data cannot decide, where every seed is saturated (`saturated_seeds`); else empty."""
    values = _rows(df, dataset, "normal")[column].dropna()
    seeds = set(_rows(df, dataset, "normal").dropna(subset=[column])["seed"])
    if len(values) and set(saturated_seeds(df, dataset, column, level)) == seeds:
        return (f"saturated: every normally trained model has {column} >= {level} (lowest {values.min():.3f}), so "
                "success carries no information on its dependence on test error")
    return ""


def success_change_check(df: pd.DataFrame, dataset: str, column: str, cfg: Mapping, source: str) -> Check:
    """Claim 4: under normal training, regular success barely changes with test error. Judged per seed: a seed
    whose normal models are all saturated (`saturated_seeds`) says nothing and is left out, and the note says so;
    where every seed is saturated the check cannot decide."""
    check = Check(4, dataset, f"success_change[{column}, normal]",
                  f"change of {column} explained by test error over the normally trained models of a seed (slope "
                  "x range of test errors)", "within", cfg["success_change_max"], sources=[source])
    changes = success_change(df, dataset, "normal", column)
    if not changes:
        check.reason = "fewer than 2 normally trained models with different test errors per seed"
    check.undecidable = _saturated(df, dataset, column, cfg["saturation"])
    # At the ceiling on every seed success cannot move with test error whatever the models are: the check is
    # reported but does not hold up the claim, which the contrast with adversarial training then decides.
    check.counts = not check.undecidable
    saturated = [s for s in saturated_seeds(df, dataset, column, cfg["saturation"]) if s in changes]
    if check.undecidable or not saturated:
        check.per_seed = changes
        return check
    check.per_seed = {s: v for s, v in changes.items() if s not in saturated}
    check.reason = _join(check.reason, f"left out as saturated (every normal model at {column} >= "
                                       f"{cfg['saturation']}): seed {', '.join(map(str, saturated))}")
    return check


def success_contrast_check(df: pd.DataFrame, dataset: str, column: str, cfg: Mapping, source: str) -> Check:
    """Claim 4: "except for adversarial training": its success changes with test error clearly more. Judged also
    where normal training is saturated: adversarial training's change against a flat normal one is what the
    claim is about."""
    check = Check(4, dataset, f"success_contrast[{column}, adversarial - normal]",
                  f"change of {column} explained by test error under adversarial training minus that under normal "
                  "training (same seed)", ">=", cfg["success_contrast_min"], sources=[source])
    normal, adversarial = (success_change(df, dataset, m, column) for m in ("normal", "adversarial"))
    check.per_seed = {s: adversarial[s] - normal[s] for s in sorted(set(normal) & set(adversarial))}
    if not check.per_seed:
        check.reason = "needs normal and adversarial training with 2 or more test errors per seed"
    check.reference = {"mean_change_normal": _nanmean(list(normal.values())),
                       "mean_change_adversarial": _nanmean(list(adversarial.values()))}
    saturated = saturated_seeds(df, dataset, column, cfg["saturation"])
    if saturated:
        check.reference["saturated_seeds"] = saturated
    return check


def matching_n(n_grid: np.ndarray, errors: np.ndarray, target: float) -> tuple[float, str]:
    """The N at which a test-error curve over `n_grid` reaches `target`, interpolating linearly in log N.

    The curve is made monotone by its running minimum (an N never does worse than a smaller one). Returns
    (N, "exact"), or the grid's end with "above" (the target needs more than the largest N) or "below" (the
    smallest N already reaches it).
    """
    order = np.argsort(n_grid)
    n, err = n_grid[order].astype(float), np.minimum.accumulate(errors[order])
    if target < err[-1]:
        return float(n[-1]), "above"
    if target >= err[0]:
        return float(n[0]), "below"
    i = int(np.argmax(err <= target))  # first grid point at or below the target; err[i - 1] > target
    frac = (err[i - 1] - target) / (err[i - 1] - err[i])
    return float(np.exp(np.log(n[i - 1]) + frac * (np.log(n[i]) - np.log(n[i - 1])))), "exact"


def sample_complexity(normal: pd.DataFrame, adversarial: pd.DataFrame) -> tuple[float, str]:
    """For one seed: N needed by adversarial training / N of normal training, at the same test error.

    Measured at the largest N of normal training whose test error adversarial training reaches within its grid;
    where it never does, the ratio is only bounded: from below (adversarial training would need more than its
    largest N) or, failing that, from above (it already matches with its smallest N).
    """
    ratio, kind, _, _ = sample_complexity_detail(normal, adversarial)
    return ratio, kind


def sample_complexity_detail(normal: pd.DataFrame, adversarial: pd.DataFrame) -> tuple[float, str, int, float]:
    """`sample_complexity`, with the normal N it was measured at and the factor between the two adversarial grid
    points that bracket the matched N (inf where the value is a bound)."""
    grid = adversarial.sort_values("n_train")
    n_adv, err_adv = grid["n_train"].to_numpy(), grid["test_error"].to_numpy()
    found: dict[str, list[tuple[float, int, float]]] = {"exact": [], "above": [], "below": []}  # ratio, N, N_adv
    for row in normal.sort_values("n_train").itertuples():
        n, kind = matching_n(n_adv, err_adv, row.test_error)
        found[kind].append((n / row.n_train, int(row.n_train), n))
    if found["exact"]:
        ratio, n_normal, n = found["exact"][-1]
        # An exact match lies strictly above the smallest grid point, so it has a grid point on either side.
        upper = int(np.searchsorted(n_adv, n))
        return ratio, "exact", n_normal, float(n_adv[upper] / n_adv[upper - 1])
    if found["above"]:
        best = max(found["above"])
        return best[0], "lower bound", best[1], math.inf
    best = min(found["below"])
    return best[0], "upper bound", best[1], math.inf


def sample_complexity_check(df: pd.DataFrame, dataset: str, cfg: Mapping, source: str) -> Check:
    """Claim 4: the training-set size adversarial training needs to reach normal training's test error.

    Resolved only where measured in the upper half of the N grid (log N) between adversarial grid points at most
    `sample_complexity_resolution` apart; elsewhere the grid is too coarse to tell a factor of 2, and the check
    says so (INCONCLUSIVE)."""
    check = Check(4, dataset, "sample_complexity_ratio",
                  "N adversarial training needs to reach the test error of normal training at N, divided by N "
                  "(at the largest N where adversarial training reaches it; log-linear interpolation)", ">=",
                  cfg["sample_complexity_min"], sources=[source])
    normal, adversarial = _rows(df, dataset, "normal"), _rows(df, dataset, "adversarial")
    kinds, coarse, bounds, finer = {}, [], {}, False
    for seed in sorted(set(normal["seed"]) & set(adversarial["seed"])):
        n_seed, a_seed = normal[normal["seed"] == seed], adversarial[adversarial["seed"] == seed]
        if a_seed["n_train"].nunique() < 2:
            continue
        ratio, kind, n_at, bracket = sample_complexity_detail(n_seed, a_seed)
        kinds[int(seed)] = kind
        # A bound is not a ratio: averaging "at least 8" with an exact 2 would mean neither, so only exact
        # ratios are judged and the bounds are named beside them.
        if kind == "exact":
            check.per_seed[int(seed)] = ratio
        else:
            bounds[int(seed)] = f"{kind} {ratio:.3g}"
        middle = math.sqrt(n_seed["n_train"].min() * n_seed["n_train"].max())
        if kind == "exact" and (n_at < middle or bracket > cfg["sample_complexity_resolution"]):
            coarse.append(f"seed {seed}: exact at N = {n_at}, between grid points {bracket:g}x apart")
            finer = finer or bracket > cfg["sample_complexity_resolution"]
    if bounds:
        check.reference["bounds_per_seed"] = bounds
        check.reason = "left out of the mean, as bounds: " + "; ".join(f"seed {s}: {b}" for s, b in bounds.items())
        if not check.per_seed:
            coarse.append("no seed's adversarial training reaches normal training's test error within the grid")
    if not kinds:
        check.reason = "needs normal and adversarial training with at least 2 values of N per seed"
    check.reference["kind_per_seed"] = kinds
    points = np.sort(adversarial["n_train"].unique()).astype(float)
    if len(points) > 1 and len(normal):
        middle = math.sqrt(normal["n_train"].min() * normal["n_train"].max())
        upper = points[1:] > middle
        finer = finer or bool(np.any(points[1:][upper] / points[:-1][upper] > cfg["sample_complexity_resolution"]))
    if coarse:
        check.undecidable = (f"grid too {'coarse' if finer else 'short'} to resolve a factor of about 2 "
                             f"({'; '.join(coarse)}; resolved needs "
                             f"the upper half of the grid in log N and grid points at most "
                             f"{cfg['sample_complexity_resolution']:g}x apart)")
        # Grid points close enough, but matched in the grid's lower half only: adversarial training reaches normal
        # training's error at larger N beyond the grid, so a grid reaching further decides it, not a finer one.
        check.to_decide = (f"an N grid reaching beyond N = {int(adversarial['n_train'].max()):,}, where adversarial "
                           "training reaches normal training's test error at larger N" if not finer else
                           f"an N grid with points at most {cfg['sample_complexity_resolution']:g}x apart in its upper "
                           f"half, as {DECIDING_RUN}'s")
    return check


# --- Assembly ---------------------------------------------------------------------------------------------------


# Where the paper does not make a claim for a dataset: its statistic is still measured, but labelled and left out
# of the claim's verdict.
BEYOND_PAPER = {
    (1, "fashion"): "the paper shows the distance to the manifold (Fig. 2) for FONTS and EMNIST only",
    ("sample_complexity_ratio", "emnist"): "the paper claims the data factor for FONTS (with a ResNet-13)",
    ("sample_complexity_ratio", "fashion"): "the paper claims the data factor for FONTS (with a ResNet-13)",
}


def _beyond(check: Check) -> str:
    return BEYOND_PAPER.get((check.claim, check.dataset), BEYOND_PAPER.get((check.statistic, check.dataset), ""))


def judge(df: pd.DataFrame, distances: Mapping[str, Mapping[int, dict]], cfg: Mapping, source: str) -> list[Check]:
    """Every check of every claim for every paper dataset; datasets not in `cfg['datasets']` are NOT RUN.

    `cfg` is the workflow config (its `claims`, `figures`, `datasets` and `classifiers` sections are read);
    `distances` maps dataset to {seed: `distance_summary`}.
    """
    c, fig = cfg["claims"], cfg["figures"]
    onm_column, pgd_column = fig["onmanifold_success_column"], fig["success_column"]
    checks = []
    for dataset in PAPER_DATASETS:
        mode = c["error_reduction_modes"][dataset]
        if dataset not in cfg["datasets"]:
            checks += _not_run(dataset, f"dataset not in this run's config (datasets: {', '.join(cfg['datasets'])})")
            continue
        data = df[df["dataset"] == dataset]
        dataset_checks = [
            offmanifold_check(dataset, distances.get(dataset, {}), c),
            onmanifold_exists_check(data, dataset, onm_column, c["onmanifold_success_min"], source),
            rank_correlation_check(data, dataset, onm_column, c["correlation_modes"], c["correlation_min"], source),
            error_reduction_check(data, dataset, mode, c["error_reduction_min"], source),
            success_change_check(data, dataset, pgd_column, c, source),
            success_contrast_check(data, dataset, pgd_column, c, source),
            sample_complexity_check(data, dataset, c, source),
        ]
        if not distances.get(dataset):
            dataset_checks[0].reason = "no distances file"
        for check in dataset_checks:
            check.beyond_paper = _beyond(check)
        checks += [decide(ch, c["confidence"], c["decide_on"]) for ch in dataset_checks]
    return checks


def _not_run(dataset: str, reason: str) -> list[Check]:
    names = {1: "offmanifold_share / distance_ratio", 2: "onmanifold_success", 3: "spearman / test_error_reduction",
             4: "success_change / success_contrast / sample_complexity_ratio"}
    return [Check(claim, dataset, name, "", ">=", math.nan, reason=reason) for claim, name in names.items()]


def counted(checks: Sequence) -> list:
    """The checks (Check objects or their JSON dicts) that decide a claim: those that can say something about it
    on this data (`Check.counts`), or all of them where none can."""
    flag = [ch.counts if isinstance(ch, Check) else ch.get("counts", True) for ch in checks]
    return [ch for ch, f in zip(checks, flag) if f] or list(checks)


def claim_verdict(checks: Sequence[Check]) -> str:
    """A claim on a dataset: FAIL if any check fails, else INCONCLUSIVE, else NOT RUN if any is, else PASS. Checks
    of statistics the paper does not claim for the dataset count only where the paper claims none of them, and the
    verdict then says "beyond the paper"; a check that cannot say anything on this data (`Check.counts`) counts
    only where no other does."""
    claimed = [ch for ch in checks if not ch.beyond_paper]
    verdicts = {ch.verdict for ch in counted(claimed or checks)}
    for v in (FAIL, INCONCLUSIVE, NOT_RUN, PASS):
        if v in verdicts:
            return v if claimed or not checks else f"{v} (beyond the paper)"
    return PASS


def claims_document(checks: Sequence[Check], cfg: Mapping, calibration: Sequence[Check] = ()) -> dict:
    """The JSON document: run settings, and per claim the paper's statement, verdicts per dataset and checks, and
    the verdicts of the same checks on the paper's own numbers (`calibration`)."""
    claims = []
    for cid, meta in CLAIMS.items():
        own = [ch for ch in checks if ch.claim == cid]
        verdicts = {d: claim_verdict([ch for ch in own if ch.dataset == d]) for d in PAPER_DATASETS}
        entry = {"id": cid, **meta, "verdicts": verdicts, "checks": [_check_json(ch) for ch in own]}
        if calibration:
            paper = [ch for ch in calibration if ch.claim == cid]
            entry["paper_verdicts"] = {d: claim_verdict([ch for ch in paper if ch.dataset == d])
                                       for d in PAPER_DATASETS}
            entry["paper_checks"] = [_check_json(ch) for ch in paper]
        claims.append(entry)
    return {"scale": cfg["scale"], "scale_note": scale_note(cfg), "datasets_run": list(cfg["datasets"]),
            "seeds": list(cfg["classifiers"]["seeds"]), "n_train": sorted(cfg["classifiers"]["n_train"]),
            "claims_config": dict(cfg["claims"]), "claims": claims}


# The paper's grid (its supplement): what a run's scale note compares the run's config with.
PAPER_GRID = {"n_max": 40_000, "seeds": 5, "epochs": 20, "pgd_images": 1000, "onmanifold_images": 2500}


def scale_note(cfg: Mapping) -> str:
    """One sentence on how this run's grid differs from the paper's, read from the config (not from its label):
    largest N, seeds, epochs and the test images the attacks see."""
    scale = cfg["scale"]
    if scale == "paper":
        return "A run of the paper's grid."
    c = cfg["classifiers"]
    run = {"n_max": largest_n(cfg), "seeds": len(c["seeds"]), "epochs": c["epochs"],
           "pgd_images": cfg["pgd"]["n_test"], "onmanifold_images": cfg["onmanifold"]["n_test"]}
    words = {"n_max": "N up to {:,}", "seeds": "{:,} seed" + "s" * (run["seeds"] != 1), "epochs": "{:,} epochs",
             "pgd_images": "PGD on {:,} test images", "onmanifold_images": "on-manifold attacks on {:,}"}
    other = [f"{words[k].format(run[k])} (the paper: {PAPER_GRID[k]:,})" for k in words if run[k] != PAPER_GRID[k]]
    same = [words[k].format(run[k]) for k in ("seeds", "epochs") if run[k] == PAPER_GRID[k]]
    text = f"A run at {scale} scale (config scale: {scale}): " + ("; ".join(other) or "the paper's grid")
    if same:
        text += f", the paper's {' and '.join(same)}"
    return (text + ". So the verdicts below say whether the effects show at this scale, not whether the paper's "
            "numbers hold.")


def _check_json(ch: Check) -> dict:
    out = asdict(ch)
    out["per_seed"] = {str(k): _finite(v) for k, v in ch.per_seed.items()}
    out["mean"], out["threshold"] = _finite(ch.mean), _finite(ch.threshold)
    out["paper_value"] = _finite(ch.paper_value)
    out["ci"] = [_finite(v) for v in ch.ci] if ch.ci else None
    out["reference"] = _json_safe(ch.reference)
    return out


def _json_safe(obj):
    """NaN and infinities as null (JSON has neither), recursively; keys as strings."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return _finite(obj)
    return obj


def _finite(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _fmt(v: float | None, digits: int = 3) -> str:
    """A number as the report prints it; a value that rounds to zero prints as 0, never -0."""
    if v is None or not np.isfinite(v):
        return "–"
    return _unsigned_zero(f"{v:.{digits}g}" if abs(v) >= 10 else f"{v:.{digits}f}")


def signed_text(v: float, digits: int = 3) -> str:
    """A difference with its sign (+0.012, -0.034); one that rounds to zero prints as +0.000, never -0.000."""
    text = f"{v:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def _unsigned_zero(text: str) -> str:
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _threshold_text(ch: Check) -> str:
    if not np.isfinite(ch.threshold):
        return "–"
    # "within ±t" rather than "|x| <= t": a bar would split the Markdown table's cell.
    return f"within ±{_fmt(ch.threshold)}" if ch.op == "within" else f"{ch.op} {_fmt(ch.threshold)}"


def claims_markdown(doc: dict, checks: Sequence[Check], appendix: Sequence[str] = ()) -> str:
    """A referee's summary: per claim and dataset this run's statistic (mean, interval, seeds), the same statistic
    on the paper's own numbers, the verdict and why; then the notes per check and the `appendix` lines."""
    c = doc["claims_config"]
    rule = ("the whole interval on the claim's side of the threshold passes, across it is INCONCLUSIVE"
            if c["decide_on"] == "ci" else "decided on the mean")
    lines = ["# The paper's claims, judged on this run and on the paper's own numbers", "", doc["scale_note"], "",
             f"Datasets run: {', '.join(doc['datasets_run'])}; N: {doc['n_train']}; seeds: {doc['seeds']}. "
             f"Each statistic is computed per seed; shown is its mean and the {c['confidence']:.0%} t interval over "
             f"seeds ({rule}; config `claims`). \"paper\" is the same statistic computed by the same code on the "
             "paper's published means (reference/paper/): they give one value per N and no seeds, so the paper's "
             "verdicts are decided on the value, and claim 1 reads the paper's Fig. 2 histograms (their share "
             "beyond the distance threshold, their medians) in place of per-example distances.", ""]
    lines += verdict_grid_markdown(doc)
    not_run = sorted({ch.dataset: ch.reason for ch in checks if ch.dataset not in doc["datasets_run"]}.items())
    lines += [f"Not run: {d}: {reason}." for d, reason in not_run] + ([""] if not_run else [])
    for claim in doc["claims"]:
        verdicts = ", ".join(f"{d}: **{v}**" for d, v in claim["verdicts"].items())
        paper = ", ".join(f"{d}: {v}" for d, v in claim.get("paper_verdicts", {}).items())
        lines += [f"## Claim {claim['id']}: {claim['title']} ({claim['figure']})", "",
                  f"> Paper: {claim['paper']}", "", f"Verdict on this run: {verdicts}.",
                  *([f"On the paper's own numbers: {paper}."] if paper else []), "",
                  "| dataset | statistic | this run: mean [CI] | seeds | paper | threshold | verdict | why |",
                  "|---|---|---|---|---|---|---|---|"]
        own = [ch for ch in checks if ch.claim == claim["id"] and ch.dataset in doc["datasets_run"]]
        for ch in own:
            ci = f" [{_fmt(ch.ci[0])}, {_fmt(ch.ci[1])}]" if ch.ci else ""
            paper_value = f"{_fmt(ch.paper_value)} ({ch.paper_verdict})" if np.isfinite(ch.paper_value) else "–"
            verdict = ch.verdict + (" (beyond the paper)" if ch.beyond_paper else "")
            lines.append(f"| {ch.dataset} | {ch.statistic} | {_fmt(ch.mean)}{ci} | {ch.n_seeds} | {paper_value} | "
                         f"{_threshold_text(ch)} | {verdict} | {_why(ch)} |")
        notes = [_note(ch) for ch in own]
        lines += [""] + [n for n in notes if n] + [""]
    return "\n".join(lines + list(appendix)).rstrip() + "\n"


def verdict_cell(claim: dict, dataset: str, datasets_run: Sequence[str], strong: str = "") -> str:
    """One cell of the verdict grid, from a claim of the JSON document: the verdict on this run and on the
    paper's numbers; where the dataset ran, the statistic that decides it (mean, interval, seeds: for a claim not
    passed, its first check that did not pass) and, where the claim is not PASS, why. `strong` marks the run's
    verdict up (markdown's `**`)."""
    verdict = claim["verdicts"][dataset]
    paper = claim.get("paper_verdicts", {}).get(dataset)
    cell = f"{strong}{verdict}{strong}" + (f" (paper: {paper})" if paper else "")
    own = [c for c in claim["checks"] if c["dataset"] == dataset]
    claimed = [c for c in own if not c["beyond_paper"]] or own
    if dataset not in datasets_run or not claimed:
        return cell
    deciding = counted(claimed)
    decisive = next((c for c in deciding if c["verdict"] != PASS), deciding[0])
    ci = f" [{_fmt(decisive['ci'][0])}, {_fmt(decisive['ci'][1])}]" if decisive["ci"] else ""
    n = decisive["n_seeds"]
    cell += f": {decisive['statistic']} {_fmt(decisive['mean'])}{ci}, {n} seed{'s' if n != 1 else ''}"
    if not verdict.startswith(PASS):
        cell += f"; {_why(Check(**{f.name: decisive[f.name] for f in fields(Check)}))}"
    for c in claimed:
        if c not in deciding:
            cell += f"; {c['statistic']} not counted: {c['undecidable'].split(', so ')[0]}"
    return cell


def verdict_grid_markdown(doc: dict) -> list[str]:
    """Markdown lines: the verdict grid (claims x datasets) that leads the report (cells: `verdict_cell`)."""
    lines = ["## Verdicts", "", "| claim | " + " | ".join(PAPER_DATASETS) + " |",
             "|---|" + "---|" * len(PAPER_DATASETS)]
    for claim in doc["claims"]:
        cells = [verdict_cell(claim, d, doc["datasets_run"], "**") for d in PAPER_DATASETS]
        lines.append(f"| {claim['id']}. {claim['title']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _why(ch: Check) -> str:
    """One line on why a check has its verdict."""
    if ch.beyond_paper:
        return f"{ch.beyond_paper}; {_why(replace(ch, beyond_paper=''))}"
    if ch.verdict == INCONCLUSIVE:
        why = ch.undecidable or ch.reason or "the interval over seeds crosses the threshold"
        if not ch.counts:
            return f"{why}; not counted in the claim's verdict, which its other checks decide"
        return f"{why}; to decide: {ch.to_decide}" if ch.to_decide else why
    if ch.verdict == NOT_RUN:
        return ch.reason or "not measured"
    side = "clears" if ch.verdict == PASS else "misses"
    where = "the whole interval" if ch.ci and ch.verdict in (PASS, FAIL) else "the value"
    return f"{where} {side} the threshold"


def _note(ch: Check) -> str:
    parts = [ch.description]
    ref = {k: (_fmt(v) if isinstance(v, float) else v) for k, v in ch.reference.items()}
    if ref:
        parts.append("beside it: " + ", ".join(f"{k} = {v}" for k, v in ref.items()))
    if ch.reason:
        parts.append(f"note: {ch.reason}")
    per_seed = ", ".join(f"seed {s}: {_fmt(v)}" for s, v in sorted(ch.per_seed.items()))
    if per_seed:
        parts.append(per_seed)
    return f"- {ch.dataset}, {ch.statistic}: " + "; ".join(parts) + "."


SECOND_ATTACK = "pgd_sign"
REGULAR_CLAIM = 4  # the claim that rests on the L_inf attack's success


def second_column(column: str) -> str:
    """The signed-step attack's column of the kind `column` is (pgd_success -> pgd_sign_success, and _any)."""
    return column.replace("pgd", SECOND_ATTACK, 1)


def second_attack_markdown(df: pd.DataFrame, checks: Sequence[Check], second: Sequence[Check],
                           datasets: Sequence[str]) -> list[str]:
    """Markdown lines: the L_inf success of the paper's attack beside the signed-step attack's on the same test
    images (mean over seeds per dataset, mode and N), and claim 4 judged with either (`checks`, `second`)."""
    first_column, column = "pgd_success", f"{SECOND_ATTACK}_success"
    if column not in df or df[column].isna().all():
        return []
    lines = ["## The paper's attack beside signed-step PGD", "",
             f"L_inf success per restart and image (`{first_column}`, any restart in brackets) of the paper's attack "
             "(projected Adam, lr 0.005) and of signed-step PGD (`pgd_sign`: 40 steps of 0.01, the same start, "
             "restarts and test images), mean over seeds. The verdicts above and the paper comparison use the "
             "paper's attack; the last lines say whether claim 4 would read otherwise with the signed-step one.", "",
             "| dataset | training | N | seeds | paper's attack | signed steps |", "|---|---|---|---|---|---|"]
    rows = df[df["dataset"].isin(datasets)].groupby(["dataset", "mode", "n_train"], sort=True)
    for (dataset, mode, n), g in rows:
        first = f"{_fmt(g[first_column].mean())} ({_fmt(g[first_column + '_any'].mean())})"
        sign = f"{_fmt(g[column].mean())} ({_fmt(g[column + '_any'].mean())})"
        lines.append(f"| {dataset} | {mode} | {n} | {len(g)} | {first} | {sign} |")
    lines.append("")
    for dataset in datasets:
        pick = lambda cs: [ch for ch in cs if ch.claim == REGULAR_CLAIM and ch.dataset == dataset]  # noqa: E731
        ours, theirs = pick(checks), pick(second)
        # judge() lists the checks in one order; a statistic's name carries the column it read.
        detail = "; ".join(f"{a.statistic.split('[')[0]} {_fmt(a.mean)} ({a.verdict}) against {_fmt(b.mean)} "
                           f"({b.verdict})" for a, b in zip(ours, theirs))
        lines.append(f"- {dataset}, claim 4: **{claim_verdict(ours)}** with the paper's attack, "
                     f"**{claim_verdict(theirs)}** with signed steps ({detail}).")
    return lines + [""]


def class_keeping_markdown(df: pd.DataFrame, datasets: Sequence[str]) -> list[str]:
    """Markdown lines: per on-manifold record (true and learned manifold), dataset, mode and N, the success rate
    (any restart), the share of successful examples that the dataset's judge still assigns their class, and the
    success rate counting only those (means over seeds); nothing where no judge ran."""
    records = [r for r in ("onmanifold", "onmanifold_learned") if f"{r}_class_kept" in df
               and df[f"{r}_class_kept"].notna().any()]
    if not records:
        return []
    lines = ["## On-manifold examples that keep their class", "",
             "The paper's on-manifold adversarial examples are of the same class as the image they come from. "
             "A judge (per dataset, a classifier trained normally on every training image, with a seed of its "
             "own, that takes part in no attack) classifies each successful example (best restart; the attacked "
             "model was right before the attack): *class kept* is the share it still assigns their true class, "
             "and *success, class kept* the success rate counting only those. The paper's text has no such "
             "judge and counts every success; so do the verdicts above and the paper comparison, to compare "
             "like with like. What the paper means by an on-manifold adversarial example is the class-kept "
             "count, shown here beside it; the judge's own test error bounds how exactly it can tell.", "",
             "| dataset | manifold | training | N | seeds | success (any restart) | judged | class kept "
             "| success, class kept | judge on clean points |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = df[df["dataset"].isin(datasets)]
    for record in records:
        for (dataset, mode, n), g in rows.dropna(subset=[f"{record}_class_kept"]).groupby(
                ["dataset", "mode", "n_train"], sort=True):
            manifold = ("learned" if record == "onmanifold_learned"
                        else str(g["onmanifold_manifold"].iloc[0]).replace(" manifold", ""))
            cells = [_fmt(g[f"{record}_success_any"].mean()), str(int(g[f"{record}_successful"].sum())),
                     _fmt(g[f"{record}_class_kept"].mean()), _fmt(g[f"{record}_success_any_kept"].mean()),
                     _fmt(g[f"{record}_judge_on_starts"].mean())]
            lines.append(f"| {dataset} | {manifold} | {mode} | {n} | {len(g)} | " + " | ".join(cells) + " |")
    lines.append("")
    if "judge_test_error" in df:
        errors = df[df["dataset"].isin(datasets)].groupby("dataset", sort=True)["judge_test_error"].first()
        lines.append("Judges' test error: " + ", ".join(f"{d} {_fmt(e)}" for d, e in errors.items()) + ".")
        lines.append("")
    return lines


def write_claims(checks: Sequence[Check], cfg: Mapping, json_path: str | os.PathLike,
                 md_path: str | os.PathLike, appendix: Sequence[str] = (), calibration: Sequence[Check] = ()) -> dict:
    """Write claims.json and claims.md (ending in the `appendix` lines), each atomically; return the JSON document."""
    doc = claims_document(checks, cfg, calibration)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(claims_markdown(doc, checks, appendix))
    return doc


def _rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A reStructuredText list-table."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
    return lines + [""]


def front_page_rst(doc: dict, summary, settings: Sequence[Mapping]) -> str:
    """The report's first page: the verdicts (claims x datasets), the paper comparison's summary per figure, and
    the settings that differ from the paper's. `summary` is `paper.comparison_summary`'s table (or None)."""
    lines = ["Verdicts", "--------", "", doc["scale_note"], ""]
    lines += ["Each cell: the verdict on this run, then on the paper's own numbers judged by the same code; the "
              "statistic that decides it (mean, interval over seeds, seeds), and why where it is not PASS.", ""]
    lines += _rst_table(["claim"] + list(PAPER_DATASETS),
                        [[f"{c['id']}. {c['title']} ({c['figure']})"]
                         + [verdict_cell(c, d, doc["datasets_run"]) for d in PAPER_DATASETS] for c in doc["claims"]])
    lines += ["Beside the paper's numbers", "--------------------------", "",
              "Difference = this run's mean over seeds − the paper's value, over every (dataset, quantity, method, "
              "N) both have; row by row in ``results/tables/paper_comparison.csv``.", ""]
    if summary is not None and len(summary):
        lines += _rst_table(["figure", "dataset", "values", "median abs. difference", "largest abs. difference",
                             "median difference"],
                            [[r.figure, r.dataset, str(r.values), f"{r.median_abs_difference:.3f}",
                              f"{r.max_abs_difference:.3f}", signed_text(r.median_difference)]
                             for r in summary.itertuples()])
    else:
        lines += ["No value of this run has a counterpart in the paper.", ""]
    differ = [s for s in settings if not s["as_paper"]]
    lines += ["Settings that differ from the paper's", "-------------------------------------", ""]
    lines += _rst_table(["setting", "paper", "this run"], [[s["setting"], s["paper"], s["run"]] for s in differ]) \
        if differ else ["None: this run uses the paper's settings.", ""]
    return "\n".join(lines).rstrip() + "\n"
