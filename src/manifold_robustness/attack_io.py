"""The per-example attack record `results/attacks/.../{attack}.h5` and the success rates read back from it.

Datasets (n attacked test images, R restarts): `index` (into the test split), `label`, `clean_pred`,
`adversarial` (the kept example of the best restart, float32), `best_restart`, and per restart `success`,
`loss`, `pred`, `steps_to_success`. Attributes hold the attack configuration, so every number in the
metrics table can be traced back to the file and the settings that produced it.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import h5py
import numpy as np

from .attacks import AttackConfig, AttackResult, success_rates
from .io import atomic_path

REQUIRED = ("index", "label", "clean_pred", "success", "loss")


def save_attack(path: str | os.PathLike, result: AttackResult, indices: np.ndarray, cfg: AttackConfig,
                attrs: dict | None = None) -> dict[str, float]:
    """Write the record atomically and return its success rates (also stored as attributes)."""
    best = result.best_restart()
    arrays = {
        "index": np.asarray(indices, dtype=np.int64),
        "label": result.labels.cpu().numpy().astype(np.int64),
        "clean_pred": result.clean_pred.cpu().numpy().astype(np.int64),
        "adversarial": result.best_variables().cpu().numpy().astype(np.float32),
        "best_restart": best.cpu().numpy().astype(np.int64),
        "success": result.success.cpu().numpy(),
        "loss": result.loss.cpu().numpy().astype(np.float32),
        "pred": result.pred.cpu().numpy().astype(np.int64),
        "steps_to_success": result.steps_to_success.cpu().numpy().astype(np.int64),
    }
    rates = success_rates(arrays["success"], arrays["clean_pred"] == arrays["label"])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)
        for key, value in {**asdict(cfg), **(attrs or {})}.items():
            h5.attrs[f"config.{key}"] = value
        for key, value in rates.items():
            h5.attrs[f"rate.{key}"] = value
    return rates


def load_success_rates(path: str | os.PathLike) -> dict[str, float]:
    """Recompute both success rates from the per-example arrays (not from cached attributes)."""
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in REQUIRED if k not in h5]
            if missing:
                raise KeyError(f"missing datasets {missing}")
            success, label, clean_pred = h5["success"][()], h5["label"][()], h5["clean_pred"][()]
    except (OSError, KeyError) as err:
        raise RuntimeError(f"attack record {path} is incomplete or corrupt ({err}); delete it and rerun") from err
    return success_rates(success, clean_pred == label)
