"""The metrics table: one row per trained classifier, joined from its metrics.json and its attack records."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from .attack_io import load_success_rates
from .io import atomic_path, read_json

COLUMNS = ("dataset", "mode", "n_train", "seed", "test_error", "pgd_success", "pgd_success_any",
           "onmanifold_success", "onmanifold_success_any")
# pgd (the paper's attack); onmanifold: the true manifold where one is known (FONTS), else the learned one;
# onmanifold_learned; pgd_sign: the signed-step L_inf attack reported beside the paper's.
ATTACKS = ("pgd", "onmanifold", "onmanifold_learned", "pgd_sign")


# What the judge says of each on-manifold record's successful examples (`attack_io.class_keeping`).
CLASS_KEEPING = ("class_kept", "success_any_kept", "successful", "judge_on_starts")


def metrics_row(metrics_json: str | os.PathLike, attacks: dict[str, str | os.PathLike],
                class_kept: str | os.PathLike | None = None) -> dict:
    """One table row; `attacks` maps attack name (see ATTACKS) to its record, absent ones give NaN;
    `class_kept`, the judge's class-keeping file of the model's on-manifold records (`stages.judge_onmanifold`),
    adds `{record}_class_kept` and the other CLASS_KEEPING columns for each record it judged."""
    m = read_json(metrics_json)
    row = {key: m[key] for key in ("dataset", "mode", "n_train", "seed", "test_error", "train_error", "epochs")}
    row["train_seconds"] = m.get("train_seconds", np.nan)
    learned: dict = {}
    for name in ATTACKS:
        rates = load_success_rates(attacks[name]) if name in attacks else {}
        row[f"{name}_success"] = rates.get("success", np.nan)
        row[f"{name}_success_any"] = rates.get("success_any", np.nan)
        row[f"{name}_robust_accuracy"] = rates.get("robust_accuracy", np.nan)
        row[f"{name}_n_correct"] = rates.get("n_correct", np.nan)
        row[f"{name}_record"] = str(attacks.get(name, ""))
        if name == "onmanifold":
            # "true manifold" / "learned manifold": a bare "true" would be read back as a boolean.
            row["onmanifold_manifold"] = f"{rates['manifold']} manifold" if "manifold" in rates else ""
        if rates.get("manifold") == "learned" and (name == "onmanifold_learned" or not learned):
            learned = rates
    # The learned-manifold attack's record is onmanifold_learned on FONTS and onmanifold elsewhere (where the
    # workflow passes that same record under both names).
    row["onmanifold_learned_latent_box"] = learned.get("latent_box", "")
    row["onmanifold_learned_clamped_share"] = learned.get("clamped_coordinate_share", np.nan)
    row["onmanifold_learned_clamped_latent_share"] = learned.get("clamped_latent_share", np.nan)
    if class_kept is not None:
        judged = read_json(class_kept)
        for name in ("onmanifold", "onmanifold_learned"):
            for key in CLASS_KEEPING:
                row[f"{name}_{key}"] = judged.get(name, {}).get(key, np.nan)
        row["judge_test_error"] = judged["judge"]["test_error"]
        row["class_kept_file"] = str(class_kept)
    row["model_metrics"] = str(metrics_json)
    return row


def metrics_table(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows sorted by dataset, mode, N and seed, with the required columns first."""
    df = pd.DataFrame(list(rows))
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    return df.sort_values(["dataset", "mode", "n_train", "seed"]).reset_index(drop=True)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
