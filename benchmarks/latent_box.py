"""What the latent box of the learned-manifold attack changes: how many test latents leave the prior's box,
how a classifier does on the test images and on their reconstructions with and without clipping, and the
on-manifold success rates of learned-manifold attack records (one per `latent_box` setting).

Run (after the workflow built the VAE-GANs, the model and the records):
.venv/bin/python benchmarks/latent_box.py --dataset fashion \
    --model results/classifiers/fashion/normal/N4000/seed0/model.pt RECORD.h5 [RECORD.h5 ...]
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import torch

from manifold_robustness.attack_io import load_success_rates
from manifold_robustness.models import load_classifier
from manifold_robustness.onmanifold import clamped_shares
from manifold_robustness.stages import load_decoders, load_tensors
from manifold_robustness.training import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", help="learned-manifold attack records (onmanifold*.h5)")
    parser.add_argument("--dataset", default="fashion")
    parser.add_argument("--model", help="classifier whose accuracy on the reconstructions is measured")
    parser.add_argument("--results", default="results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    if args.model:
        decoders = load_decoders([f"{args.results}/vaegan/{args.dataset}/class{c}.pt" for c in range(10)], device)
        images, labels = load_tensors(f"{args.results}/data/{args.dataset}.h5", "test", device)
        z = decoders.encode_mean(images, labels)
        shares = clamped_shares(z, decoders.bound)
        print(f"all {len(z)} test latents: {shares['clamped_latent_share']:.3f} with a coordinate outside "
              f"[-{decoders.bound:g}, {decoders.bound:g}], {shares['clamped_coordinate_share']:.4f} of coordinates; "
              f"std of the encoder means {float(z.std()):.2f}")
        model = load_classifier(args.model, device)
        with torch.no_grad():
            accuracy = {name: float((predict(model, torch.cat([decoders.decode(v[i:i + 1000], labels[i:i + 1000])
                                                                  for i in range(0, len(v), 1000)])) == labels)
                                    .float().mean())
                        for name, v in (("dec(z)", z), ("dec(clip(z))", z.clamp(-decoders.bound, decoders.bound)))}
        real = float((predict(model, images) == labels).float().mean())
        print(f"{args.model}: accuracy on the test images {real:.3f}, on dec(z) {accuracy['dec(z)']:.3f}, "
              f"on dec(clip(z)) {accuracy['dec(clip(z))']:.3f}")
    for path in args.records:
        rates = load_success_rates(path)
        with h5py.File(path) as h5:
            correct = np.mean(h5["clean_pred"][()] == h5["label"][()])
            width = float(np.mean(h5["latent_high"][()] - h5["latent_low"][()]))
        print(f"{path}: latent box {rates.get('latent_box', '?')}, {rates['n_attacked']} images, "
              f"{rates['clamped_latent_share']:.3f} of latents and {rates['clamped_coordinate_share']:.4f} of "
              f"coordinates outside the prior's box, mean box width {width:.2f}, accuracy on the attack's clean "
              f"points {correct:.3f}, success {rates['success']:.3f}, success_any {rates['success_any']:.3f}")


if __name__ == "__main__":
    main()
