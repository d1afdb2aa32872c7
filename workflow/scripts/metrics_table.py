"""Snakemake adapter: join every classifier's metrics and attack records into metrics.csv."""

from manifold_robustness.stages import log_to, make_table

log_to(snakemake.log[0])
make_table(list(snakemake.input.metrics), list(snakemake.input.pgd), snakemake.output[0])
