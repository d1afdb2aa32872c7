"""The paper's numbers beside a run: the shipped reference data, the comparison table against values computed by
hand, its summary, the settings beside the paper's, and the figures drawing the paper's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from manifold_robustness import figures, paper
from manifold_robustness.claims import front_page_rst

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference/paper/paper_reference.csv"
DISTANCES = ROOT / "reference/paper/paper_distances_and_resnet.csv"


def reference_rows(*rows: tuple) -> pd.DataFrame:
    """A reference table from (dataset, quantity, method, N, value) tuples."""
    return pd.DataFrame([{"dataset": d, "quantity": q, "method": m, "n_train": n, "value": v, "shown_in_paper": 1,
                          "paper_figure": "fig3 (top) / fig4 (right)" if q == "test_error" else "fig4 (left)"
                          if q == "pgd_success" else "fig3 (bottom)", "source": "test"}
                         for d, q, m, n, v in rows])


def metrics(*rows: tuple) -> pd.DataFrame:
    """A metrics table from (dataset, mode, N, seed, test_error, pgd_success, onmanifold_success, manifold)."""
    return pd.DataFrame([{"dataset": d, "mode": m, "n_train": n, "seed": s, "test_error": e, "pgd_success": p,
                          "onmanifold_success": o, "onmanifold_manifold": man, "onmanifold_learned_success": np.nan}
                         for d, m, n, s, e, p, o, man in rows])


def test_shipped_reference_is_the_papers_data() -> None:
    ref = paper.read_reference(REFERENCE)
    assert len(ref) == 755
    assert set(ref["dataset"]) == {"fonts", "emnist", "fashion"}
    # Values quoted in reference/paper/README.md.
    row = ref.set_index(["dataset", "quantity", "method", "n_train"])["value"]
    assert row[("fonts", "test_error", "normal", 1000)] == pytest.approx(0.495, abs=5e-4)
    assert row[("fashion", "pgd_success", "normal", 5000)] == pytest.approx(0.814, abs=5e-4)
    assert ref["value"].between(0, 1).all()


def test_a_damaged_reference_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "paper_reference.csv"
    bad.write_text("dataset,value\nfonts,0.5\n")
    with pytest.raises(ValueError, match=r"lacks columns .*git checkout -- reference/paper"):
        paper.read_reference(bad)
    with pytest.raises(ValueError, match="cannot be read"):
        paper.read_reference(tmp_path / "absent.csv")


def test_run_values_map_each_column_to_the_papers_quantity() -> None:
    df = metrics(("fonts", "normal", 500, 0, 0.5, 0.9, 0.7, "true manifold"),
                 ("fashion", "normal", 500, 0, 0.2, 1.0, 0.3, "learned manifold"))
    df.loc[0, "onmanifold_learned_success"] = 0.4
    long = paper.run_values(df).set_index(["dataset", "quantity"])["value"]
    assert long[("fonts", "onmanifold_true_success")] == 0.7
    assert long[("fonts", "onmanifold_learned_success")] == 0.4
    assert long[("fashion", "onmanifold_learned_success")] == 0.3
    assert ("fashion", "onmanifold_true_success") not in long.index
    assert long[("fashion", "pgd_success")] == 1.0


def test_a_dataset_without_a_true_manifold_counts_its_learned_record_once() -> None:
    """On Fashion-MNIST the on-manifold record is the learned manifold's, and metrics.csv carries it in both
    columns: the comparison must see 2 seeds, with the t interval of 1 degree of freedom over 2 values."""
    df = metrics(("fashion", "normal", 500, 0, 0.20, 1.0, 0.30, "learned manifold"),
                 ("fashion", "normal", 500, 1, 0.22, 1.0, 0.40, "learned manifold"))
    df["onmanifold_learned_success"] = df["onmanifold_success"]
    ref = reference_rows(("fashion", "onmanifold_learned_success", "normal", 500, 0.32))
    row = paper.comparison_table(df, ref, confidence=0.95).iloc[0]
    assert row["n_seeds"] == 2 and row["run_mean"] == pytest.approx(0.35)
    half = stats.t.ppf(0.975, 1) * np.std([0.3, 0.4], ddof=1) / np.sqrt(2)
    assert row["run_ci_low"] == pytest.approx(0.35 - half) and row["run_ci_high"] == pytest.approx(0.35 + half)
    # A model listed twice is an error, not two seeds.
    with pytest.raises(ValueError, match=r"more than one value per \(dataset, quantity, method, N, seed\)"):
        paper.run_values(pd.concat([df, df]))


def test_comparison_table_matches_values_computed_by_hand() -> None:
    df = metrics(("fonts", "normal", 500, 0, 0.50, 0.90, 0.70, "true manifold"),
                 ("fonts", "normal", 500, 1, 0.60, 1.00, 0.80, "true manifold"),
                 ("fonts", "normal", 2000, 0, 0.30, 0.90, 0.50, "true manifold"),  # the paper has no N = 2000 here
                 ("fonts", "adversarial", 500, 0, 0.70, 0.40, 0.60, "true manifold"))
    ref = reference_rows(("fonts", "test_error", "normal", 500, 0.52), ("fonts", "pgd_success", "normal", 500, 0.80),
                         ("fonts", "onmanifold_true_success", "normal", 500, 0.75),
                         ("fonts", "test_error", "adversarial", 500, 0.65),
                         ("fonts", "test_error", "normal", 1000, 0.4))  # this run has no N = 1000
    table = paper.comparison_table(df, ref, confidence=0.95).set_index(["quantity", "method", "n_train"])
    assert len(table) == 4
    row = table.loc[("test_error", "normal", 500)]
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.6], ddof=1) / np.sqrt(2)
    assert row["paper_value"] == 0.52 and row["run_mean"] == pytest.approx(0.55)
    assert row["run_ci_low"] == pytest.approx(0.55 - half) and row["run_ci_high"] == pytest.approx(0.55 + half)
    assert row["difference"] == pytest.approx(0.03) and row["n_seeds"] == 2 and bool(row["paper_in_ci"])
    assert table.loc[("pgd_success", "normal", 500), "difference"] == pytest.approx(0.95 - 0.80)
    assert table.loc[("onmanifold_true_success", "normal", 500), "difference"] == pytest.approx(0.0)
    one_seed = table.loc[("test_error", "adversarial", 500)]
    assert one_seed["n_seeds"] == 1 and np.isnan(one_seed["run_ci_low"]) and pd.isna(one_seed["paper_in_ci"])
    assert one_seed["difference"] == pytest.approx(0.05)


def test_summary_per_figure_by_hand() -> None:
    table = pd.DataFrame({"dataset": ["fonts"] * 3 + ["fashion"], "paper_figure": ["fig4 (left)"] * 3 + ["fig4 (left)"],
                          "difference": [0.1, -0.3, 0.2, -0.05], "paper_in_ci": [True, False, np.nan, np.nan]})
    summary = paper.comparison_summary(table).set_index("dataset")
    fonts = summary.loc["fonts"]
    assert fonts["values"] == 3 and fonts["median_abs_difference"] == pytest.approx(0.2)
    assert fonts["max_abs_difference"] == pytest.approx(0.3) and fonts["median_difference"] == pytest.approx(0.1)
    assert (fonts["paper_in_ci"], fonts["with_ci"]) == (1, 2)
    assert summary.loc["fashion", "with_ci"] == 0
    assert fonts["figure"] == "Fig. 4 (left): PGD success rate"


def test_paper_histograms_are_densities_with_the_papers_medians() -> None:
    distances = paper.read_paper_distances(DISTANCES)
    fonts = paper.paper_histogram(distances, "fonts")
    assert set(fonts) == {"pgd"}  # the paper shows FONTS' regular examples only
    x, density = fonts["pgd"]
    assert np.sum(density * np.median(np.diff(x))) == pytest.approx(1.0, abs=1e-3)
    assert paper.histogram_median(x, density) == pytest.approx(1.0, abs=0.1)  # "median about 1.0"
    emnist = paper.paper_histogram(distances, "emnist")
    assert paper.histogram_median(*emnist["onmanifold"]) < paper.histogram_median(*emnist["pgd"])
    assert paper.paper_histogram(distances, "fashion") == {}


def test_histogram_median_by_hand() -> None:
    assert paper.histogram_median(np.array([1.0, 2.0, 3.0]), np.array([0.25, 0.5, 0.25])) == pytest.approx(2.0)


def quick_like_config(**changes) -> dict:
    attack = {"steps": 40, "restarts": 5, "optimizer": "adam", "adam_lr": 0.005, "start": "distance_direction"}
    cfg = {"fonts": {"source": "archive", "ranges": "hard", "geometry": "sampling"}, "datasets": ["fonts"],
           "classifiers": {"n_train": list(range(13)), "seeds": [0, 1, 2, 3, 4], "epochs": 20,
                           "adversarial_attack": {"steps": 40, "optimizer": "adam", "adam_lr": 0.005,
                                                  "start": "distance_direction"},
                           "transformation_attack": {"steps": 40, "optimizer": "adam", "adam_lr": 0.005,
                                                     "start": "distance_direction", "geometry": "paper"}},
           "pgd": {**attack, "n_test": 1000}, "onmanifold": {**attack, "n_test": 2500, "latent_box": "data_range"},
           "vaegan": {"channels": [64, 128, 256], "epochs": {"fonts": 10}, "max_steps": {"fonts": 0}}}
    for path, value in changes.items():
        section, key = path.split(".")
        cfg[section][key] = value
    return cfg


def test_settings_beside_paper_name_what_differs() -> None:
    same = paper.settings_beside_paper(quick_like_config(), n_fonts=1000)
    assert all(s["as_paper"] for s in same), [s for s in same if not s["as_paper"]]
    differ = paper.settings_beside_paper(quick_like_config(**{"pgd.optimizer": "sign", "fonts.ranges": "moderate",
                                                              "classifiers.epochs": 10}), n_fonts=30)
    names = {s["setting"] for s in differ if not s["as_paper"]}
    assert names == {"PGD evaluation", "FONTS ranges", "classifier epochs", "fonts"}
    assert next(s for s in differ if s["setting"] == "fonts")["run"].startswith("30 fonts")
    # The paper's attack is Adam at lr 0.005 from the distance-and-direction start, in evaluation and training.
    for change in ({"pgd.adam_lr": 0.01}, {"onmanifold.start": "uniform"}, {"onmanifold.steps": 20}):
        (setting,) = [s for s in paper.settings_beside_paper(quick_like_config(**change), n_fonts=1000)
                      if not s["as_paper"]]
        assert setting["setting"] == ("PGD evaluation" if "pgd.adam_lr" in change else "on-manifold evaluation")
    for attack in ({"steps": 40, "optimizer": "sign", "step_size": 0.01, "start": "distance_direction"},
                   {"steps": 10, "optimizer": "adam", "adam_lr": 0.005, "start": "distance_direction"}):
        (setting,) = [s for s in paper.settings_beside_paper(quick_like_config(**{
            "classifiers.adversarial_attack": attack}), n_fonts=1000) if not s["as_paper"]]
        assert setting["setting"] == "attack inside adversarial training"
    # The transformation attack: the paper's attack under the supplement's matrix; the quick config's relative
    # signed steps, or another geometry, differ.
    quick = {"steps": 5, "optimizer": "sign", "step_size": 0.5, "relative_step": True, "start": "distance_direction",
             "geometry": "paper"}
    for attack in (quick, {**quick_like_config()["classifiers"]["transformation_attack"], "geometry": "placement"}):
        (setting,) = [s for s in paper.settings_beside_paper(quick_like_config(**{
            "classifiers.transformation_attack": attack}), n_fonts=1000) if not s["as_paper"]]
        assert setting["setting"] == "attack inside transformation training"
    (relative,) = [s for s in paper.settings_beside_paper(quick_like_config(**{
        "classifiers.transformation_attack": quick}), n_fonts=1000) if s["setting"].endswith("transformation training")]
    assert relative["run"] == ("5 iterations, signed steps of 0.5 box half-widths, 1 restart, start distance_direction; "
                               "geometry paper")
    named = paper.settings_beside_paper(quick_like_config(), n_fonts=23, font_set="23 fonts (pinned set x; sha 1)")
    assert next(s for s in named if s["setting"] == "fonts")["run"] == "23 fonts (pinned set x; sha 1)"


def test_front_page_leads_with_verdicts_and_comparison() -> None:
    doc = {"scale_note": "A run.", "datasets_run": [], "claims": [
        {"id": 1, "title": "t", "figure": "Fig. 2", "verdicts": {"fonts": "PASS", "emnist": "NOT RUN", "fashion": "FAIL"},
         "checks": []}]}
    summary = pd.DataFrame([{"figure": "Fig. 4 (left): PGD success rate", "dataset": "fonts", "values": 3,
                             "median_abs_difference": 0.1, "max_abs_difference": 0.2, "median_difference": -0.1,
                             "paper_in_ci": 0, "with_ci": 0}])
    settings = paper.settings_beside_paper(quick_like_config(**{"classifiers.epochs": 10}), n_fonts=1000)
    text = front_page_rst(doc, summary, settings)
    assert text.index("Verdicts") < text.index("Beside the paper") < text.index("differ from the paper")
    assert "PASS" in text and "FAIL" in text and "0.100" in text and "classifier epochs" in text
    from docutils.core import publish_parts
    assert "<table" in publish_parts(text, writer="html")["html_body"]


# --- figures with the paper's values ---------------------------------------------------------------------------

def synthetic_metrics() -> pd.DataFrame:
    rows = []
    for dataset, manifold in (("fonts", "true manifold"), ("fashion", "learned manifold")):
        for mode in ("normal", "adversarial", "transformation"):
            for n in (500, 1000, 4000):
                for seed in (0, 1):
                    error = 0.3 * (500 / n) ** 0.5 + 0.02 * seed
                    rows.append(("fashion" if dataset == "fashion" else dataset, mode, n, seed, error, 0.9,
                                 1.2 * error, manifold))
    return metrics(*rows)


def paper_lines(fig) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Lines labelled as the paper's, by label, with their data."""
    out: dict[str, list] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label().startswith("paper"):
                out.setdefault(line.get_label(), []).append(tuple(np.asarray(v, float) for v in line.get_data()))
    return out


@pytest.fixture
def drawn(monkeypatch) -> list:
    figs: list = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, *paths: figs.append(fig))
    return figs


def test_fig4_draws_the_papers_values_within_the_runs_n(drawn: list, tmp_path: Path) -> None:
    ref = paper.read_reference(REFERENCE)
    figures.fig4_regular_robustness(synthetic_metrics(), tmp_path / "a.pdf", tmp_path / "a.png", paper=ref)
    lines = paper_lines(drawn[0])
    assert set(lines) == {"paper: normal training", "paper: adversarial training"}
    expected = paper.paper_curve(ref, "fonts", "test_error", "normal", (500, 4000))
    assert list(expected["n_train"]) == [500, 1000, 1500, 2000, 2500, 3000, 4000]
    drawn_curves = [xy for xy in lines["paper: normal training"] if np.array_equal(xy[0], expected["n_train"])]
    assert any(np.allclose(y, expected["value"]) for _, y in drawn_curves)
    pairs = paper.paper_pairs(ref, "fashion", "test_error", "pgd_success", "adversarial", (500, 4000))
    assert any(np.allclose(x, pairs["test_error"]) and np.allclose(y, pairs["pgd_success"])
               for x, y in lines["paper: adversarial training"])
    paper_styles = {ln.get_linestyle() for ax in drawn[0].axes for ln in ax.get_lines()
                    if ln.get_label().startswith("paper")}
    assert paper_styles == {"--"}  # dashed, beside this run's solid lines


def test_fig4_draws_no_paper_values_beside_another_success_definition(drawn: list, tmp_path: Path) -> None:
    df = synthetic_metrics().assign(pgd_success_any=0.95)
    figures.fig4_regular_robustness(df, tmp_path / "a.pdf", tmp_path / "a.png", "pgd_success_any",
                                    paper=paper.read_reference(REFERENCE))
    left_axes = drawn[0].axes[0::2]
    assert not any(ln.get_label().startswith("paper") for ax in left_axes for ln in ax.get_lines())


def test_fig3_has_the_papers_layout_and_values(drawn: list, tmp_path: Path) -> None:
    ref = paper.read_reference(REFERENCE)
    figures.fig3_onmanifold_robustness(synthetic_metrics(), tmp_path / "a.pdf", tmp_path / "a.png", paper=ref)
    fig = drawn[0]
    assert len(fig.axes) == 4  # 2 rows x 2 datasets
    lines = paper_lines(fig)
    success = paper.paper_curve(ref, "fonts", "onmanifold_true_success", "normal", (500, 4000))
    assert any(np.allclose(y, success["value"]) for _, y in lines["paper: on-manifold success, normal training"])
    fashion = paper.paper_pairs(ref, "fashion", "test_error", "onmanifold_learned_success", "transformation",
                                (500, 4000))
    assert any(np.allclose(x, fashion["test_error"]) and np.allclose(y, fashion["onmanifold_learned_success"])
               for x, y in lines["paper: adv. transformation training"])
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert {"training images N", "test error"} <= labels
    assert not any("_" in label for label in labels)  # words, not column names
    assert all(ax.get_legend() is None for ax in fig.axes) and fig.legends  # one legend, below the axes


def test_fig2_draws_the_papers_histogram_of_the_same_dataset(drawn: list, tmp_path: Path) -> None:
    import h5py

    panels = []
    for dataset in ("fonts", "fashion"):
        path = tmp_path / f"{dataset}.h5"
        with h5py.File(path, "w") as h5:
            for name, scale in (("pgd", 3.0), ("onmanifold", 1.0)):
                h5[f"{name}/distance_adversarial"] = np.linspace(0.1, scale, 20)
                h5[f"{name}/success"] = np.ones(20, bool)
            h5["pgd/distance_clean"] = np.linspace(0.0, 0.5, 20)
        panels.append({"dataset": dataset, "path": str(path)})
    figures.fig2_manifold_distance(panels, tmp_path / "a.pdf", tmp_path / "a.png",
                                   paper.read_paper_distances(DISTANCES))
    fonts_ax, fashion_ax = drawn[0].axes
    labels = [ln.get_label() for ln in fonts_ax.get_lines()]
    assert any(label.startswith("paper: regular (PGD) adversarial (median 1.0") for label in labels), labels
    assert [ln.get_label() for ln in fashion_ax.get_lines()] == ["paper: no histogram of this dataset"]


def merged_config(*files: str) -> dict:
    """A config as the workflow sees it: config/config.yaml first, each file laid over it, then the schema."""
    import copy

    import yaml
    from snakemake.utils import update_config, validate

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for name in files:
        update_config(cfg, yaml.safe_load((ROOT / name).read_text()))
    validate(cfg, str(ROOT / "config/schema.yaml"))
    return copy.deepcopy(cfg)


def test_the_paper_config_has_every_setting_of_the_paper() -> None:
    """config/paper.yaml is read over config/config.yaml: nothing of the quick study may leak into it."""
    settings = paper.settings_beside_paper(merged_config("config/paper.yaml"), n_fonts=1000)
    assert [s["setting"] for s in settings if not s["as_paper"]] == []
    quick = paper.settings_beside_paper(merged_config(), n_fonts=30)
    assert {s["setting"] for s in quick if not s["as_paper"]} >= {"fonts", "training images N", "seeds",
                                                                  "classifier epochs", "VAE-GANs"}


def test_fig2_cuts_a_spike_that_would_flatten_the_regular_histogram(drawn: list, tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "fonts.h5"
    with h5py.File(path, "w") as h5:
        h5["pgd/distance_adversarial"], h5["pgd/success"] = np.linspace(0.5, 2.0, 200), np.ones(200, bool)
        h5["onmanifold/distance_adversarial"], h5["onmanifold/success"] = np.zeros(200), np.ones(200, bool)
        h5["pgd/distance_clean"] = np.zeros(200)
    figures.fig2_manifold_distance([{"dataset": "fonts", "path": str(path)}], tmp_path / "a.pdf", tmp_path / "a.png")
    ax = drawn[0].axes[0]
    regular = max(p.get_height() for p in ax.patches if p.get_x() >= 0.4)
    assert ax.get_ylim()[1] == pytest.approx(2.5 * regular)
    assert any(t.get_text().startswith("y-axis cut: the tallest bar reaches") for t in ax.texts)


# --- the calibration: the paper's own numbers, judged by the same code ---------------------------------------

CLAIMS_MADE = {  # (claim, dataset) the paper makes, from its figures and text
    (1, "fonts"), (1, "emnist"), (2, "fonts"), (2, "emnist"), (2, "fashion"), (3, "fonts"), (3, "emnist"),
    (3, "fashion"), (4, "fonts"), (4, "emnist"), (4, "fashion")}


@pytest.fixture(scope="module")
def calibration() -> list:
    cfg = merged_config()
    return paper.calibrate(paper.read_reference(REFERENCE), paper.read_paper_distances(DISTANCES), cfg)


def test_every_claim_the_paper_makes_passes_on_its_own_numbers(calibration: list) -> None:
    from manifold_robustness.claims import claim_verdict

    for claim, dataset in sorted(CLAIMS_MADE):
        own = [ch for ch in calibration if ch.claim == claim and ch.dataset == dataset]
        assert claim_verdict(own) == "PASS", [(ch.statistic, ch.mean, ch.verdict, ch.reason) for ch in own]
        assert all(ch.verdict == "PASS" for ch in own if not ch.beyond_paper)


def test_what_the_paper_does_not_claim_is_labelled_and_never_fails_a_claim(calibration: list) -> None:
    from manifold_robustness.claims import claim_verdict

    beyond = [ch for ch in calibration if ch.beyond_paper]
    assert {(ch.claim, ch.dataset, ch.statistic) for ch in beyond} == {
        (1, "fashion", "distance_ratio"), (4, "emnist", "sample_complexity_ratio"),
        (4, "fashion", "sample_complexity_ratio")}
    emnist = next(ch for ch in beyond if ch.dataset == "emnist")
    assert emnist.verdict == "FAIL" and emnist.mean < 1  # EMNIST's adversarial training has the lower error
    assert claim_verdict([ch for ch in calibration if ch.claim == 1 and ch.dataset == "fashion"]).endswith(
        "(beyond the paper)")


def test_the_quick_grid_cannot_resolve_the_papers_data_factor() -> None:
    """On the paper's FONTS means restricted to N in {500, 1000, 4000} the factor reads 0.70: the grid says so."""
    from manifold_robustness.claims import sample_complexity_check

    cfg = merged_config()
    restricted = paper.paper_as_run(paper.read_reference(REFERENCE), [500, 1000, 4000])
    check = sample_complexity_check(restricted, "fonts", cfg["claims"], "paper")
    assert check.per_seed[0] == pytest.approx(0.70, abs=0.01) and "grid too coarse" in check.undecidable
    full = sample_complexity_check(paper.paper_as_run(paper.read_reference(REFERENCE)), "fonts", cfg["claims"], "p")
    assert full.per_seed[0] == pytest.approx(2.38, abs=0.01) and not full.undecidable


def test_the_paper_reaches_its_fonts_data_factor_at_20000() -> None:
    """The paper's own FONTS means pass the data factor only on their grid up to N = 20,000 (1.215 up to 15,000);
    a check its numbers never pass has no such N."""
    cfg = merged_config()
    ref, distances = paper.read_reference(REFERENCE), paper.read_paper_distances(DISTANCES)
    assert paper.paper_reach(ref, distances, cfg, (4, "fonts", "sample_complexity_ratio")) == 20000
    assert paper.paper_reach(ref, distances, cfg, (4, "fonts", "no such statistic")) is None


def test_a_mode_grid_of_its_own_decides_the_papers_data_factor() -> None:
    """FONTS' normal and adversarial training given the paper's N up to 20,000 (n_train_per_mode), every other mode
    left on a grid ending at 8,000: the paper's own factor reads 2.38 as on its whole grid; the same two modes on
    the shared grid read 0.90, which cannot decide."""
    import functools

    from manifold_robustness.grid import n_grid

    cfg = merged_config()
    ref, distances = paper.read_reference(REFERENCE), paper.read_paper_distances(DISTANCES)
    cfg["classifiers"]["n_train"] = [250, 500, 1000, 2000, 4000, 8000]
    key = (4, "fonts", "sample_complexity_ratio")

    def factor(config: dict) -> float:
        checks = paper.calibrate(ref, distances, config, functools.partial(n_grid, config), ["fonts"])
        return next(ch for ch in checks if (ch.claim, ch.dataset, ch.statistic) == key).per_seed[0]

    assert factor(cfg) == pytest.approx(0.896, abs=0.001)
    long = [250, 500, 1000, 2000, 4000, 7500, 10000, 15000, 20000]
    cfg["classifiers"]["n_train_per_mode"] = {"fonts": {"normal": long, "adversarial": long}}
    assert factor(cfg) == pytest.approx(2.383, abs=0.001)
    table = paper.paper_as_run(ref, functools.partial(n_grid, cfg))
    fonts = table[table["dataset"] == "fonts"]
    assert set(fonts.loc[fonts["mode"] == "normal", "n_train"]) == {250, 500, 1000, 2000, 4000, 7500, 10000, 15000,
                                                                    20000}
    assert set(fonts.loc[fonts["mode"] == "onmanifold_true", "n_train"]) == {250, 500, 1000, 2000, 4000}
    fashion = table[table["dataset"] == "fashion"]
    assert set(fashion.loc[fashion["mode"] == "normal", "n_train"]) <= {250, 500, 1000, 2000, 4000, 8000}


def test_the_paper_passes_every_claim_it_makes_on_the_deciding_configs_grid() -> None:
    """config/decide.yaml can decide every FONTS and Fashion-MNIST check only where the paper's own numbers pass it
    on that config's grid (each mode at its own N): they do, the data factor included."""
    import functools

    from manifold_robustness.grid import n_grid

    cfg = merged_config("config/decide.yaml")
    checks = paper.calibrate(paper.read_reference(REFERENCE), paper.read_paper_distances(DISTANCES), cfg,
                             functools.partial(n_grid, cfg), ["fonts", "fashion"])
    judged = [ch for ch in checks if ch.per_seed and not ch.beyond_paper]
    assert {(ch.dataset, ch.claim) for ch in judged} == {(d, c) for d in ("fonts", "fashion") for c in (2, 3, 4)} | {
        ("fonts", 1)}
    assert [(ch.dataset, ch.statistic, ch.verdict) for ch in judged if ch.verdict != "PASS"] == []
    factor = next(ch for ch in judged if ch.statistic == "sample_complexity_ratio")
    assert factor.dataset == "fonts" and factor.mean == pytest.approx(2.383, abs=0.001)


def test_calibration_on_a_grid_the_paper_never_trained_is_empty_not_an_error() -> None:
    assert paper.paper_as_run(paper.read_reference(REFERENCE), [150, 300]).empty
    checks = paper.calibrate(paper.read_reference(REFERENCE), paper.read_paper_distances(DISTANCES), merged_config(),
                             [150, 300])
    assert all(not ch.per_seed for ch in checks if ch.claim in (2, 3, 4))
