"""The per-example attack record `results/attacks/.../{attack}.h5` and the success rates read back from it.

Datasets (n attacked test images, R restarts): `index` (into the test split), `label`, `clean_pred`,
`adversarial` (the kept example of the best restart, float32), `best_restart`, and per restart `success`,
`loss`, `pred`, `steps_to_success`. Attacks through a decoder (on-manifold, transformations) store the decoded
image in `adversarial`, the kept variable in `adversarial_latent` and the clean one in `clean_latent`; there
`clean_pred` is the prediction on the decoded clean point and `test_pred` the one on the test image itself.
Learned-manifold records add the unclipped `encoder_mean` and the latent box `latent_low`/`latent_high`.
Attributes hold the attack configuration (`config.*`), the success rates (`rate.*`) and measurements of the
attacked data (`stat.*`, e.g. the share of latents outside the prior's box), so every number in the
metrics table can be traced back to the file and the settings that produced it.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import h5py
import numpy as np
import torch

from .attacks import AttackConfig, AttackResult, success_rates
from .io import atomic_path, h5_cause
from .training import predict

REQUIRED = ("index", "label", "clean_pred", "success", "loss")


def save_attack(path: str | os.PathLike, result: AttackResult, indices: np.ndarray, cfg: AttackConfig,
                attrs: dict | None = None, images: torch.Tensor | None = None,
                extra: dict[str, torch.Tensor] | None = None, stats: dict[str, float] | None = None,
                ) -> dict[str, float]:
    """Write the record atomically and return its success rates (also stored as attributes).

    `images`: the best restart's decoded images, for attacks whose variables are latents or codes.
    `stats`: measurements of the attacked data, stored as `stat.*` attributes.
    """
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
    if images is not None:
        arrays["adversarial_latent"] = arrays["adversarial"]
        arrays["adversarial"] = images.detach().cpu().numpy().astype(np.float32)
    for key, value in (extra or {}).items():
        arrays[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    rates = success_rates(arrays["success"], arrays["clean_pred"] == arrays["label"])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)
        for key, value in {**asdict(cfg), **(attrs or {})}.items():
            h5.attrs[f"config.{key}"] = value
        for key, value in rates.items():
            h5.attrs[f"rate.{key}"] = value
        for key, value in (stats or {}).items():
            h5.attrs[f"stat.{key}"] = value
    return rates


def read_record(path: str | os.PathLike, keys: tuple[str, ...] = REQUIRED,
                optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays `keys` of one record (plus its attributes under "attrs"), or an error naming the file and fix;
    the arrays `optional` are added where the record holds them (records written before they were stored)."""
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in keys if k not in h5]
            if missing:
                raise KeyError(f"missing datasets {missing}")
            record = {key: h5[key][()] for key in (*keys, *(k for k in optional if k in h5))}
            record["attrs"] = dict(h5.attrs)
    except (OSError, KeyError) as err:
        cause = h5_cause(err)
        if cause:
            raise RuntimeError(f"attack record {path} could not be opened ({err}){cause}") from err
        raise RuntimeError(f"attack record {path} is incomplete or corrupt ({err}); delete it and rerun") from err
    return record


def best_restart_success(record: dict[str, np.ndarray]) -> np.ndarray:
    """Per example, whether the kept (best) restart fooled the model."""
    return record["success"][np.arange(len(record["index"])), record["best_restart"]].astype(bool)


def load_success_rates(path: str | os.PathLike) -> dict[str, float | str]:
    """Recompute both success rates from the per-example arrays (not from cached attributes); on-manifold
    records add which manifold they attacked, learned-manifold ones their latent box and `stat.*` measurements."""
    record = read_record(path)
    rates: dict[str, float | str] = dict(success_rates(record["success"], record["clean_pred"] == record["label"]))
    attrs = record["attrs"]
    for key in ("manifold", "latent_box"):
        if f"config.{key}" in attrs:
            rates[key] = str(attrs[f"config.{key}"])
    rates.update({key[len("stat."):]: float(value) for key, value in attrs.items() if key.startswith("stat.")})
    return rates


def class_keeping(judge: torch.nn.Module, path: str | os.PathLike) -> dict[str, float | int]:
    """How many of a record's successful examples still show their own class to a judge, a classifier that took
    no part in the attack (the paper's on-manifold adversarial examples are of the same class).

    Over the examples the attacked model got right and fooled (best restart): `successful`, their count;
    `class_kept`, the share the judge assigns their true class; `success_any_kept`, the success rate counting only
    those (any restart, over the examples the attacked model got right); `judge_on_starts`, the judge's accuracy
    on the same examples' decoded clean points where the record holds them (its ceiling on these images).
    """
    record = read_record(path, (*REQUIRED, "best_restart", "adversarial"), optional=("clean_decoded",))
    correct = record["clean_pred"] == record["label"]
    fooled = best_restart_success(record) & correct
    labels = record["label"][fooled]
    device = next(judge.parameters()).device

    def judged(images: np.ndarray) -> np.ndarray:
        if not fooled.any():
            return np.zeros(0, dtype=bool)
        return predict(judge, torch.from_numpy(images[fooled]).to(device)).cpu().numpy() == labels

    kept = judged(record["adversarial"])
    out: dict[str, float | int] = {
        "successful": int(fooled.sum()),
        "class_kept": float(kept.mean()) if len(kept) else float("nan"),
        "success_any_kept": float(kept.sum() / correct.sum()) if correct.any() else float("nan"),
        "judge_on_starts": float(judged(record["clean_decoded"]).mean()) if "clean_decoded" in record and len(kept)
        else float("nan"),
    }
    return out
