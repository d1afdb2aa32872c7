"""Snakemake adapter: distances to the manifold of one dataset's reference model's test and adversarial images."""

from manifold_robustness.stages import compute_distances, log_to

log_to(snakemake.log[0])
compute_distances(snakemake.wildcards.dataset, snakemake.input.data, snakemake.input.pgd, snakemake.input.onmanifold,
                  snakemake.output[0], snakemake.params.distances, snakemake.params.device, snakemake.threads)
