"""How often a successful on-manifold adversarial example still shows its own class, by a judge that took no
part in the attack: the paper's claim 2 is about adversarial examples *of the same class* on the manifold.

For every record given, the judge classifies the decoded adversarial images of the successful examples
(best restart, clean image classified correctly by the attacked model); the share it assigns to their true
class is the class-keeping rate. A judge is a classifier of this study that was not attacked: on FONTS the
model trained on the true manifold, elsewhere a model of another seed. Also prints the judge's accuracy on the
decoded clean latents of the same examples (its ceiling on these images).

Run after `make run`, for instance:
.venv/bin/python benchmarks/class_keeping.py \
    --judge results/classifiers/fonts/onmanifold_true/N4000/seed1/model.pt \
    results/attacks/fonts/normal/N4000/seed0/onmanifold.h5 \
    results/attacks/fonts/normal/N4000/seed0/onmanifold_learned.h5
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import torch

from manifold_robustness.attack_io import best_restart_success
from manifold_robustness.models import load_classifier
from manifold_robustness.training import predict


def class_keeping(judge: torch.nn.Module, path: str) -> dict[str, float]:
    """The class-keeping rate of one record's successful examples, and the judge's accuracy on their starts."""
    with h5py.File(path, "r") as h5:
        record = {k: h5[k][()] for k in ("index", "label", "clean_pred", "adversarial", "success", "best_restart")}
        decoded = h5["clean_decoded"][()] if "clean_decoded" in h5 else None
    fooled = best_restart_success(record) & (record["clean_pred"] == record["label"])
    labels = record["label"][fooled]
    kept = predict(judge, torch.from_numpy(record["adversarial"][fooled])).numpy() == labels
    out = {"successful": int(fooled.sum()), "keeps_class": float(kept.mean()) if len(kept) else np.nan}
    if decoded is not None:
        out["judge_on_starts"] = float((predict(judge, torch.from_numpy(decoded[fooled])).numpy() == labels).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="on-manifold attack records (onmanifold*.h5)")
    parser.add_argument("--judge", required=True, help="a classifier that took no part in the attacks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    judge = load_classifier(args.judge, "cpu")
    for path in args.records:
        print(path, class_keeping(judge, path))


if __name__ == "__main__":
    main()
