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
from dataclasses import asdict, dataclass, field

import h5py
import numpy as np
import pandas as pd
from scipy import stats

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


def decide(check: Check, confidence: float, decide_on: str) -> Check:
    """Summarize the per-seed values of `check` and set its verdict (see the schema's `claims.decide_on`)."""
    values = [v for v in check.per_seed.values() if np.isfinite(v)]
    check.n_seeds = len(values)
    check.mean, check.ci = mean_ci(values, confidence)
    if not values:
        # Nothing measured: the models or files were not made (NOT RUN); measured but undefined: INCONCLUSIVE.
        check.verdict = INCONCLUSIVE if check.per_seed else NOT_RUN
        return check
    passes = _OPS[check.op]
    check.verdict = PASS if passes(check.mean, check.threshold) else FAIL
    if decide_on == "ci":
        if check.ci is None:
            check.verdict, check.reason = INCONCLUSIVE, _join(check.reason, "one seed gives no confidence interval")
        else:
            lo, hi = check.ci
            if check.op == "within":
                inside, outside = max(abs(lo), abs(hi)) <= check.threshold, lo > check.threshold or hi < -check.threshold
            else:
                inside, outside = passes(lo, check.threshold), not passes(hi, check.threshold)
            check.verdict = PASS if inside else FAIL if outside else INCONCLUSIVE
    return check


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --- Claims 1 and 2: distances to the manifold, on-manifold success -------------------------------------------


def median_successful_distance(path: str | os.PathLike, attack: str) -> tuple[float, int]:
    """Median distance to the manifold of an attack's successful examples in a distances file, and their count."""
    with h5py.File(path, "r") as h5:
        success = h5[f"{attack}/success"][()].astype(bool)
        distance = h5[f"{attack}/distance_adversarial"][()][success]
    return (float(np.median(distance)) if len(distance) else math.nan), int(len(distance))


def distance_ratio_check(dataset: str, distance_files: Mapping[int, str], threshold: float) -> Check:
    """Claim 1: per seed, median distance of successful PGD examples over that of on-manifold ones."""
    check = Check(1, dataset, "distance_ratio",
                  "median distance to the manifold of successful regular (PGD) examples / that of successful "
                  "on-manifold examples (normal training, largest N)", ">=", threshold,
                  sources=[str(p) for p in distance_files.values()])
    medians: dict[str, list[float]] = {"distance_pgd": [], "distance_onmanifold": [],
                                       "pgd_distance_over_perturbation": []}
    for seed, path in sorted(distance_files.items()):
        (pgd, n_pgd), (onm, n_onm) = (median_successful_distance(path, a) for a in ("pgd", "onmanifold"))
        with h5py.File(path, "r") as h5:
            manifold = str(h5.attrs["manifold"])
            ok = h5["pgd/success"][()].astype(bool)
            medians["pgd_distance_over_perturbation"].append(float(np.median(h5["pgd/distance_to_perturbation"][()][ok]))
                                                             if ok.any() else math.nan)
        medians["distance_pgd"].append(pgd)
        medians["distance_onmanifold"].append(onm)
        if n_pgd == 0 or n_onm == 0:
            check.reason = _join(check.reason, f"seed {seed}: no successful {'PGD' if n_pgd == 0 else 'on-manifold'} "
                                               "example to measure")
            check.per_seed[seed] = math.nan
        else:
            # An on-manifold example exactly on the manifold would divide by zero: floor at 1e-6 (pixel L2).
            check.per_seed[seed] = pgd / max(onm, 1e-6)
        check.reference["manifold"] = manifold
    check.reference.update({f"median_{k}": _nanmean(v) for k, v in medians.items()})
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
    if learned in top and top[learned].notna().any() and not column.startswith("onmanifold_learned"):
        check.reference[f"mean_{learned}"] = float(top[learned].mean())
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


def success_slope(df: pd.DataFrame, dataset: str, mode: str, column: str) -> dict[int, float]:
    """Per seed: least-squares slope of the regular success rate against test error over N."""
    slopes = {}
    for seed, g in _rows(df, dataset, mode).dropna(subset=[column, "test_error"]).groupby("seed"):
        if g["test_error"].nunique() >= 2:
            slopes[int(seed)] = float(np.polyfit(g["test_error"], g[column], 1)[0])
    return slopes


def slope_check(df: pd.DataFrame, dataset: str, column: str, threshold: float, source: str) -> Check:
    """Claim 4: under normal training, regular success barely changes with test error (adversarial beside it)."""
    check = Check(4, dataset, f"slope[{column} vs test_error, normal]",
                  f"slope of {column} against test error over the normally trained models of a seed (N varies)",
                  "within", threshold, sources=[source])
    check.per_seed = success_slope(df, dataset, "normal", column)
    if not check.per_seed:
        check.reason = "fewer than 2 normally trained models with different test errors per seed"
    adversarial = success_slope(df, dataset, "adversarial", column)
    if adversarial:
        check.reference["mean_slope_adversarial_training"] = float(np.mean(list(adversarial.values())))
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
    grid = adversarial.sort_values("n_train")
    n_adv, err_adv = grid["n_train"].to_numpy(), grid["test_error"].to_numpy()
    found: dict[str, list[float]] = {"exact": [], "above": [], "below": []}
    for row in normal.sort_values("n_train").itertuples():
        n, kind = matching_n(n_adv, err_adv, row.test_error)
        found[kind].append(n / row.n_train)
    if found["exact"]:
        return found["exact"][-1], "exact"
    if found["above"]:
        return max(found["above"]), "lower bound"
    return min(found["below"]), "upper bound"


def sample_complexity_check(df: pd.DataFrame, dataset: str, threshold: float, source: str) -> Check:
    """Claim 4: the training-set size adversarial training needs to reach normal training's test error."""
    check = Check(4, dataset, "sample_complexity_ratio",
                  "N adversarial training needs to reach the test error of normal training at N, divided by N "
                  "(at the largest N where adversarial training reaches it; log-linear interpolation)", ">=",
                  threshold, sources=[source])
    normal, adversarial = _rows(df, dataset, "normal"), _rows(df, dataset, "adversarial")
    kinds = {}
    for seed in sorted(set(normal["seed"]) & set(adversarial["seed"])):
        n_seed, a_seed = normal[normal["seed"] == seed], adversarial[adversarial["seed"] == seed]
        if a_seed["n_train"].nunique() < 2:
            continue
        check.per_seed[int(seed)], kinds[int(seed)] = sample_complexity(n_seed, a_seed)
    if not check.per_seed:
        check.reason = "needs normal and adversarial training with at least 2 values of N per seed"
    check.reference["kind_per_seed"] = kinds
    bounded = sorted(s for s, k in kinds.items() if k != "exact")
    if bounded:
        check.reference["note"] = (f"seeds {bounded}: adversarial training's test error never matched normal "
                                   "training's within the grid, so the value is a bound")
    return check


# --- Assembly ---------------------------------------------------------------------------------------------------


def judge(df: pd.DataFrame, distance_files: Mapping[str, Mapping[int, str]], cfg: Mapping, source: str) -> list[Check]:
    """Every check of every claim for every paper dataset; datasets not in `cfg['datasets']` are NOT RUN.

    `cfg` is the workflow config (its `claims`, `figures`, `datasets` and `classifiers` sections are read);
    `distance_files` maps dataset to {seed: distances file}.
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
            distance_ratio_check(dataset, distance_files.get(dataset, {}), c["distance_ratio_min"]),
            onmanifold_exists_check(data, dataset, onm_column, c["onmanifold_success_min"], source),
            rank_correlation_check(data, dataset, onm_column, c["correlation_modes"], c["correlation_min"], source),
            error_reduction_check(data, dataset, mode, c["error_reduction_min"], source),
            slope_check(data, dataset, pgd_column, c["slope_max"], source),
            sample_complexity_check(data, dataset, c["sample_complexity_min"], source),
        ]
        if not distance_files.get(dataset):
            dataset_checks[0].reason = "no distances file"
        checks += [decide(ch, c["confidence"], c["decide_on"]) for ch in dataset_checks]
    return checks


def _not_run(dataset: str, reason: str) -> list[Check]:
    names = {1: "distance_ratio", 2: "onmanifold_success", 3: "spearman / test_error_reduction",
             4: "slope / sample_complexity_ratio"}
    return [Check(claim, dataset, name, "", ">=", math.nan, reason=reason) for claim, name in names.items()]


def claim_verdict(checks: Sequence[Check]) -> str:
    """A claim on a dataset: FAIL if any check fails, else INCONCLUSIVE, else NOT RUN if any is, else PASS."""
    verdicts = {ch.verdict for ch in checks}
    for v in (FAIL, INCONCLUSIVE, NOT_RUN):
        if v in verdicts:
            return v
    return PASS


def claims_document(checks: Sequence[Check], cfg: Mapping) -> dict:
    """The JSON document: run settings, and per claim the paper's statement, verdicts per dataset and checks."""
    claims = []
    for cid, meta in CLAIMS.items():
        own = [ch for ch in checks if ch.claim == cid]
        verdicts = {d: claim_verdict([ch for ch in own if ch.dataset == d]) for d in PAPER_DATASETS}
        claims.append({"id": cid, **meta, "verdicts": verdicts, "checks": [_check_json(ch) for ch in own]})
    return {"scale": cfg["scale"], "scale_note": scale_note(cfg["scale"]), "datasets_run": list(cfg["datasets"]),
            "seeds": list(cfg["classifiers"]["seeds"]), "n_train": sorted(cfg["classifiers"]["n_train"]),
            "claims_config": dict(cfg["claims"]), "claims": claims}


def scale_note(scale: str) -> str:
    if scale == "paper":
        return "A run of the paper's grid."
    return (f"A run at {scale} scale (config scale: {scale}): fewer values of N, seeds and epochs than the paper, so "
            "the verdicts below say whether the effects show at this scale, not whether the paper's numbers hold.")


def _check_json(ch: Check) -> dict:
    out = asdict(ch)
    out["per_seed"] = {str(k): _finite(v) for k, v in ch.per_seed.items()}
    out["mean"], out["threshold"] = _finite(ch.mean), _finite(ch.threshold)
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
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}g}" if abs(v) >= 10 else f"{v:.{digits}f}"


def _threshold_text(ch: Check) -> str:
    if not np.isfinite(ch.threshold):
        return "–"
    return f"|x| ≤ {_fmt(ch.threshold)}" if ch.op == "within" else f"{ch.op} {_fmt(ch.threshold)}"


def claims_markdown(doc: dict, checks: Sequence[Check], appendix: Sequence[str] = ()) -> str:
    """A human-readable version of the claims document: one section and table per claim, then `appendix` lines."""
    c = doc["claims_config"]
    lines = ["# The paper's claims, judged on this run", "", doc["scale_note"], "",
             f"Datasets run: {', '.join(doc['datasets_run'])}; N: {doc['n_train']}; seeds: {doc['seeds']}. "
             f"Each statistic is computed per seed; shown is its mean and the {c['confidence']:.0%} t interval over "
             f"seeds; the verdict compares the {'mean' if c['decide_on'] == 'mean' else 'whole interval'} with the "
             "threshold (config `claims`).", ""]
    not_run = sorted({ch.dataset: ch.reason for ch in checks if ch.dataset not in doc["datasets_run"]}.items())
    lines += [f"Not run: {d}: {reason}." for d, reason in not_run] + ([""] if not_run else [])
    for claim in doc["claims"]:
        verdicts = ", ".join(f"{d}: **{v}**" for d, v in claim["verdicts"].items())
        lines += [f"## Claim {claim['id']}: {claim['title']} ({claim['figure']})", "",
                  f"> Paper: {claim['paper']}", "", f"Verdict: {verdicts}", "",
                  "| dataset | statistic | mean | CI | seeds | threshold | verdict |", "|---|---|---|---|---|---|---|"]
        own = [ch for ch in checks if ch.claim == claim["id"]]
        for ch in own:
            ci = f"[{_fmt(ch.ci[0])}, {_fmt(ch.ci[1])}]" if ch.ci else "–"
            lines.append(f"| {ch.dataset} | {ch.statistic} | {_fmt(ch.mean)} | {ci} | {ch.n_seeds} | "
                         f"{_threshold_text(ch)} | {ch.verdict} |")
        notes = [_note(ch) for ch in own if ch.dataset in doc["datasets_run"]]
        lines += [""] + [n for n in notes if n] + [""]
    return "\n".join(lines + list(appendix)).rstrip() + "\n"


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


def write_claims(checks: Sequence[Check], cfg: Mapping, json_path: str | os.PathLike,
                 md_path: str | os.PathLike, appendix: Sequence[str] = ()) -> dict:
    """Write claims.json and claims.md (ending in the `appendix` lines), each atomically; return the JSON document."""
    doc = claims_document(checks, cfg)
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
    lines += _rst_table(["claim"] + list(PAPER_DATASETS),
                        [[f"{c['id']}. {c['title']} ({c['figure']})"] + [c["verdicts"][d] for d in PAPER_DATASETS]
                         for c in doc["claims"]])
    lines += ["Beside the paper's numbers", "--------------------------", "",
              "Difference = this run's mean over seeds − the paper's value, over every (dataset, quantity, method, "
              "N) both have; row by row in ``results/tables/paper_comparison.csv``.", ""]
    if summary is not None and len(summary):
        lines += _rst_table(["figure", "dataset", "values", "median abs. difference", "largest abs. difference",
                             "median difference"],
                            [[r.figure, r.dataset, str(r.values), f"{r.median_abs_difference:.3f}",
                              f"{r.max_abs_difference:.3f}", f"{r.median_difference:+.3f}"]
                             for r in summary.itertuples()])
    else:
        lines += ["No value of this run has a counterpart in the paper.", ""]
    differ = [s for s in settings if not s["as_paper"]]
    lines += ["Settings that differ from the paper's", "-------------------------------------", ""]
    lines += _rst_table(["setting", "paper", "this run"], [[s["setting"], s["paper"], s["run"]] for s in differ]) \
        if differ else ["None: this run uses the paper's settings.", ""]
    return "\n".join(lines).rstrip() + "\n"
