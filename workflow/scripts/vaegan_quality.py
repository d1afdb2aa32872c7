"""Snakemake adapter: per-class VAE-GAN quality (reconstruction error, classified samples) and a sample grid."""

from manifold_robustness.stages import log_to, vaegan_quality

log_to(snakemake.log[0])
vaegan_quality(snakemake.wildcards.dataset, list(snakemake.input.models), list(snakemake.input.records),
               snakemake.input.classifier, snakemake.output.table, snakemake.output.samples,
               snakemake.params.n_samples, snakemake.params.seed, snakemake.params.device)
