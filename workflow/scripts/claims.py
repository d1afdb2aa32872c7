"""Snakemake adapter: judge the paper's claims from the metrics table and the distance files."""

from manifold_robustness.stages import log_to, report_claims

log_to(snakemake.log[0])
report_claims(snakemake.input.table, snakemake.params.distances, snakemake.params.config, snakemake.output.json,
              snakemake.output.md)
