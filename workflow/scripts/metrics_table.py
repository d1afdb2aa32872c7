"""Snakemake adapter: join every classifier's metrics with the attack records a table asks for into one CSV."""

from manifold_robustness.stages import log_to, make_table
from manifold_robustness.tables import ATTACKS

log_to(snakemake.log[0])
attacks = {name: list(snakemake.input[name]) for name in ATTACKS if name in snakemake.input.keys()}
class_kept = list(snakemake.input.class_kept) if "class_kept" in snakemake.input.keys() else None
make_table(list(snakemake.input.metrics), attacks, snakemake.output[0], class_kept)
