"""Snakemake adapter: L_inf PGD against one classifier, per-example record in pgd.h5."""

from manifold_robustness.stages import attack_pgd, log_to

log_to(snakemake.log[0])
attack_pgd(snakemake.input.data, snakemake.input.model, snakemake.output[0], snakemake.params.pgd,
           snakemake.params.device, snakemake.threads)
