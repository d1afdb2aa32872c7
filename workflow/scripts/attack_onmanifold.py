"""Snakemake adapter: on-manifold attack (true or learned manifold) against one classifier."""

from manifold_robustness.stages import attack_onmanifold, log_to

log_to(snakemake.log[0])
attack_onmanifold(snakemake.input.data, snakemake.input.model, snakemake.output[0], snakemake.params.manifold,
                  snakemake.params.onmanifold, list(snakemake.input.vaegans), snakemake.params.device,
                  snakemake.threads)
