"""Snakemake adapter: join every classifier's metrics and attack records into metrics.csv."""

from manifold_robustness.stages import log_to, make_table

log_to(snakemake.log[0])
attacks = {name: list(snakemake.input[name]) for name in ("pgd", "onmanifold", "onmanifold_learned")}
make_table(list(snakemake.input.metrics), attacks, snakemake.output[0])
